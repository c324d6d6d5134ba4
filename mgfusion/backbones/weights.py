"""Loading encoder weights from local files, safely and strictly.

Files are read without executing pickled code (``torch.load(..., weights_only=True)``; ``.safetensors`` via
safetensors). The official release layouts (DINOv3 torch-hub ``.pth``, DINOv2 ``.pth``, SAM ``sam_vit_*.pth``, SAM2
``sam2*_hiera_*.pt``, Swin ``.pth``) and timm's own layout are converted to timm's key names with timm's own
per-family checkpoint filters, then loaded strictly: any missing or unexpected key (apart from a family's documented
prediction-head keys, which feature extraction does not use) raises :class:`CheckpointMismatchError` naming them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from mgfusion.utils.registry import Registry

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not match the model: lists missing, unexpected and shape-mismatched keys."""

    def __init__(self, path: str, missing: list[str], unexpected: list[str], shapes: list[str]) -> None:
        self.missing, self.unexpected, self.shapes = missing, unexpected, shapes

        def fmt(title: str, keys: list[str]) -> str:
            if not keys:
                return ""
            shown = ", ".join(keys[:20]) + (f", ... ({len(keys) - 20} more)" if len(keys) > 20 else "")
            return f"\n  {title} ({len(keys)}): {shown}"

        super().__init__(
            f"checkpoint {path} does not match the model (strict loading)"
            + fmt("missing keys", missing)
            + fmt("unexpected keys", unexpected)
            + fmt("shape mismatches", shapes)
            + "\n  Pass strict=False to load the matching subset anyway."
        )


