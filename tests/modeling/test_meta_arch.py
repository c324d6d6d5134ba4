"""MaskFormer built from the Hydra configs: contract with backbones, inputs, outputs, errors, autocast."""

from __future__ import annotations

import pytest
import torch
from detectron2.data import Metadata
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import BitMasks, Instances
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from mgfusion.modeling import MaskFormer

from .conftest import CONFIG_DIR, TinyBackbone, make_shapes_dataset


def thing_metadata():
    metadata = Metadata()
    metadata.thing_dataset_id_to_contiguous_id = {1: 0, 2: 1}
    return metadata


def build(cfg, backbone, metadata=None, **overrides):
    cfg = OmegaConf.merge(cfg, {"num_classes": 3, **overrides})
    return instantiate(cfg, backbone=backbone, metadata=metadata)


def test_registered_in_detectron2():
    assert META_ARCH_REGISTRY.get("MaskFormer") is MaskFormer


def test_training_returns_weighted_losses_for_every_prediction(tiny_model_cfg, tiny_backbone):
    model = build(tiny_model_cfg, tiny_backbone)
    assert isinstance(model, MaskFormer)
    data = make_shapes_dataset(2, size=64, seed=1)
    data[1]["instances"].gt_masks = BitMasks(data[1]["instances"].gt_masks)  # both mask forms are accepted
    model.train()
    losses = model(data)
    num_preds = tiny_model_cfg.transformer_decoder.num_layers + 1
    assert len(losses) == 3 * num_preds
    assert {"loss_ce", "loss_mask", "loss_dice", f"loss_ce_{num_preds - 2}"} <= set(losses)
    assert all(v.dtype == torch.float32 and v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    stem_grad = model.backbone.stem[0].weight.grad
    assert stem_grad is not None and stem_grad.abs().sum() > 0


def test_semantic_inference_without_metadata_resizes_to_requested_output(tiny_model_cfg, tiny_backbone):
    model = build(tiny_model_cfg, tiny_backbone).eval()
    image = torch.randint(0, 255, (3, 70, 45), dtype=torch.uint8)  # padded to 96 x 64 internally
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 140, "width": 90}])
    assert set(out) == {"sem_seg"}
    assert out["sem_seg"].shape == (3, 140, 90) and out["sem_seg"].dtype == torch.float32
    assert (out["sem_seg"] >= 0).all() and (out["sem_seg"].sum(0) <= tiny_model_cfg.num_queries + 1e-4).all()


def test_all_three_outputs(tiny_model_cfg, tiny_backbone):
    model = build(tiny_model_cfg, tiny_backbone, thing_metadata(), instance_on=True, panoptic_on=True).eval()
    data = make_shapes_dataset(2, size=64, seed=2)
    with torch.no_grad():
        outputs = model([{"image": d["image"], "height": 32, "width": 48} for d in data])
    for out in outputs:
        assert out["sem_seg"].shape == (3, 32, 48)
        instances = out["instances"]
        assert isinstance(instances, Instances) and instances.image_size == (32, 48)
        assert instances.pred_masks.shape[1:] == (32, 48) and instances.pred_masks.dtype == torch.bool
        assert set(instances.pred_classes.tolist()) <= {0, 1}  # panoptic models keep only things
        assert len(instances) <= model.test_topk_per_image
        panoptic, segments = out["panoptic_seg"]
        assert panoptic.shape == (32, 48) and panoptic.dtype == torch.int32
        ids = set(panoptic.unique().tolist()) - {0}
        assert ids <= {s["id"] for s in segments}


def test_normalization_and_padding_follow_the_backbone(tiny_model_cfg, tiny_backbone):
    model = build(tiny_model_cfg, tiny_backbone, size_divisibility=8)
    assert model.size_divisibility == 32  # max(8, backbone's 32)
    torch.testing.assert_close(model.pixel_mean.flatten(), torch.tensor(tiny_backbone.pixel_mean))
    custom = build(tiny_model_cfg, TinyBackbone(), pixel_mean=[0.0, 0.0, 0.0], pixel_std=[255.0, 255.0, 255.0])
    batch = custom.preprocess_image([{"image": torch.full((3, 40, 33), 255, dtype=torch.uint8)}])
    assert batch.tensor.shape == (1, 3, 64, 64)
    assert batch.tensor[0, :, :40, :33].eq(1).all() and batch.tensor[0, :, 40:].eq(0).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("precision", ["fp32", "autocast"])
