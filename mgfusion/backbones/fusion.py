"""Master-auxiliary fusion backbone (the paper's §3.3; docs/fusion.md).

The master encoder (structure-strong, trainable) gives the 4-level pyramid; at each injection stride the frozen
auxiliary encoder's (edge-strong) feature enters through an injection operator (:mod:`.injection`; the paper's
``replace`` by default). The fused pyramid keeps the master's channels, strides and pixel statistics, so the fusion
backbone is itself an :class:`~mgfusion.backbones.base.Encoder` and plugs into the detectron2 adapter unchanged.

Each encoder sees its own preprocessing: the input arrives normalized with the master's mean/std; the auxiliary's
input is re-normalized with its own mean/std and, optionally, resized to its own resolution (``aux_input_size``), its
features being resized to the master's grid by the operator. With ``replace`` the master's own map at that stride is
discarded, so the parameters that feed only that level (a ViT neck's projection) are frozen: they would never get a
gradient (and would count as unused parameters under DDP).

The injection stride comes from the constructor (``inject={16: "replace"}``), or from a saved profile
(``inject_from_profile=path``: argmax over strides of the auxiliary's mean EF, docs/fusion.md). ``dynamic_stride=True``
reproduces the authors' code (docs/differences.md, B10): the stride is re-selected on every forward pass as the argmax of the
batch-summed reference EF of the auxiliary's levels; it is off by default.

Auxiliary-free inference (:mod:`.distillation`): with ``distillation`` enabled, training adds a loss aligning a 1x1
projection of the master's own map at each injection stride to the auxiliary's map; ``inference="distilled"`` then
evaluates without ever calling the auxiliary (the projected master map takes its place in the operator), and
:meth:`FusionBackbone.drop_auxiliary` removes it from the model. ``inference="master_only"`` evaluates the master's
own pyramid. Training always runs the auxiliary (the fusion, and the distillation target).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# the profile-reading and stride-selection rules live in a dependency-free leaf module of mgfusion.profiling
from mgfusion.profiling.selection import argmax_stride, read_profile_ef

from .base import Encoder
from .distillation import DistillationSettings, FeatureDistillation
from .injection import InjectionOperator, build_injection
from .registry import build_encoder

EncoderSpec = Encoder | str | Mapping[str, Any]

#: what the fusion backbone computes in eval mode (training always fuses)
INFERENCE_MODES = ("fused", "master_only", "distilled")


def _as_encoder(spec: EncoderSpec, role: str) -> tuple[Encoder, str | None]:
    """An encoder module and its registry name (if known) from a module, a name, or {"name": ..., **kwargs}."""
    if isinstance(spec, nn.Module):
        return spec, getattr(spec, "registry_name", None)
    if isinstance(spec, str):
        return build_encoder(spec), spec
    if isinstance(spec, Mapping):
        kwargs = dict(spec)
        name = kwargs.pop("name", None)
        if not name:
            raise ValueError(f"{role} spec {dict(spec)} needs a 'name' key")
        kwargs.pop("_target_", None)
        return build_encoder(name, **kwargs), name
    raise TypeError(f"{role} must be an Encoder, a registered name or a mapping, got {type(spec).__name__}")


class FusionBackbone(Encoder):
    """Master encoder + frozen auxiliary encoder + injection operators.

    Args:
        master: the pyramid-giving encoder (an Encoder, a registry name, or ``{"name": ..., **build kwargs}``).
        auxiliary: the injected encoder (same forms); always frozen and run without autograd.
        inject: ``{stride: operator name}`` (one stride = the paper; several = multi-stride injection).
            ``None`` requires ``inject_from_profile``.
        inject_from_profile: path to a profile ``summary.json``: the stride is the argmax of the auxiliary's mean EF.
        profile_encoder: the auxiliary's name in the profile (default: the auxiliary's registry name, else the
            profile's recommended auxiliary).
        operator: operator used with ``inject_from_profile`` / ``dynamic_stride`` (default ``replace``).
        train_master: False freezes the master as well (the paper's "FZ master" settings B and D); an alias of
            the master's ``tuning=frozen`` kept for old configs (it contradicts ``last_n`` and ``lora``).
        aux_input_size: ``None`` = the auxiliary sees the master's input; an int resizes the input so its long side
            has that many pixels (e.g. 1024 for SAM2); ``(H, W)`` resizes to that size.
        dynamic_stride: reproduction option: choose the stride per batch by the auxiliary's reference EF (docs/differences.md, B10).
        distillation: ``{enabled, weight, loss: cosine|mse|both, detach_student}`` (:mod:`.distillation`).
        inference: eval-mode behaviour: ``fused`` (default), ``master_only`` (the master's own pyramid, no auxiliary)
            or ``distilled`` (needs ``distillation``; the projected master map replaces the auxiliary's).

    ``forward(x: (B,3,H,W) normalized with the master's stats) -> {stride: (B, C_master[s], ceil(H/s), ceil(W/s))}``.
    """

    def __init__(
        self,
        *,
        master: EncoderSpec,
        auxiliary: EncoderSpec,
        inject: Mapping[int, str] | None = None,
        inject_from_profile: str | os.PathLike | None = None,
        profile_encoder: str | None = None,
        operator: str = "replace",
        train_master: bool = True,
        aux_input_size: int | Sequence[int] | None = None,
        dynamic_stride: bool = False,
        distillation: Mapping[str, Any] | DistillationSettings | None = None,
        inference: str = "fused",
    ) -> None:
        super().__init__()
        self.master, self.master_name = _as_encoder(master, "master")
        self.auxiliary, self.auxiliary_name = _as_encoder(auxiliary, "auxiliary")
        self.auxiliary.freeze()
        if not train_master:
            master_tuning = getattr(self.master, "tuning", None)
            if master_tuning is not None and master_tuning.mode in ("last_n", "lora"):
                raise ValueError(f"train_master=false contradicts the master's tuning={master_tuning.describe()}; "
                                 "use backbone.master.tuning=frozen (train_master is its old alias)")
            self.master.freeze()
        self.out_strides = tuple(self.master.out_strides)
        self.out_channels = dict(self.master.out_channels)
        self.pixel_mean = tuple(self.master.pixel_mean)
        self.pixel_std = tuple(self.master.pixel_std)
        self.size_divisibility = 1  # each encoder pads to its own rule
        missing = [s for s in self.out_strides if s not in self.auxiliary.out_strides]
        if missing:
            raise ValueError(f"auxiliary encoder lacks strides {missing} of the master pyramid {self.out_strides}")
        if any(getattr(e, "level_aliases", None) for e in (self.master, self.auxiliary)):  # e.g. reproduce_b9
            raise ValueError("an encoder that repeats a pyramid level (reproduce_b9) is a single-encoder baseline "
                             "option only; the fusion needs true stride 4/8/16/32 levels (docs/differences.md, B9)")

        self.profile_source: str | None = None
        if inject is None:
            if dynamic_stride:
                inject = {s: operator for s in self.out_strides}
            elif inject_from_profile is not None:
                enc, ef = read_profile_ef(inject_from_profile, profile_encoder or self.auxiliary_name)
                inject = {argmax_stride(ef): operator}
                self.profile_source = f"{os.fspath(inject_from_profile)} ({enc}: EF {ef})"
            else:
                raise ValueError("FusionBackbone needs `inject` ({stride: operator}) or `inject_from_profile`")
        elif inject_from_profile is not None:
            raise ValueError("give either `inject` or `inject_from_profile`, not both")
        inject = {int(s): str(op) for s, op in dict(inject).items()}
        bad = [s for s in inject if s not in self.out_strides]
        if bad or not inject:
            raise ValueError(f"injection strides {bad or list(inject)} invalid; valid strides: {self.out_strides}")
        if dynamic_stride and len(set(inject.values())) != 1:
            raise ValueError("dynamic_stride uses one operator for every candidate stride")
        self.injectors = nn.ModuleDict({
            str(s): build_injection(op, self.master.out_channels[s], self.auxiliary.out_channels[s])
            for s, op in sorted(inject.items())
        })
        self.dynamic_stride = bool(dynamic_stride)
        settings = distillation if isinstance(distillation, DistillationSettings) else \
            DistillationSettings.from_config(distillation)
        if settings.enabled and self.dynamic_stride:
            raise ValueError("backbone.distillation needs fixed injection strides; it cannot be combined with "
                             "backbone.fusion.dynamic=true")
        self.distillation = FeatureDistillation(
            {s: self.master.out_channels[s] for s in inject}, {s: self.auxiliary.out_channels[s] for s in inject},
            settings) if settings.enabled else None
        distilled_into_master = settings.enabled and not settings.detach_student
        if not self.dynamic_stride:  # a replaced master level is discarded: its own parameters would get no gradient
            for s, op in inject.items():  # (unless the distillation loss trains it)
                if op == "replace" and not distilled_into_master:
                    for p in self.master.level_only_parameters(s):
                        p.requires_grad_(False)
        self.inference = "fused"
        self.set_inference(inference)
        self._pending_losses: dict[str, torch.Tensor] | None = None
        if aux_input_size is not None and not isinstance(aux_input_size, int):
            aux_input_size = tuple(int(v) for v in aux_input_size)
            if len(aux_input_size) != 2:
                raise ValueError(f"aux_input_size must be an int (long side) or (H, W), got {aux_input_size}")
        self.aux_input_size = aux_input_size
        self.register_buffer("_master_mean", torch.tensor(self.master.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_master_std", torch.tensor(self.master.pixel_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_aux_mean", torch.tensor(self.auxiliary.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_aux_std", torch.tensor(self.auxiliary.pixel_std).view(1, 3, 1, 1), persistent=False)
        #: strides injected in the last forward pass (changes per batch only with dynamic_stride)
        self.last_injected: tuple[int, ...] = tuple(sorted(inject))

    @property
    def inject_strides(self) -> tuple[int, ...]:
        """Strides that have an injection operator."""
        return tuple(int(s) for s in self.injectors)

    def injector(self, stride: int) -> InjectionOperator:
        """The operator injecting at ``stride``."""
        return self.injectors[str(stride)]

    # ---- auxiliary-free inference ----------------------------------------------------------------------------
    def set_inference(self, mode: str) -> FusionBackbone:
        """Choose the eval-mode behaviour: ``fused``, ``master_only`` or ``distilled`` (see the class docstring)."""
        if mode not in INFERENCE_MODES:
            raise ValueError(f"backbone.fusion.inference={mode!r}; valid: {', '.join(INFERENCE_MODES)}")
        if mode == "distilled" and self.distillation is None:
            raise ValueError("backbone.fusion.inference=distilled needs a model trained with feature distillation "
                             "(backbone.distillation.enabled=true): the projection of the master's features is "
                             "part of the model")
        if mode == "fused" and self.auxiliary is None:
            raise ValueError("the auxiliary encoder was dropped (drop_auxiliary()); fused inference needs it")
        self.inference = mode
        return self

    def drop_auxiliary(self) -> FusionBackbone:
        """Remove the auxiliary encoder (for deployment and export after ``inference`` master_only / distilled):
        its parameters leave the model and its state dict; the model can no longer train or run fused."""
        if self.inference == "fused":
            raise ValueError("set_inference('distilled') or 'master_only' before dropping the auxiliary encoder")
        self.auxiliary = None
        return self

    def pop_losses(self) -> dict[str, torch.Tensor]:
        """The distillation losses of the last training forward pass (then cleared); ``{}`` if none."""
        losses, self._pending_losses = self._pending_losses or {}, None
        return losses

    # ---- preprocessing ---------------------------------------------------------------------------------------
    def to_rgb255(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the master's normalization: (B,3,H,W) normalized -> RGB in 0-255 units (float)."""
        return x * self._master_std.to(x.dtype) + self._master_mean.to(x.dtype)

    def auxiliary_input(self, x: torch.Tensor) -> torch.Tensor:
        """The auxiliary's input: re-normalized with its own stats and resized to ``aux_input_size`` if set."""
        same_stats = self.master.pixel_mean == self.auxiliary.pixel_mean and \
            self.master.pixel_std == self.auxiliary.pixel_std
        xa = x if same_stats else (self.to_rgb255(x) - self._aux_mean.to(x.dtype)) / self._aux_std.to(x.dtype)
        if self.aux_input_size is None:
            return xa
        h, w = x.shape[-2:]
        if isinstance(self.aux_input_size, int):
            scale = self.aux_input_size / max(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
        else:
            size = self.aux_input_size
        if size == (h, w):
            return xa
        return F.interpolate(xa, size=size, mode="bilinear", align_corners=False)

    # ---- forward ---------------------------------------------------------------------------------------------
    def forward_padded(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        feats = dict(self.master(x))
        mode = "fused" if self.training else self.inference
        if mode == "master_only":
            self.last_injected = ()
            return feats
        if mode == "distilled":  # the auxiliary is never called
            for s in self.inject_strides:
                feats[s] = self.injector(s)(feats[s], self.distillation.project(s, feats[s]))
            self.last_injected = self.inject_strides
            return feats
        if self.auxiliary is None:
            raise RuntimeError("the auxiliary encoder was dropped (drop_auxiliary()); this model can only be "
                               "evaluated with inference=master_only or distilled")
        aux = self.auxiliary(self.auxiliary_input(x))  # frozen: no autograd graph
        if self.training and self.distillation is not None:
            if self._pending_losses is not None:
                raise RuntimeError(
                    "the distillation loss of the previous training step was never collected: the "
                    "meta-architecture must add mgfusion.backbones.pop_auxiliary_losses(backbone) to its losses")
            self._pending_losses = self.distillation.losses(feats, aux)
        strides = self.inject_strides
        if self.dynamic_stride:
            strides = (self._select_dynamic_stride(aux, x),)
        for s in strides:
            feats[s] = self.injector(s)(feats[s], aux[s])
        self.last_injected = tuple(strides)
        return feats

    def _select_dynamic_stride(self, aux: dict[int, torch.Tensor], x: torch.Tensor) -> int:
        """The authors' per-batch rule: argmax over strides of the batch-summed reference EF of the aux levels."""
        from mgfusion.metrics import (
            compute_metrics,  # torch/numpy-only package; imported lazily
        )

        images = self.to_rgb255(x.float()).clamp(0, 255)
        with torch.no_grad():
            ef = {s: float(compute_metrics(aux[s].float(), images, stride=s, variant="reference", parts=("EF",),
                                           image_range=255.0)["EF"].sum()) for s in self.inject_strides}
        return argmax_stride(ef)

    def extra_repr(self) -> str:
        inj = ", ".join(f"{s}:{self.injector(s).op_name}" for s in self.inject_strides)
        mode = "dynamic" if self.dynamic_stride else "fixed"
        return (f"inject={{{inj}}} ({mode}), aux_input_size={self.aux_input_size}, inference={self.inference}, "
                + super().extra_repr())


def build_fusion_backbone(
    *,
    master: EncoderSpec,
    auxiliary: EncoderSpec,
    fusion: Mapping[str, Any] | None = None,
    train_master: bool = True,
    aux_input_size: int | Sequence[int] | None = None,
    distillation: Mapping[str, Any] | None = None,
) -> FusionBackbone:
    """Hydra-friendly builder: ``fusion = {stride, operator, from_profile, profile_encoder, dynamic, inference}``;
    ``distillation = {enabled, weight, loss, detach_student}`` (see :class:`FusionBackbone`).

    Exactly one of three ways chooses the injection stride: ``stride`` (an int, the paper, or a list of ints for
    multi-stride injection), ``from_profile`` (a profile ``summary.json``: argmax of the auxiliary's EF) or
    ``dynamic: true`` (per-batch choice, reproduction of the authors' code). Contradictory settings (e.g. a
    ``stride`` together with ``from_profile``) raise ``ValueError`` instead of one of them being ignored. Sweep the
    stride from the CLI: ``backbone.fusion.stride=4,8,16,32 -m``.
    """
    fusion = dict(fusion or {})
    inference = str(fusion.pop("inference", None) or "fused")  # eval-mode behaviour (auxiliary-free inference)
    unknown = set(fusion) - {"stride", "operator", "from_profile", "profile_encoder", "dynamic"}
    if unknown:
        raise ValueError(f"unknown fusion keys {sorted(unknown)}; valid: stride, operator, from_profile, "
                         "profile_encoder, dynamic")
    op = str(fusion.get("operator") or "replace")
    stride, profile, dynamic = fusion.get("stride"), fusion.get("from_profile"), bool(fusion.get("dynamic", False))
    chosen = [f"{k}={v!r}" for k, v, on in (("stride", stride, stride is not None),
                                          ("from_profile", profile, bool(profile)),
                                          ("dynamic", dynamic, dynamic)) if on]
    if len(chosen) != 1:
        raise ValueError(
            f"backbone.fusion: {' and '.join(chosen) if chosen else 'none of stride, from_profile, dynamic'} "
            f"{'are' if chosen else 'is'} set; exactly one of them chooses the injection stride. Keep one and set the "
            "others to null/false (e.g. backbone.fusion.from_profile=PATH backbone.fusion.stride=null)."
        )
    if fusion.get("profile_encoder") and not profile:
        raise ValueError("backbone.fusion.profile_encoder is set but from_profile is not; it names the auxiliary "
                         "encoder inside the profile given by from_profile")
    inject = None
    if stride is not None:
        strides = [stride] if isinstance(stride, int) else list(stride)
        if not strides or any(isinstance(s, bool) or not isinstance(s, int) for s in strides):
            raise ValueError(f"backbone.fusion.stride must be an int or a non-empty list of ints, got {stride!r}")
        inject = {int(s): op for s in strides}
    return FusionBackbone(
        master=master, auxiliary=auxiliary, inject=inject, inject_from_profile=profile or None,
        profile_encoder=fusion.get("profile_encoder"), operator=op, train_master=train_master,
        aux_input_size=aux_input_size, dynamic_stride=dynamic,
        distillation=distillation, inference=inference,
    )


def count_injected_parameters(backbone: FusionBackbone) -> int:
    """Learnable parameters added by the injection operators (0 for the paper's ``replace``)."""
    return sum(p.numel() for p in backbone.injectors.parameters())


__all__ = [
    "INFERENCE_MODES",
    "FusionBackbone",
    "argmax_stride",
    "build_fusion_backbone",
    "count_injected_parameters",
    "read_profile_ef",
]
