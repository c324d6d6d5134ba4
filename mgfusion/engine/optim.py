"""Optimizer construction: per-parameter weight decay and the backbone learning-rate multiplier (docs/training.md).

Rules, applied to every *trainable* tensor (``requires_grad``; frozen encoders contribute nothing):

* weight decay ``weight_decay`` (0.05), except parameters owned by normalization modules (``weight_decay_norm``,
  0) and by ``nn.Embedding`` (``weight_decay_embed``, 0), and names containing a ``no_weight_decay_keys`` entry;
* learning rate ``base_lr x backbone_multiplier`` (0.1) for parameters under the model's ``backbone`` module,
  ``base_lr`` elsewhere;
* layer-wise decay (``layer_decay`` < 1, off by default): a trainable parameter of a tuned encoder (e.g. the fusion's
  master) in layer ``l`` of ``depth`` blocks gets an extra factor ``layer_decay ** (depth + 1 - l)`` — block ``i``
  ``layer_decay ** (depth - i)``, the patch embedding ``layer_decay ** (depth + 1)``, the final norm and the neck 1
  (layer ids: :func:`mgfusion.backbones.tuning.layer_ids`; see docs/tuning.md).

Only trainable tensors enter the groups, so the encoders' tuning modes (:mod:`mgfusion.backbones.tuning`) decide
what the optimizer sees: LoRA matrices, the last N blocks, or nothing of a frozen encoder.

Tensors with equal hyper-parameters are merged into one group (detectron2's ``reduce_param_groups``), which is
equivalent to the reference's one-group-per-tensor AdamW and faster with multi-tensor kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from detectron2.solver.build import reduce_param_groups
from torch import nn

from mgfusion.backbones.tuning import layer_decay_scales

__all__ = ["NORM_MODULE_TYPES", "build_optimizer", "build_param_groups", "is_norm_module"]

#: torch normalization layers (other libraries' norms are recognised by class name, see :func:`is_norm_module`).
NORM_MODULE_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)  # fmt: skip


def is_norm_module(module: nn.Module) -> bool:
    """True for torch norm layers and for leaf modules whose class name contains ``Norm`` (timm ``RmsNorm``,
    ``LayerNorm2d``, ``EvoNorm2dB0``, detectron2's ``LayerNorm``, ...); containers such as timm's ``ConvNormAct`` are
    not norms themselves (their norm child is)."""
    if isinstance(module, NORM_MODULE_TYPES):
        return True
    return "Norm" in type(module).__name__ and next(module.children(), None) is None


def build_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float = 0.0,
    weight_decay_embed: float = 0.0,
    backbone_multiplier: float = 1.0,
    backbone_name: str = "backbone",
    no_weight_decay_keys: Sequence[str] = (),
    layer_decay: float = 1.0,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups of ``model``'s trainable tensors (see the module docstring for the rules).

    Returns:
        ``[{"params": [...], "lr": float, "weight_decay": float}, ...]`` covering each trainable tensor once.
    """
    if not base_lr > 0:
        raise ValueError(f"solver.base_lr must be > 0, got {base_lr}")
    prefix = backbone_name + "."
    scales = layer_decay_scales(model, layer_decay) if layer_decay != 1.0 else {}
    seen: set[int] = set()
    groups: list[dict[str, Any]] = []
    for module_name, module in model.named_modules():
        if is_norm_module(module):
            decay = weight_decay_norm
        elif isinstance(module, nn.Embedding):
            decay = weight_decay_embed
        else:
            decay = weight_decay
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            in_backbone = full_name.startswith(prefix)
            groups.append({
                "params": [param],
                "lr": base_lr * (backbone_multiplier if in_backbone else 1.0) * scales.get(id(param), 1.0),
                "weight_decay": 0.0 if any(k in full_name for k in no_weight_decay_keys) else decay,
            })  # fmt: skip
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters (all requires_grad=False)")
    return reduce_param_groups(groups)


def build_optimizer(
    model: nn.Module,
    *,
    optimizer: Callable[..., torch.optim.Optimizer],
    base_lr: float,
    param_groups: dict[str, Any],
) -> torch.optim.Optimizer:
    """Build the optimizer of ``solver`` config for ``model``.

    Args:
        model: the (unwrapped) model; parameters under ``model.backbone`` get the backbone multiplier.
        optimizer: a factory called as ``optimizer(groups, lr=base_lr)`` — e.g. the config's
            ``{_target_: torch.optim.AdamW, _partial_: true, betas: [0.9, 0.999], eps: 1e-8}``.
        base_lr: base learning rate.
        param_groups: keyword arguments of :func:`build_param_groups` (weight decays, multiplier, keys).
    """
    groups = build_param_groups(model, base_lr=base_lr, **param_groups)
    return optimizer(groups, lr=base_lr)