def test_autocast_training_and_inference(tiny_model_cfg, tiny_backbone, device, dtype, precision):
    model = build(tiny_model_cfg, tiny_backbone, pixel_decoder={"precision": precision}).to(device)
    assert model.pixel_decoder.precision == precision
    data = make_shapes_dataset(2, size=64, seed=3)
    with torch.autocast(device.type, dtype=dtype):
        losses = model.train()(data)
        assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        with torch.no_grad():
            (out,) = model.eval()(data[:1])
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert out["sem_seg"].device.type == device.type
    assert out["sem_seg"].dtype == torch.float32 and torch.isfinite(out["sem_seg"]).all()


def test_construction_errors_name_the_problem(tiny_model_cfg, tiny_backbone):
    with pytest.raises(MissingMandatoryValue):
        instantiate(tiny_model_cfg, backbone=tiny_backbone, metadata=None)
    with pytest.raises(ValueError, match="thing_dataset_id_to_contiguous_id"):
        MaskFormer(backbone=tiny_backbone, num_classes=3, instance_on=True)
    bad_ids = Metadata()
    bad_ids.thing_dataset_id_to_contiguous_id = {1: 0, 7: 5}
    with pytest.raises(ValueError, match=r"\[5\] are outside"):
        MaskFormer(backbone=tiny_backbone, num_classes=3, panoptic_on=True, metadata=bad_ids)

    class NoRes2(TinyBackbone):
        def output_shape(self):
            shapes = super().output_shape()
            shapes.pop("res2")
            shapes["res5"] = ShapeSpec(channels=48, stride=64)
            return shapes

    with pytest.raises(ValueError, match=r"missing: \['res2', 'res5'\]"):
        MaskFormer(backbone=NoRes2(), num_classes=3)
    with pytest.raises(ValueError, match="at least one"):
        MaskFormer(backbone=tiny_backbone, num_classes=3, semantic_on=False)
    model = build(tiny_model_cfg, tiny_backbone).train()
    with pytest.raises(ValueError, match="instances"):
        model([{"image": torch.zeros(3, 32, 32, dtype=torch.uint8)}])
    wrong_size = Instances((64, 64), gt_classes=torch.zeros(1, dtype=torch.int64))
    wrong_size.gt_masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"image size \(64, 64\), got \(1, 32, 32\)"):
        model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8), "instances": wrong_size}])
    with pytest.raises(ValueError, match="RGB"):
        model.eval()([{"image": torch.zeros(32, 32, dtype=torch.uint8)}])


def test_paper_defaults_in_the_full_config():
    cfg = OmegaConf.load(CONFIG_DIR / "model" / "mask2former.yaml")
    assert cfg.num_queries == 100 and cfg.object_mask_threshold == 0.8 and cfg.overlap_threshold == 0.8
    assert cfg.size_divisibility == 32 and cfg.test_topk_per_image == 100
    pd, td, cr = cfg.pixel_decoder, cfg.transformer_decoder, cfg.criterion
    assert (pd.num_layers, pd.num_heads, pd.num_points, pd.conv_dim, pd.mask_dim, pd.norm) == (6, 8, 4, 256, 256, "GN")
    assert list(pd.transformer_in_features) == ["res3", "res4", "res5"] and pd.common_stride == 4
    assert (pd.precision, pd.pos_embed_eps) == ("fp32", 1e-6), "the original Mask2Former's pixel decoder numerics"
    assert (td.num_layers, td.hidden_dim, td.num_heads, td.dim_feedforward, td.pre_norm, td.dropout) == (
        9, 256, 8, 2048, False, 0.0,
    )
    assert (cr.class_weight, cr.mask_weight, cr.dice_weight, cr.no_object_weight) == (2.0, 5.0, 5.0, 0.1)
    assert (cr.num_points, cr.oversample_ratio, cr.importance_sample_ratio) == (12544, 3.0, 0.75)
    assert cr.matcher.num_points == 12544 and cr.matcher.class_weight == 2.0


def test_full_config_builds_the_paper_architecture(tiny_backbone):
    cfg = OmegaConf.load(CONFIG_DIR / "model" / "mask2former.yaml")
    model = build(cfg, tiny_backbone, num_queries=200)
    assert len(model.pixel_decoder.encoder) == 6 and len(model.transformer_decoder.layers) == 9
    assert model.transformer_decoder.query_feat.num_embeddings == 200
    assert model.criterion.num_points == 12544 and model.criterion.matcher.num_points == 12544
    assert torch.allclose(model.criterion.class_weights, torch.tensor([1.0, 1.0, 1.0, 0.1]))
