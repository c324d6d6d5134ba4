"""detectron2's own entry point: ``build_model(cfg)`` on a yacs config builds the registered ``MaskFormer`` with an
mgfusion encoder backbone, with the same architecture as the Hydra config, and it trains and predicts."""

from __future__ import annotations

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Instances
from hydra.utils import instantiate

from mgfusion.engine import MissingWeightsError
from mgfusion.engine.build import build_backbone
from mgfusion.modeling import MaskFormer, add_mgfusion_config
from mgfusion.modeling.meta_arch import add_maskformer_config
from tests.engine.helpers import compose_train


def _yacs(encoder: str = "sam2_hiera_micro", auxiliary: str = "", **head):
    cfg = add_maskformer_config(add_mgfusion_config(get_cfg()))
    cfg.MODEL.META_ARCHITECTURE = "MaskFormer"
    cfg.MODEL.BACKBONE.NAME = "EncoderBackbone"
    cfg.MODEL.MGFUSION.ENCODER = encoder
    cfg.MODEL.MGFUSION.AUXILIARY = auxiliary
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    cfg.MODEL.DEVICE = "cpu"
    for key, value in head.items():
        node, name = key.split("__")
        cfg.MODEL[node.upper()][name.upper()] = value
    return cfg


def _structure(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("encoder, auxiliary, hydra_backbone", [
    ("sam2_hiera_micro", "", "sam2_hiera_micro"),
    ("dinov3_micro16", "sam2_hiera_micro", "fusion_micro_d3s2"),  # the fusion backbone (stride 16, replace)
])
def test_defaults_build_the_same_architecture_as_the_hydra_config(encoder, auxiliary, hydra_backbone):
    yacs_model = build_model(_yacs(encoder, auxiliary))
    node = compose_train(f"backbone={hydra_backbone}", "model=mask2former", "dataset=tiny_shapes",
                         "dataset.register.root=unused", "dataset.num_queries=100")
    hydra_model = instantiate(node.model, backbone=build_backbone(node.backbone), metadata=None)
    assert isinstance(yacs_model, MaskFormer) and _structure(yacs_model) == _structure(hydra_model)
    trainable = {k for k, p in yacs_model.named_parameters() if p.requires_grad}
    assert trainable == {k for k, p in hydra_model.named_parameters() if p.requires_grad}  # frozen auxiliary too
    assert (yacs_model.num_queries, len(yacs_model.transformer_decoder.layers), yacs_model.size_divisibility) == (
        100, 9, 32)
    assert yacs_model.criterion.num_points == 12544 and yacs_model.criterion.matcher.num_points == 12544
    assert yacs_model.pixel_mean.flatten().tolist() == pytest.approx(list(yacs_model.backbone.pixel_mean))


def test_built_from_yacs_it_trains_and_predicts():
    cfg = _yacs(mask_former__hidden_dim=64, mask_former__dim_feedforward=128, mask_former__dec_layers=3,
                mask_former__num_object_queries=8, mask_former__train_num_points=256, sem_seg_head__convs_dim=64,
                sem_seg_head__mask_dim=64, sem_seg_head__transformer_enc_layers=1)
    model = build_model(cfg)
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 8:30, 8:30], masks[1, 36:60, 30:62] = True, True
    image = torch.full((3, 64, 64), 40, dtype=torch.uint8)
    image[:, masks[0]], image[:, masks[1]] = 220, 130
    instances = Instances((64, 64), gt_classes=torch.tensor([0, 2]), gt_masks=masks)
    losses = model.train()([{"image": image, "instances": instances}])
    assert {"loss_ce", "loss_mask", "loss_dice"} <= set(losses) and len(losses) == 3 * 3  # deep supervision
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for part in (model.backbone, model.pixel_decoder, model.transformer_decoder):  # the loss reaches every part
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    with torch.no_grad():
        [out] = model.eval()([{"image": image, "height": 32, "width": 48}])
    assert out["sem_seg"].shape == (3, 32, 48) and torch.isfinite(out["sem_seg"]).all()


def test_yacs_route_errors_name_the_fix():
    cfg = add_mgfusion_config(get_cfg())
    cfg.MODEL.META_ARCHITECTURE = "MaskFormer"
    cfg.MODEL.BACKBONE.NAME = "EncoderBackbone"
    cfg.MODEL.MGFUSION.ENCODER = "sam2_hiera_micro"
    with pytest.raises(KeyError, match=r"call mgfusion.modeling.add_maskformer_config\(cfg\)"):
        build_model(cfg)
    with pytest.raises(MissingWeightsError, match="MODEL.MGFUSION.WEIGHTS is not set, so the foundation encoder "
                                                  "'dinov3_vitb16' would be trained from random initialisation.*"
                                                  "MODEL.MGFUSION.WEIGHTS=random"):
        build_model(_yacs("dinov3_vitb16"))
    with pytest.raises(MissingWeightsError, match="MODEL.MGFUSION.AUXILIARY_WEIGHTS is not set.*'sam2_hiera_bplus'"):
        build_model(_yacs("dinov3_micro16", "sam2_hiera_bplus"))
