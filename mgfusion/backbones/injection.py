"""Injection operators: how an auxiliary feature map enters the master's pyramid at one stride.

Every operator is an ``nn.Module`` built as ``Op(master_channels, aux_channels)`` whose
``forward(master: (B, Cm, H, W), aux: (B, Ca, h, w)) -> (B, Cm, H, W)`` keeps the master's channels and grid, so the
fused pyramid has the master's shape.

* ``replace`` — the paper's eq. 9 exactly as docs/fusion.md (eq. 9) states: parameter-free; cast to the master's dtype, bilinear resize
  (align_corners=False) to the master's grid, channel matching (even subsampling ``floor(i*Ca/Cm)`` when
  ``Ca >= Cm``; otherwise append ``Cm - Ca`` copies of the per-pixel channel mean). The master map is discarded.
* ``add`` (extension) — ``master + gamma * GN(conv1x1(aux))`` with a zero-initialised per-channel ``gamma``.
* ``gated`` (extension) — ``master + sigmoid(conv1x1([master, p])) * p`` with ``p = GN(conv1x1(aux))`` and the GN
  scale zero-initialised.
* ``concat`` (extension) — ``conv1x1([master, aux])``, initialised to pass the master through unchanged.

The learnable extensions are identity maps at initialisation, so training starts from the master-only model.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mgfusion.utils.registry import Registry

#: injection operators by name (``replace``, ``add``, ``gated``, ``concat``, and users' own)
INJECTIONS: Registry[type["InjectionOperator"]] = Registry("injection operator")


def register_injection(name: str) -> Callable[[type], type]:
    """Class decorator registering an injection operator under ``name`` (a taken name is a RegistryError)."""

    def deco(cls: type) -> type:
        INJECTIONS.register(name, cls)
        cls.op_name = name
        return cls

    return deco


def list_injections() -> list[str]:
    """Registered operator names."""
    return INJECTIONS.names()


def build_injection(name: str, master_channels: int, aux_channels: int) -> "InjectionOperator":
    """Build the operator registered as ``name`` for the given channel counts; unknown names list the valid ones."""
    return INJECTIONS.get(name)(master_channels, aux_channels)


def resize_to(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of (B, C, h, w) to ``hw``; identity when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False)


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Channel matching (docs/fusion.md, eq. 9) of (B, Ca, H, W) to ``channels``: even subsampling, or per-pixel-mean padding."""
    ca = x.shape[1]
    if ca == channels:
        return x
    if ca > channels:
        idx = (torch.arange(channels, device=x.device) * ca) // channels
        return x.index_select(1, idx)
    mean = x.mean(dim=1, keepdim=True)
    return torch.cat([x, mean.expand(-1, channels - ca, -1, -1)], dim=1)


def _group_norm(channels: int) -> nn.GroupNorm:
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class InjectionOperator(nn.Module):
    """Base class: ``forward(master (B,Cm,H,W), aux (B,Ca,h,w)) -> (B,Cm,H,W)``."""

    op_name: str = ""

    def __init__(self, master_channels: int, aux_channels: int) -> None:
        super().__init__()
        self.master_channels = int(master_channels)
        self.aux_channels = int(aux_channels)

    def extra_repr(self) -> str:
        return f"{self.aux_channels} -> {self.master_channels}"


@register_injection("replace")
class ReplaceInjection(InjectionOperator):
    """The paper's replacement (docs/fusion.md, eq. 9): parameter-free resize + channel matching; the master map is dropped."""

    def forward(self, master: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        aux = resize_to(aux.to(master.dtype), tuple(master.shape[-2:]))
        return match_channels(aux, self.master_channels)


class _Projection(nn.Sequential):
    """1x1 conv + GroupNorm from aux to master channels; optionally zero-initialised GN scale."""

    def __init__(self, cin: int, cout: int, zero_init: bool) -> None:
        super().__init__(nn.Conv2d(cin, cout, 1, bias=False), _group_norm(cout))
        if zero_init:
            nn.init.zeros_(self[1].weight)


@register_injection("add")
class AddInjection(InjectionOperator):
    """``master + gamma * GN(conv1x1(aux))``, gamma (per channel) zero-initialised."""

    def __init__(self, master_channels: int, aux_channels: int) -> None:
        super().__init__(master_channels, aux_channels)
        self.proj = _Projection(aux_channels, master_channels, zero_init=False)
        self.gamma = nn.Parameter(torch.zeros(1, master_channels, 1, 1))

    def forward(self, master: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        aux = resize_to(aux.to(master.dtype), tuple(master.shape[-2:]))
        return master + self.gamma * self.proj(aux)


@register_injection("gated")
class GatedInjection(InjectionOperator):
    """``master + sigmoid(conv1x1([master, p])) * p``, ``p = GN(conv1x1(aux))`` with zero-initialised GN scale."""

    def __init__(self, master_channels: int, aux_channels: int) -> None:
        super().__init__(master_channels, aux_channels)
        self.proj = _Projection(aux_channels, master_channels, zero_init=True)
        self.gate = nn.Conv2d(2 * master_channels, master_channels, 1)

    def forward(self, master: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        p = self.proj(resize_to(aux.to(master.dtype), tuple(master.shape[-2:])))
        return master + torch.sigmoid(self.gate(torch.cat([master, p], dim=1))) * p


@register_injection("concat")
class ConcatInjection(InjectionOperator):
    """``conv1x1([master, aux])`` to master channels, initialised as ``[I, 0]`` (passes the master through)."""

    def __init__(self, master_channels: int, aux_channels: int) -> None:
        super().__init__(master_channels, aux_channels)
        self.fuse = nn.Conv2d(master_channels + aux_channels, master_channels, 1)
        with torch.no_grad():
            self.fuse.weight.zero_()
            self.fuse.weight[:, :master_channels, 0, 0].copy_(torch.eye(master_channels))
            self.fuse.bias.zero_()

    def forward(self, master: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        aux = resize_to(aux.to(master.dtype), tuple(master.shape[-2:]))
        return self.fuse(torch.cat([master, aux], dim=1))