def state_dict_differences(own: Mapping[str, Any], loaded: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """How ``loaded`` (a checkpoint's state dict) differs from a model's own ``state_dict()``.

    Returns:
        ``(missing, unexpected, shapes)``: sorted keys the model has and ``loaded`` lacks, sorted keys ``loaded`` has
        and the model lacks, and ``"key: checkpoint (shape) vs model (shape)"`` for each common tensor whose shape
        differs (sorted by key). All empty = a strict load fits.
    """
    missing = sorted(set(own) - set(loaded))
    unexpected = sorted(set(loaded) - set(own))
    shapes = [f"{k}: checkpoint {tuple(loaded[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(loaded))
              if isinstance(loaded[k], torch.Tensor) and tuple(loaded[k].shape) != tuple(own[k].shape)]
    return missing, unexpected, shapes


class CheckpointReadError(RuntimeError):
    """A weights file could not be read (missing, truncated, not a state dict, or needs pickled code)."""


def read_state_dict(path: str | os.PathLike) -> Mapping[str, object]:
    """Read a weights file into a (possibly nested) mapping without executing pickled code.

    Supports ``.safetensors`` and torch pickles (``.pth``, ``.pt``, ``.bin``, ``.ckpt``) loaded with
    ``weights_only=True``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointReadError(f"weights file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # report which file and why, not a deep torch traceback
        raise CheckpointReadError(
            f"could not read weights file {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
            "The file may be truncated/corrupt, or contain objects other than tensors and plain Python types "
            "(mgfusion never unpickles arbitrary code)."
        ) from e
    if not isinstance(obj, Mapping):
        raise CheckpointReadError(f"weights file {path} holds a {type(obj).__name__}, expected a state dict")
    return obj


@dataclass(frozen=True)
class WeightFamily:
    """How one timm model family's checkpoints are converted and which of their keys feature extraction ignores.

    Attributes:
        name: family name (``dinov3``, ``dinov2``, ``samvit``, ``sam2``, ``swin``).
        convert: ``(raw_checkpoint, model) -> state dict in timm's layout`` (timm's own filter function).
        ignored_prefixes: keys with these prefixes (after conversion) are dropped: prediction heads / necks that
            the encoder does not use. Everything else must match exactly.
    """

    name: str
    convert: Callable[[Mapping[str, object], nn.Module], StateDict]
    ignored_prefixes: tuple[str, ...] = field(default_factory=tuple)


def _unwrap(ckpt: Mapping[str, object]) -> Mapping[str, object]:
    """Unwrap common checkpoint containers (``{"model": ...}``, ``{"state_dict": ...}``, ``{"teacher": ...}``)."""
    for key in ("model", "state_dict", "teacher", "module"):
        inner = ckpt.get(key) if isinstance(ckpt, Mapping) else None
        if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
            return _unwrap(inner)
    return ckpt


def _convert_dinov3(ckpt: Mapping[str, object], model: nn.Module) -> StateDict:
    from timm.models.eva import checkpoint_filter_fn

    return checkpoint_filter_fn(dict(_unwrap(ckpt)), model)


def _convert_vit(ckpt: Mapping[str, object], model: nn.Module) -> StateDict:
    from timm.models.vision_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(dict(_unwrap(ckpt)), model)


def _convert_samvit(ckpt: Mapping[str, object], model: nn.Module) -> StateDict:
    from timm.models.vision_transformer_sam import checkpoint_filter_fn

    return checkpoint_filter_fn(dict(_unwrap(ckpt)), model)


def _convert_sam2(ckpt: Mapping[str, object], model: nn.Module) -> StateDict:
    # Official SAM2 files nest the trunk under image_encoder.trunk.; timm's filter only strips a prefix it is given
    # (its pretrained_cfg_overlay path passes an empty one, which is why that path fails, see docs/install.md, encoder weights offline).
    from timm.models.hieradet_sam2 import checkpoint_filter_fn

    sd = dict(_unwrap(ckpt))
    prefix = "image_encoder.trunk." if any(k.startswith("image_encoder.trunk.") for k in sd) else ""
    return checkpoint_filter_fn(sd, None, prefix=prefix)


def _convert_swin(ckpt: Mapping[str, object], model: nn.Module) -> StateDict:
    from timm.models.swin_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(dict(_unwrap(ckpt)), model)


def _convert_timm(ckpt: Mapping[str, object], model: nn.Module) -> StateDict:
    return dict(_unwrap(ckpt))  # already in timm's layout (e.g. a timm .safetensors)


#: checkpoint layouts by family name; a new official layout registers its WeightFamily here
WEIGHT_FAMILIES: Registry[WeightFamily] = Registry("weight family")
for _family in (
    # Any timm model saved in timm's own layout; classifier heads are ignored.
    WeightFamily("timm", _convert_timm, ("head.", "fc_norm.")),
    WeightFamily("dinov3", _convert_dinov3, ("head.", "fc_norm.")),
    WeightFamily("dinov2", _convert_vit, ("head.", "fc_norm.")),
    # SAM's 256-channel conv neck is replaced by mgfusion's pyramid necks.
    WeightFamily("samvit", _convert_samvit, ("neck.", "head.")),
    WeightFamily("sam2", _convert_sam2, ("head.",)),
    # Swin's final norm only normalizes the last stage for classification; the pyramid uses raw stage outputs.
    WeightFamily("swin", _convert_swin, ("head.", "norm.")),
):
    WEIGHT_FAMILIES.register(_family.name, _family)


def load_weights_into(
    model: nn.Module, path: str | os.PathLike, family: str, *, strict: bool = True
) -> tuple[list[str], list[str]]:
    """Load a weights file of ``family``'s official or timm layout into a timm ``model``.

    Args:
        model: the timm trunk (heads already pruned).
        path: ``.pth`` / ``.pt`` / ``.safetensors`` file.
        family: a key of :data:`WEIGHT_FAMILIES`.
        strict: raise :class:`CheckpointMismatchError` on any missing / unexpected / mis-shaped key.

    Returns: ``(missing, unexpected)`` key lists (empty when strict).
    """
    fam = WEIGHT_FAMILIES.get(family)
    raw = read_state_dict(path)
    try:
        converted = fam.convert(raw, model)
    except Exception as e:
        raise CheckpointReadError(
            f"could not convert {path} as a {family} checkpoint: {type(e).__name__}: {e}"
        ) from e
    sd = {k: v for k, v in converted.items() if not k.startswith(fam.ignored_prefixes)}
    dropped = sorted(set(converted) - set(sd))
    if dropped:
        logger.info("%s: ignoring %d head/neck keys not used for features: %s", path, len(dropped), dropped[:8])
    missing, unexpected, shapes = state_dict_differences(model.state_dict(), sd)
    if strict and (missing or unexpected or shapes):
        raise CheckpointMismatchError(os.fspath(path), missing, unexpected, shapes)
    if shapes:
        bad = {s.split(":")[0] for s in shapes}
        sd = {k: v for k, v in sd.items() if k not in bad}
    model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        logger.warning("%s: non-strict load, %d missing, %d unexpected keys", path, len(missing), len(unexpected))
    return missing, unexpected
