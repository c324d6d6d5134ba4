"""SAM2's own image encoder as a single-encoder baseline: the Hiera trunk followed by SAM2's FPN neck.

The authors of the paper build their SAM2-only baseline (and the SAM2 master of S2D3) from SAM2's image encoder, trunk
*and* neck, loaded from the official checkpoint; as auxiliary they use the trunk's raw stages (docs/differences.md,
D4). :class:`SAM2FpnEncoder` is that baseline.

SAM2's FPN neck (SAM2's ``FpnNeck`` with the settings of every released SAM2/SAM2.1 config: ``d_model`` 256,
``fpn_top_down_levels`` [2, 3], nearest interpolation, ``fuse_type`` sum), written with levels ``l = 0..3`` for the
stride-4/8/16/32 trunk stages ``C_l``:

    L_l = conv1x1_l(C_l)                                         (lateral, with bias, C_l channels -> d_model)
    P_3 = L_3
    P_l = L_l + nearest_upsample_x2(P_{l+1})   if l in top_down_levels      (SAM2: only l = 2, i.e. stride 16)
    P_l = L_l                                  otherwise                   (strides 4 and 8: laterals only)

There is no output convolution. SAM2 itself discards ``P_3`` (``scalp`` 1) for its mask decoder; Mask2Former needs
all four levels, so all four are returned. The sine position encodings SAM2 computes next to the neck have no
parameters and are not used by Mask2Former; they are not computed.

The official checkpoint's ``image_encoder.neck.convs.{k}.conv.{weight,bias}`` keys load strictly into the neck
(``k = 0`` is the stride-32 lateral, ``k = 3`` the stride-4 one, as in the released files); the trunk loads as in
:class:`~mgfusion.backbones.timm_encoders.HierarchicalEncoder` (weight family ``sam2``).

``reproduce_b9=True`` reproduces the authors' detectron2 wrapper (docs/differences.md, B9): the stride-16 level
``P_2`` is handed on as the stride-32 output too, and the true stride-32 level is dropped. The stride-32 entry then
has the stride-16 map's size (``ceil(H/16) x ceil(W/16)``); the declared strides stay 4/8/16/32. It is a
reproduction option for the single-encoder baseline only; the fusion backbone refuses such an encoder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .timm_encoders import HierarchicalEncoder
from .weights import (
    CheckpointMismatchError,
    CheckpointReadError,
    read_state_dict,
    state_dict_differences,
)

__all__ = ["NECK_PREFIX", "SAM2FpnEncoder", "SAM2FpnNeck", "apply_level_aliases", "load_sam2_neck_weights"]

#: where the official SAM2 / SAM2.1 checkpoints keep the FPN neck (inside their ``{"model": ...}`` wrapping)
NECK_PREFIX = "image_encoder.neck."
#: SAM2's ``fpn_top_down_levels`` in every released config: top-down fusion into the stride-16 output only
SAM2_TOP_DOWN_LEVELS = (2, 3)


class _Lateral(nn.Module):
    """One lateral 1x1 convolution, held as ``.conv`` so the state-dict keys match the released checkpoints."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SAM2FpnNeck(nn.Module):
    """SAM2's FPN neck over the four Hiera stages (see the module docstring for the definition).

    Args:
        in_channels: channels of the trunk stages in stride order (4, 8, 16, 32), e.g. (112, 224, 448, 896).
        d_model: output channels of every level (256 in every released SAM2 model).
        top_down_levels: levels (0 = stride 4) whose output adds the upsampled output of the level above.

    ``forward([C_0, .., C_3]) -> [P_0, .., P_3]``, ``P_l: (B, d_model, H_l, W_l)`` with the stage's own size; each
    stage must be exactly twice the size of the next one where top-down fusion happens.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        d_model: int = 256,
        top_down_levels: Sequence[int] = SAM2_TOP_DOWN_LEVELS,
    ) -> None:
        super().__init__()
        self.in_channels = tuple(int(c) for c in in_channels)
        self.d_model = int(d_model)
        n = len(self.in_channels)
        self.top_down_levels = tuple(sorted({int(level) for level in top_down_levels}))
        bad = [level for level in self.top_down_levels if not 0 <= level < n]
        if bad:
            raise ValueError(f"top_down_levels {bad} out of range for {n} levels (valid: 0..{n - 1})")
        # convs[k] is the lateral of level n-1-k (coarsest first), the order of the released checkpoints
        self.convs = nn.ModuleList(_Lateral(c, self.d_model) for c in reversed(self.in_channels))

    def lateral(self, level: int) -> _Lateral:
        """The lateral convolution of ``level`` (0 = stride 4)."""
        return self.convs[len(self.in_channels) - 1 - level]

    def levels_fed_by(self, level: int) -> set[int]:
        """Output levels that depend on ``level``'s lateral: itself, and every finer level reached by top-down
        fusion without interruption."""
        fed = {level}
        below = level - 1
        while below >= 0 and below in self.top_down_levels:
            fed.add(below)
            below -= 1
        return fed

    def forward(self, stages: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        n = len(self.in_channels)
        if len(stages) != n:
            raise ValueError(f"SAM2FpnNeck expects {n} stage maps (strides 4..32 order), got {len(stages)}")
        outputs: list[torch.Tensor] = [stages[0]] * n  # placeholders, all overwritten below
        for level in range(n - 1, -1, -1):
            lateral = self.lateral(level)(stages[level])
            if level in self.top_down_levels and level < n - 1:
                # SAM2 upsamples in float32 (so under autocast the fused level comes out in float32, as in SAM2)
                above = F.interpolate(outputs[level + 1].float(), size=lateral.shape[-2:], mode="nearest")
                outputs[level] = lateral + above
            else:
                outputs[level] = lateral
        return outputs


def load_sam2_neck_weights(neck: SAM2FpnNeck, path: str | os.PathLike, *, strict: bool = True) -> None:
    """Load the FPN neck of an official SAM2 / SAM2.1 checkpoint (``image_encoder.neck.*``) into ``neck``.

    Raises:
        CheckpointMismatchError: (strict) a neck key is missing, unexpected or of another shape, e.g. a trunk-only
            file (timm's layout), which holds no neck.
        CheckpointReadError: the file cannot be read.
    """
    raw = read_state_dict(path)
    inner = raw.get("model", raw)
    if not isinstance(inner, Mapping):
        raise CheckpointReadError(f"weights file {path}: its 'model' entry is a {type(inner).__name__}, expected a "
                                  "state dict")
    sd = {k[len(NECK_PREFIX):]: v for k, v in inner.items() if isinstance(k, str) and k.startswith(NECK_PREFIX)}
    own = neck.state_dict()
    missing, unexpected, shapes = state_dict_differences(own, sd)
    if strict and (missing or unexpected or shapes):
        err = CheckpointMismatchError(os.fspath(path), [NECK_PREFIX + k for k in missing],
                                      [NECK_PREFIX + k for k in unexpected], [NECK_PREFIX + s for s in shapes])
        if not sd:
            note = (f"\n  No key of {path} starts with {NECK_PREFIX!r}: the SAM2 FPN neck needs the official "
                    "SAM2/SAM2.1 checkpoint (e.g. sam2.1_hiera_base_plus.pt), not a trunk-only file.")
            err.args = (err.args[0] + note,)
        raise err
    bad = {s.split(":")[0] for s in shapes}
    neck.load_state_dict({k: v for k, v in sd.items() if k in own and k not in bad}, strict=False)


def apply_level_aliases(out: dict[int, torch.Tensor], aliases: Mapping[int, int]) -> dict[int, torch.Tensor]:
    """Replace each output level ``a`` of ``aliases = {a: b}`` by level ``b`` (the authors' duplicated level, B9)."""
    for target, source in aliases.items():
        out[target] = out[source]
    return out


class SAM2FpnEncoder(HierarchicalEncoder):
    """SAM2 Hiera trunk + SAM2's FPN neck (module docstring): ``d_model`` channels at strides 4/8/16/32.

    Args:
        model_name / family / strict / timm_kwargs: as :class:`~mgfusion.backbones.timm_encoders.HierarchicalEncoder`.
        weights: ``None`` (random init) or an official SAM2 / SAM2.1 checkpoint file (trunk and neck are both
            loaded from it). ``"hub"`` is refused: timm's pretrained SAM2 weights hold the trunk only.
        neck_channels: the neck's ``d_model`` (256 in the released models; other values only without weights).
        top_down_levels: SAM2's ``fpn_top_down_levels`` (default (2, 3), every released config).
        reproduce_b9: hand the stride-16 level on as the stride-32 level too (the authors' wrapper; module docstring).
        **encoder_kwargs: further options of the trunk encoder.
    """

    def __init__(
        self,
        *,
        model_name: str,
        family: str = "sam2",
        weights: str | os.PathLike | None = None,
        strict: bool = True,
        neck_channels: int = 256,
        top_down_levels: Sequence[int] = SAM2_TOP_DOWN_LEVELS,
        reproduce_b9: bool = False,
        timm_kwargs: dict[str, Any] | None = None,
        **encoder_kwargs: Any,
    ) -> None:
        weights = os.fspath(weights) if isinstance(weights, os.PathLike) else weights
        if isinstance(weights, str) and (weights == "hub" or weights.startswith("hub:")):
            raise ValueError(f"{model_name} + FPN neck: weights={weights!r} would load timm's SAM2 weights, which hold "
                             "the trunk only, leaving the FPN neck random. Pass the official SAM2/SAM2.1 checkpoint "
                             "file (e.g. sam2.1_hiera_base_plus.pt), which holds both.")
        super().__init__(model_name=model_name, family=family, weights=weights, strict=strict,
                         timm_kwargs=timm_kwargs, **encoder_kwargs)
        self.trunk_channels = dict(self.out_channels)
        self.neck = SAM2FpnNeck([self.trunk_channels[s] for s in self.out_strides], neck_channels, top_down_levels)
        self.out_channels = {s: self.neck.d_model for s in self.out_strides}
        if weights:
            load_sam2_neck_weights(self.neck, weights, strict=strict)
        self.reproduce_b9 = bool(reproduce_b9)
        #: {output stride: stride whose map it repeats}; B9 repeats the stride-16 level as stride 32
        self.level_aliases: dict[int, int] = {32: 16} if self.reproduce_b9 else {}
        if self.frozen:  # the trunk encoder froze itself (a tuning mode): the neck built after it must follow
            self.freeze(no_grad=self._frozen_no_grad)

    def level_only_parameters(self, stride: int) -> list[nn.Parameter]:
        level = self.out_strides.index(stride)
        fed = {self.out_strides[i] for i in self.neck.levels_fed_by(level)}
        fed |= {a for a, b in self.level_aliases.items() if b in fed}
        return list(self.neck.lateral(level).parameters()) if fed == {stride} else []

    def forward_padded(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        stages = super().forward_padded(x)
        return dict(zip(self.out_strides, self.neck([stages[s] for s in self.out_strides])))

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Args: x: (B, 3, H, W) normalized images.

        Returns: {stride: (B, neck_channels, ceil(H/stride), ceil(W/stride))}; with ``reproduce_b9`` the stride-32
        entry is the stride-16 map.
        """
        return apply_level_aliases(super().forward(x), self.level_aliases)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", reproduce_b9=True" if self.reproduce_b9 else "")
