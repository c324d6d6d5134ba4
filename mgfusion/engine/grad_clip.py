"""Gradient clipping applied by the trainer between backward (after unscaling) and the optimizer step.

Clip types (``solver.clip_gradients.type``), a :class:`~mgfusion.utils.registry.Registry` so new ones are one
decorated function (``@register_clipper("name")``):

* ``full_model`` (the paper; docs/training.md): one L2 norm over *all* trainable gradients, clipped to ``value`` —
  Mask2Former's ``full_model`` mode, which detectron2 itself only offers as a per-parameter clip.
* ``norm``: each parameter's gradient norm clipped to ``value`` separately (detectron2's ``norm`` mode).
* ``value``: every gradient element clamped to ``[-value, value]`` (detectron2's ``value`` mode).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from mgfusion.utils.registry import Registry, RegistryError

__all__ = ["CLIPPERS", "GradientClipper", "build_gradient_clipper", "register_clipper"]

#: ``(params, value, norm_type) -> total gradient norm before clipping (0-dim tensor) or None``
ClipFn = Callable[[Sequence[nn.Parameter], float, float], "torch.Tensor | None"]
CLIPPERS: Registry[ClipFn] = Registry("gradient clipper")


def register_clipper(name: str) -> Callable[[ClipFn], ClipFn]:
    """Register a clip function under ``name`` (usable as ``solver.clip_gradients.type``); a taken name raises
    :class:`~mgfusion.utils.registry.RegistryError`."""
    return CLIPPERS.register(name)


@register_clipper("full_model")
def _clip_full_model(params: Sequence[nn.Parameter], value: float, norm_type: float) -> torch.Tensor:
    return nn.utils.clip_grad_norm_(params, max_norm=value, norm_type=norm_type)


@register_clipper("norm")
def _clip_per_parameter_norm(params: Sequence[nn.Parameter], value: float, norm_type: float) -> None:
    for p in params:
        if p.grad is not None:
            nn.utils.clip_grad_norm_(p, max_norm=value, norm_type=norm_type)


@register_clipper("value")
def _clip_value(params: Sequence[nn.Parameter], value: float, norm_type: float) -> None:
    nn.utils.clip_grad_value_(params, clip_value=value)


class GradientClipper:
    """Clips the gradients of a fixed parameter list.

    Args:
        params: the trainable parameters (those with ``requires_grad``).
        clip_type: a name in :data:`CLIPPERS` (unknown names raise ``RegistryError`` listing the valid ones).
        value: max norm (``full_model``/``norm``) or max absolute value (``value``).
        norm_type: p of the p-norm (2.0 = L2).

    Calling it returns the total gradient norm before clipping (0-dim tensor, no host sync) for ``full_model``,
    else None.
    """

    def __init__(self, params: Iterable[nn.Parameter], *, clip_type: str, value: float, norm_type: float = 2.0):
        if clip_type not in CLIPPERS:
            raise RegistryError(f"solver.clip_gradients.type: {CLIPPERS.unknown_message(clip_type)}")
        if not value > 0:
            raise ValueError(f"solver.clip_gradients.value must be > 0, got {value}")
        self.params = [p for p in params if p.requires_grad]
        self.clip_type = clip_type
        self.value = float(value)
        self.norm_type = float(norm_type)
        self._fn = CLIPPERS.get(clip_type)

    def __call__(self) -> torch.Tensor | None:
        return self._fn(self.params, self.value, self.norm_type)

    def __repr__(self) -> str:
        return f"GradientClipper(type={self.clip_type}, value={self.value}, norm_type={self.norm_type})"


def build_gradient_clipper(
    params: Iterable[nn.Parameter], *, enabled: bool, type: str = "full_model", value: float = 0.01,
    norm_type: float = 2.0,
) -> GradientClipper | None:
    """The clipper of ``solver.clip_gradients`` (None when disabled)."""
    if not enabled:
        return None
    return GradientClipper(params, clip_type=type, value=value, norm_type=norm_type)
