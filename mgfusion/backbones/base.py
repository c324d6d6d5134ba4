"""The encoder interface every mgfusion backbone implements.

An :class:`Encoder` maps a normalized RGB batch ``(B, 3, H, W)`` (normalized with its own ``pixel_mean`` /
``pixel_std``, given in 0-255 units) to a dict ``{stride: (B, C_stride, ceil(H/stride), ceil(W/stride))}`` for its
``out_strides`` (4, 8, 16, 32). Any ``H, W`` is accepted: inputs that break the trunk's size rule are zero-padded
inside the encoder (zero = the mean colour after normalization) to a multiple of ``size_divisibility`` and the outputs
are cropped back.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: ImageNet mean / std in 0-255 RGB units, used by every encoder family mgfusion ships.
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)

DEFAULT_STRIDES = (4, 8, 16, 32)


@dataclass(frozen=True)
class LevelSpec:
    """Channels and stride (input pixels per feature pixel) of one pyramid level."""

    channels: int
    stride: int


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad ``x`` (..., H, W) at the bottom/right so that H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph))


def output_hw(h: int, w: int, stride: int) -> tuple[int, int]:
    """Feature-map size for an ``h x w`` input at ``stride``: ``(ceil(h/stride), ceil(w/stride))``."""
    return math.ceil(h / stride), math.ceil(w / stride)


class Encoder(nn.Module, metaclass=abc.ABCMeta):
    """Base class of all encoders (see module docstring for the contract).

    Subclasses set ``out_strides``, ``out_channels`` ({stride: channels}), ``pixel_mean``, ``pixel_std``,
    ``size_divisibility`` and implement :meth:`forward_padded`, which receives the input padded to a multiple of
    ``size_divisibility`` and returns maps covering the padded input (at least ``ceil(Hp/s)`` per side).
    """

    out_strides: tuple[int, ...] = DEFAULT_STRIDES
    out_channels: dict[int, int]
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN_255
    pixel_std: tuple[float, float, float] = IMAGENET_STD_255
    size_divisibility: int = 32

    def __init__(self) -> None:
        super().__init__()
        self._frozen = False
        self._frozen_no_grad = False

    # ---- forward ---------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def forward_padded(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Features of an input whose H, W are multiples of ``size_divisibility`` (subclasses implement this)."""

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Args: x: (B, 3, H, W) normalized images, any H, W >= 1.

        Returns: {stride: (B, out_channels[stride], ceil(H/stride), ceil(W/stride))} for every stride in out_strides.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} expects a (B, 3, H, W) image batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        with self._grad_context():
            feats = self.forward_padded(pad_to_multiple(x, self.size_divisibility))
            out = {}
            for s in self.out_strides:
                oh, ow = output_hw(h, w, s)
                f = feats[s]
                if f.shape[-2] < oh or f.shape[-1] < ow:
                    raise RuntimeError(
                        f"{type(self).__name__} produced a stride-{s} map of size {tuple(f.shape[-2:])} for a "
                        f"{h}x{w} input; expected at least {(oh, ow)}"
                    )
                out[s] = f[..., :oh, :ow]
        return out

    # ---- shapes ----------------------------------------------------------------------------------------------
    def output_shape(self) -> dict[int, LevelSpec]:
        """{stride: LevelSpec(channels, stride)} of the output pyramid."""
        return {s: LevelSpec(self.out_channels[s], s) for s in self.out_strides}

    def level_only_parameters(self, stride: int) -> list[nn.Parameter]:
        """Parameters that feed only the output level ``stride`` (e.g. a ViT neck's per-level projection).

        A fusion that discards this level freezes them, since they would never receive a gradient.
        """
        return []

    # ---- freezing --------------------------------------------------------------------------------------------
    @property
    def frozen(self) -> bool:
        """True after :meth:`freeze`."""
        return self._frozen

    def freeze(self, no_grad: bool = True) -> Encoder:
        """Freeze: parameters get ``requires_grad=False``; the module stays in eval mode under ``.train()``.

        An encoder with tuning settings (:mod:`mgfusion.backbones.tuning`) records ``tuning=frozen``; one built
        with ``last_n`` or ``lora`` refuses to be frozen.

        Args:
            no_grad: also run :meth:`forward` under ``torch.no_grad()`` so no autograd graph is built (default).
                Pass False to keep gradients w.r.t. the *input* flowing through the frozen encoder.
        """
        tuning = getattr(self, "tuning", None)
        if tuning is not None and tuning.mode in ("last_n", "lora"):
            raise ValueError(f"{type(self).__name__} was built with tuning={tuning.describe()}; freezing it would "
                             "contradict that (use tuning=frozen; a fusion's auxiliary is always frozen)")
        for p in self.parameters():
            p.requires_grad_(False)
        if tuning is not None and tuning.mode != "frozen":
            self.tuning = dataclasses.replace(tuning, mode="frozen")
        self._frozen = True
        self._frozen_no_grad = no_grad
        return self.train(False)

    def train(self, mode: bool = True) -> Encoder:
        return super().train(False if self._frozen else mode)

    def _grad_context(self) -> contextlib.AbstractContextManager:
        return torch.no_grad() if self._frozen and self._frozen_no_grad else contextlib.nullcontext()

    # ---- misc ------------------------------------------------------------------------------------------------
    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (optionally only those with ``requires_grad``)."""
        params: Iterator[nn.Parameter] = self.parameters()
        return sum(p.numel() for p in params if p.requires_grad or not trainable_only)

    def extra_repr(self) -> str:
        chans = ", ".join(f"{s}:{self.out_channels[s]}" for s in self.out_strides)
        return f"out_channels={{{chans}}}, size_divisibility={self.size_divisibility}, frozen={self._frozen}"
