"""Feature distillation from the frozen auxiliary into the master, for auxiliary-free inference.

During training, at every injection stride ``s`` the master's own level-``s`` map (the one the fusion discards or
mixes) goes through a learned 1x1 projection from the master's channels to the auxiliary's, and is pulled towards
the auxiliary's level-``s`` map (resized to the master's grid like the injection operator does, no gradient):

* ``cosine``: ``1 - cos(P(m), a)`` over channels, averaged over pixels and images;
* ``mse``:    ``mean((P(m) - a)^2)`` over channels, pixels and images (``||P(m) - a||^2 / C_aux`` per pixel);
* ``both`` (default): their sum, as OVS-DINO aligns DINO to SAM.

The loss (times ``weight``) is added to the model's losses (``loss_distill_s<stride>``). With the fusion's
``inference: distilled`` the trained model then runs without the auxiliary: the projected master map ``P(m)`` takes
the auxiliary map's place in the injection operator, so the rest of the network sees what it was trained on.

Why master -> auxiliary channels and not the reverse: the target must be the fixed, frozen auxiliary feature, as it
is what the injection operator consumed in training. A learned projection applied to the *target* could shrink it
towards zero (MSE) or a constant direction (cosine) and make the loss meaningless; projecting the student into the
teacher's space keeps the target fixed, and the projected map is directly a stand-in for the auxiliary's map.

``detach_student: true`` trains only the projection (OVS-DINO lets its alignment loss update only its own adapter
modules); by default the gradient also reaches the master, which then learns the auxiliary's structure.
See docs/tuning.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .injection import resize_to

__all__ = ["DISTILLATION_LOSSES", "DistillationSettings", "FeatureDistillation", "pop_auxiliary_losses"]

DISTILLATION_LOSSES = ("cosine", "mse", "both")


@dataclass(frozen=True)
class DistillationSettings:
    """``enabled``; ``weight`` of the loss; ``loss`` (cosine | mse | both); ``detach_student``."""

    enabled: bool = False
    weight: float = 1.0
    loss: str = "both"
    detach_student: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> DistillationSettings:
        """Validated settings from ``backbone.distillation``."""
        cfg = dict(cfg or {})
        unknown = set(cfg) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown backbone.distillation keys {sorted(unknown)}; valid: enabled, weight, loss, "
                             "detach_student")
        out = cls(**cfg)
        if out.loss not in DISTILLATION_LOSSES:
            raise ValueError(f"backbone.distillation.loss={out.loss!r}; valid: {', '.join(DISTILLATION_LOSSES)}")
        if not out.weight > 0:
            raise ValueError(f"backbone.distillation.weight must be > 0, got {out.weight}")
        return out


class FeatureDistillation(nn.Module):
    """The 1x1 projections (master -> auxiliary channels, one per stride) and the alignment loss.

    Args:
        master_channels / aux_channels: ``{stride: channels}`` of the distilled strides.
        settings: loss, weight and detaching.
    """

    def __init__(self, master_channels: Mapping[int, int], aux_channels: Mapping[int, int],
                 settings: DistillationSettings) -> None:
        super().__init__()
        self.settings = settings
        self.proj = nn.ModuleDict({str(s): nn.Conv2d(int(c), int(aux_channels[s]), 1)
                                   for s, c in sorted(master_channels.items())})

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.proj)

    def project(self, stride: int, master: torch.Tensor) -> torch.Tensor:
        """(B, C_master, H, W) -> (B, C_aux, H, W): the master map as a stand-in for the auxiliary's."""
        return self.proj[str(stride)](master)

    def losses(self, master: Mapping[int, torch.Tensor], aux: Mapping[int, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"loss_distill_s<stride>": weighted loss}`` for each stride (fp32 scalars)."""
        out = {}
        for s in self.strides:
            student = master[s].detach() if self.settings.detach_student else master[s]
            pred = self.project(s, student).float()
            target = resize_to(aux[s].detach().float(), tuple(pred.shape[-2:]))
            loss = pred.new_zeros(())
            if self.settings.loss in ("cosine", "both"):
                loss = loss + (1.0 - F.cosine_similarity(pred, target, dim=1, eps=1e-6)).mean()
            if self.settings.loss in ("mse", "both"):
                loss = loss + F.mse_loss(pred, target)
            out[f"loss_distill_s{s}"] = loss * self.settings.weight
        return out

    def extra_repr(self) -> str:
        st = self.settings
        return f"loss={st.loss}, weight={st.weight:g}, detach_student={st.detach_student}"


def pop_auxiliary_losses(module: nn.Module) -> dict[str, torch.Tensor]:
    """Collect (and clear) the losses that submodules of ``module`` computed in their last training forward pass
    (modules with a ``pop_losses()`` method, e.g. a distilling :class:`~mgfusion.backbones.FusionBackbone`).

    A meta-architecture adds them to its loss dict; a module whose losses are never collected raises on its next
    training step, so a loss is never silently dropped.
    """
    out: dict[str, torch.Tensor] = {}
    for m in module.modules():
        pop = getattr(m, "pop_losses", None)
        if callable(pop):
            for k, v in pop().items():
                if k in out:
                    raise ValueError(f"two submodules produced the loss {k!r}")
                out[k] = v
    return out
