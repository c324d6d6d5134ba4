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


def test_full_config_builds_the_paper_architecture(tiny_backbone):
    """configs/model/mask2former.yaml reaches every module with Mask2Former's settings (docs/training.md): checked on
    the built model (module sizes and the attributes the forward pass reads), so a key that is misspelt, not passed
    on or shadowed by a constructor default fails here."""
    cfg = OmegaConf.load(CONFIG_DIR / "model" / "mask2former.yaml")
    model = build(cfg, tiny_backbone)
    assert model.num_queries == 100 and model.transformer_decoder.query_feat.num_embeddings == 100  # no dataset
    assert (model.object_mask_threshold, model.overlap_threshold, model.test_topk_per_image) == (0.8, 0.8, 100)
    assert model.size_divisibility == 32 and (model.semantic_on, model.instance_on, model.panoptic_on) == (
        True, False, False)
    pd = model.pixel_decoder
    assert len(pd.encoder) == 6 and (pd.conv_dim, pd.mask_dim, pd.common_stride) == (256, 256, 4)
    attn = pd.encoder[0].attn
    assert (attn.embed_dim, attn.num_heads, attn.num_levels, attn.num_points, attn.impl) == (
        256, 8, 3, 4, "embedding_bag")
    assert attn.sampling_proj.out_features == 8 * 3 * 4 * 3  # 2 offsets + 1 weight per head, level and point
    assert pd.encoder[0].ffn[0].out_features == 1024
    assert isinstance(pd.lateral_convs[0].norm, torch.nn.GroupNorm) and pd.lateral_convs[0].norm.num_groups == 32
    assert pd.mask_features.out_channels == 256 and pd.transformer_in_features == ["res5", "res4", "res3"]
    assert (pd.precision, pd.pos_embed_eps) == ("fp32", 1e-6), "the original Mask2Former's pixel decoder numerics"
    td = model.transformer_decoder
    assert len(td.layers) == 9 and td.hidden_dim == 256 and td.layers[0].cross_attn.attn.num_heads == 8
    assert td.layers[0].ffn.ffn[0].out_features == 2048 and not td.layers[0].ffn.pre_norm
    assert td.layers[0].cross_attn.attn.dropout == 0.0
    assert td.head.class_embed.out_features == 3 + 1
    cr = model.criterion
    assert cr.weight_dict == {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0} and cr.deep_supervision
    assert torch.allclose(cr.class_weights, torch.tensor([1.0, 1.0, 1.0, 0.1]))  # no-object weight 0.1
    assert (cr.num_points, cr.oversample_ratio, cr.importance_sample_ratio) == (12544, 3.0, 0.75)
    matcher = cr.matcher
    assert (matcher.class_weight, matcher.mask_weight, matcher.dice_weight, matcher.num_points) == (2.0, 5.0, 5.0, 12544)
    # what the dataset decides overrides the fallbacks
    assert build(cfg, tiny_backbone, num_queries=200).transformer_decoder.query_feat.num_embeddings == 200
