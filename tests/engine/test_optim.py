"""Optimizer parameter groups: weight decay rules, backbone LR multiplier, frozen parameters excluded
(docs/training.md)."""

from __future__ import annotations

import pytest
import torch
from detectron2.layers.batch_norm import LayerNorm as D2LayerNorm
from hydra.utils import instantiate
from omegaconf import OmegaConf
from timm.layers import LayerNorm2d, RmsNorm
from torch import nn

from mgfusion.engine import build_optimizer, build_param_groups, is_norm_module
from mgfusion.modeling.backbone import EncoderBackbone

from tests.engine.helpers import CONFIGS, compose_train


class ToyModel(nn.Module):
    """A backbone (conv + norms, one frozen layer) and a head (linear, embedding, layer norm, tied weight)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.ModuleDict({
            "conv": nn.Conv2d(3, 4, 3), "bn": nn.BatchNorm2d(4), "ln2d": LayerNorm2d(4), "rms": RmsNorm(4),
            "frozen": nn.Linear(4, 4),
        })  # fmt: skip
        self.backbone["frozen"].requires_grad_(False)
        self.query_embed = nn.Embedding(5, 4)
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.d2norm = D2LayerNorm(4)
        self.gn = nn.GroupNorm(2, 4)
        self.tied = nn.Linear(4, 4, bias=False)
        self.tied.weight = self.proj.weight  # shared tensor: must appear once


def _hyper(groups: list[dict]) -> dict[int, tuple[float, float]]:
    out = {}
    for g in groups:
        for p in g["params"]:
            assert id(p) not in out, "a tensor appears in two groups"
            out[id(p)] = (g["lr"], g["weight_decay"])
    return out


def test_param_groups_follow_weight_decay_and_backbone_rules():
    model = ToyModel()
    groups = build_param_groups(model, base_lr=1e-4, weight_decay=0.05, weight_decay_norm=0.0,
                                weight_decay_embed=0.0, backbone_multiplier=0.1)
    hyper = _hyper(groups)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(hyper) == trainable  # every trainable tensor once, frozen ones never
    bb = model.backbone
    assert hyper[id(bb["conv"].weight)] == pytest.approx((1e-5, 0.05))
    for norm in ("bn", "ln2d", "rms"):
        assert hyper[id(bb[norm].weight)] == pytest.approx((1e-5, 0.0)), norm
    assert hyper[id(model.query_embed.weight)] == pytest.approx((1e-4, 0.0))
    assert hyper[id(model.proj.weight)] == pytest.approx((1e-4, 0.05))
    assert hyper[id(model.proj.bias)] == pytest.approx((1e-4, 0.05))
    for norm in (model.norm, model.d2norm, model.gn):
        assert hyper[id(norm.weight)] == pytest.approx((1e-4, 0.0))
        assert hyper[id(norm.bias)] == pytest.approx((1e-4, 0.0))
    assert len(groups) == 4  # merged by (lr, weight decay)


def test_no_weight_decay_keys_and_norm_detection():
    model = ToyModel()
    groups = build_param_groups(model, base_lr=1.0, weight_decay=0.05, no_weight_decay_keys=["proj."])
    hyper = _hyper(groups)
    assert hyper[id(model.proj.weight)] == (1.0, 0.0) and hyper[id(model.proj.bias)] == (1.0, 0.0)
    assert hyper[id(model.backbone["conv"].weight)] == (1.0, 0.05)  # multiplier defaults to 1
    assert is_norm_module(RmsNorm(4)) and is_norm_module(D2LayerNorm(4)) and is_norm_module(nn.SyncBatchNorm(4))
    assert not is_norm_module(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)))  # a container is not a norm


def test_param_group_errors_name_the_problem():
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_param_groups(frozen, base_lr=1e-4, weight_decay=0.05)
    with pytest.raises(ValueError, match="base_lr must be > 0"):
        build_param_groups(nn.Linear(2, 2), base_lr=0.0, weight_decay=0.05)


def test_paper_solver_node_on_the_fusion_backbone_excludes_the_frozen_auxiliary():
    solver = OmegaConf.load(CONFIGS / "solver" / "adamw_poly.yaml")
    encoder = instantiate(compose_train("backbone=fusion_micro_d3s2").backbone, _convert_="all")
    model = nn.Module()
    model.backbone = EncoderBackbone(encoder=encoder)
    model.predictor = nn.Linear(8, 8)
    opt = build_optimizer(model, optimizer=instantiate(solver.optimizer, _convert_="all"), base_lr=solver.base_lr,
                          param_groups=OmegaConf.to_container(solver.param_groups))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.999)
    hyper = _hyper(opt.param_groups)
    aux = list(encoder.auxiliary.parameters())
    assert aux and not any(id(p) in hyper for p in aux)  # frozen SAM2 auxiliary: not optimized
    master = [p for p in encoder.master.parameters() if p.requires_grad]
    assert master and all(hyper[id(p)][0] == pytest.approx(1e-5) for p in master)
    assert hyper[id(model.predictor.weight)] == pytest.approx((1e-4, 0.05))
    n_optimized = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_optimized == encoder.num_parameters(trainable_only=True) + 8 * 8 + 8
