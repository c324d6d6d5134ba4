"""Model construction from the composed config: ``cfg.backbone`` → encoder → detectron2 backbone → ``cfg.model``,
and the check that no foundation encoder is randomly initialised without being asked (:func:`random_init_encoders`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import Backbone
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from mgfusion.backbones.registry import RANDOM_INIT, check_encoder_weights
from mgfusion.modeling.backbone import EncoderBackbone

__all__ = ["build_backbone", "build_model", "describe_parameters", "random_init_encoders"]

_ENCODER_TARGETS = ("mgfusion.backbones.build_encoder", "mgfusion.backbones.registry.build_encoder")
_ADAPTER_TARGETS = ("mgfusion.modeling.EncoderBackbone", "mgfusion.modeling.backbone.EncoderBackbone")
_FUSION_ROLES = ("master", "auxiliary")

logger = logging.getLogger(__name__)


def build_backbone(backbone_cfg: DictConfig) -> Backbone:
    """Instantiate ``cfg.backbone``: an mgfusion encoder (wrapped in :class:`EncoderBackbone`) or a detectron2
    ``Backbone`` (used as is)."""
    obj = instantiate(backbone_cfg, _convert_="all")
    if isinstance(obj, Backbone):
        return obj
    if not isinstance(obj, nn.Module) or not hasattr(obj, "out_strides"):
        raise TypeError(f"cfg.backbone must instantiate an mgfusion encoder (nn.Module with out_strides, "
                        f"out_channels, pixel_mean, pixel_std) or a detectron2 Backbone, got {type(obj).__name__}")
    return EncoderBackbone(encoder=obj)


def build_model(cfg: DictConfig, device: torch.device) -> nn.Module:
    """``instantiate(cfg.model, backbone=<backbone>, metadata=<first test set's metadata>)`` on ``device``.

    The model must follow detectron2's conventions: ``model(list[dict])`` → dict of scalar losses in train mode,
    list of per-image output dicts in eval mode; the module named ``backbone`` gets the backbone LR multiplier.
    """
    backbone = build_backbone(cfg.backbone)
    names = list(cfg.dataset.get("test") or []) or list(cfg.dataset.get("train") or [])
    metadata = MetadataCatalog.get(names[0]) if names else None
    model = instantiate(cfg.model, backbone=backbone, metadata=metadata, _convert_="all")
    if not isinstance(model, nn.Module):
        raise TypeError(f"cfg.model must instantiate an nn.Module, got {type(model).__name__}")
    if not isinstance(getattr(model, "backbone", None), nn.Module):
        logger.warning("%s has no `backbone` submodule: the backbone LR multiplier applies to nothing",
                       type(model).__name__)
    return model.to(device)


def random_init_encoders(backbone_cfg: Mapping[str, Any], *, check: bool = True, key: str = "backbone") -> list[str]:
    """The registered encoders of ``cfg.backbone`` that start from random initialisation, e.g.
    ``["backbone.master (dinov3_vitb16)"]``.

    Encoders are found as ``build_encoder`` nodes (``name`` + ``weights``), ``EncoderBackbone`` nodes
    (``encoder`` name + ``weights``) and fusion ``master``/``auxiliary`` given as a bare name (no weights).
    With ``check``, a foundation encoder (registered with ``requires_weights``) whose ``weights`` is null raises
    :class:`~mgfusion.backbones.registry.MissingWeightsError` naming the key and the ways to set it;
    ``weights: random`` is the explicit opt-in.
    """
    found: list[str] = []

    def encoder(name: str, weights: Any, where: str) -> None:
        random = not weights or weights == RANDOM_INIT
        if check and random:
            check_encoder_weights(name, weights, key=f"{where}.weights")
        if random:
            found.append(f"{where} ({name})")

    def visit(node: Any, where: str) -> None:
        if not isinstance(node, Mapping):
            return
        target = node.get("_target_")
        if target in _ENCODER_TARGETS and isinstance(node.get("name"), str):
            encoder(node["name"], node.get("weights"), where)
        elif target in _ADAPTER_TARGETS and isinstance(node.get("encoder"), str):
            encoder(node["encoder"], node.get("weights"), where)
        for role in _FUSION_ROLES:
            if isinstance(node.get(role), str):
                encoder(node[role], None, f"{where}.{role}")
        for k, v in node.items():
            visit(v, f"{where}.{k}")

    visit(backbone_cfg, key)
    return found


def describe_parameters(model: nn.Module, backbone_name: str = "backbone") -> str:
    """One line with the total / trainable / trainable-backbone / frozen parameter counts."""
    total = trainable = backbone = 0
    for name, p in model.named_parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
            backbone += p.numel() if name.startswith(backbone_name + ".") else 0
    return (f"{type(model).__name__}: {_count(total)} parameters, {_count(trainable)} trainable "
            f"({_count(backbone)} in `{backbone_name}`, {_count(total - trainable)} frozen)")


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 10**5 else f"{n / 1e3:.1f}k"
