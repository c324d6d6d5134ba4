"""The profiler's settings (``configs/tools/profile_encoders.yaml``) and their validation.

Validation here is plain Python (no torch), so a wrong command line fails in about a second with an error that
names the key and the accepted forms. Checks that need the encoder registry or the metric package (encoder names,
metric variant, metric hyper-parameters) run in :class:`~mgfusion.profiling.runner.Profiler` before any image is
read.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

#: Images whose shorter side is below this many pixels are skipped (and listed in ``skipped_images.txt``): at
#: stride 32 such an image has less than one feature cell per side, and upsampling it to the profiling resolution
#: would measure the interpolation rather than the image.
DEFAULT_MIN_IMAGE_SIDE = 32
#: Images whose long/short side ratio exceeds this are skipped: resized to a fixed size they are distorted beyond
#: recognition, and at their native aspect the coarse strides have a single row or column of cells.
DEFAULT_MAX_ASPECT_RATIO = 8.0

RESOLUTION_FORMS = ("resolution=512 (short side in pixels, aspect kept, long side <= max_size), "
                    "resolution=[H,W] (exact size in pixels, both > 0), "
                    "resolution=null (native size, long side <= max_size)")


class ProfileConfigError(ValueError):
    """A profiling setting is invalid; the message names the key, the value and the accepted forms."""


@dataclass
class ProfileSettings:
    """Everything a profiling run needs (mirrors ``configs/tools/profile_encoders.yaml``; docs there)."""

    encoders: Sequence[str]
    output_dir: str
    images: str | None = None
    image_root: str | None = None
    dataset: str | None = None
    max_images: int | None = None
    resolution: int | Sequence[int] | None = 512
    max_size: int | None = 1024
    min_image_side: int = DEFAULT_MIN_IMAGE_SIDE
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    batch_size: int = 4
    num_workers: int = 2
    device: str = "auto"
    amp: bool = False
    variant: str = "reference"
    seed: int = 0
    metric_hparams: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, str | None] = field(default_factory=dict)
    encoder_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    allow_random_init: bool = False
    projection_free: bool = False
    imports: Sequence[str] = field(default_factory=list)
    fresh: bool = False
    num_pca_images: int = 4
    supervised: bool = True
    cost: bool = True
    cost_repeats: int = 3
    progress: bool = True

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> ProfileSettings:
        """Settings from a plain mapping (e.g. a resolved Hydra config); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known - {"hydra"}
        if unknown:
            raise ProfileConfigError(f"unknown profile settings {sorted(unknown)}; valid: {', '.join(sorted(known))}")
        missing = [k for k in ("encoders", "output_dir") if cfg.get(k) is None]
        if missing:
            raise ProfileConfigError(f"missing required setting(s) {missing}")
        settings = cls(**{k: v for k, v in cfg.items() if k in known})
        validate_settings(settings)
        return settings

    def encoder_weights(self, name: str) -> str | None:
        """The weights value of encoder ``name``: ``weights.NAME`` or ``encoder_overrides.NAME.weights``."""
        a = self.weights.get(name)
        b = (self.encoder_overrides.get(name) or {}).get("weights")
        if a and b and str(a) != str(b):
            raise ProfileConfigError(f"weights.{name}={a} and encoder_overrides.{name}.weights={b} disagree; give one")
        return str(a or b) if (a or b) else None


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_int(name: str, v: Any, *, minimum: int, allow_none: bool = False, hint: str = "") -> None:
    if v is None and allow_none:
        return
    if not _is_int(v) or v < minimum:
        forms = f"an integer >= {minimum}" + (" or null" if allow_none else "")
        raise ProfileConfigError(f"{name}={v!r} is invalid: expected {forms}{hint}")


def check_resolution(resolution: Any) -> None:
    """``resolution``: a positive int, ``[H, W]`` of positive ints, or None (see :data:`RESOLUTION_FORMS`)."""
    if resolution is None or (_is_int(resolution) and resolution > 0):
        return
    if (isinstance(resolution, Sequence) and not isinstance(resolution, str) and len(resolution) == 2
            and all(_is_int(v) and v > 0 for v in resolution)):
        return
    raise ProfileConfigError(f"resolution={_show(resolution)} is invalid; accepted forms: {RESOLUTION_FORMS}")


def _show(v: Any) -> str:
    if isinstance(v, Sequence) and not isinstance(v, str):
        return "[" + ",".join(_show(x) for x in v) + "]"
    return "null" if v is None else str(v)


def validate_settings(s: ProfileSettings) -> None:
    """Check every setting that needs no registry; raises :class:`ProfileConfigError` naming the key."""
    if isinstance(s.encoders, str) or not isinstance(s.encoders, Sequence) or not s.encoders:
        raise ProfileConfigError(f"encoders={s.encoders!r} is invalid: give a non-empty list, e.g. "
                                 "encoders=[dinov3_vitb16,sam2_hiera_bplus]")
    if not all(isinstance(e, str) and e for e in s.encoders):
        raise ProfileConfigError(f"encoders must be names, got {list(s.encoders)}")
    if len(set(s.encoders)) != len(s.encoders):
        raise ProfileConfigError(f"encoders contain duplicates: {list(s.encoders)}")
    if s.max_images is not None and (not _is_int(s.max_images) or s.max_images < 1):
        raise ProfileConfigError(f"max_images={s.max_images!r} is invalid: give a positive number of images, or "
                                 "max_images=null to profile every image of the source")
    check_resolution(s.resolution)
    _check_int("max_size", s.max_size, minimum=1, allow_none=True, hint=" (cap on the long side in pixels)")
    _check_int("min_image_side", s.min_image_side, minimum=1)
    if (not isinstance(s.max_aspect_ratio, numbers.Real) or isinstance(s.max_aspect_ratio, bool)
            or not s.max_aspect_ratio >= 1):
        raise ProfileConfigError(f"max_aspect_ratio={s.max_aspect_ratio!r} is invalid: expected a number >= 1")
    _check_int("batch_size", s.batch_size, minimum=1)
    _check_int("num_workers", s.num_workers, minimum=0)
    _check_int("num_pca_images", s.num_pca_images, minimum=0)
    _check_int("cost_repeats", s.cost_repeats, minimum=1)
    _check_int("seed", s.seed, minimum=0)
    for key in ("amp", "allow_random_init", "projection_free", "fresh", "supervised", "cost", "progress"):
        if not isinstance(getattr(s, key), bool):
            raise ProfileConfigError(f"{key}={getattr(s, key)!r} is invalid: expected true or false")
    for key in ("images", "image_root", "dataset", "device", "variant"):
        v = getattr(s, key)
        if v is not None and not isinstance(v, str):
            raise ProfileConfigError(f"{key}={v!r} is invalid: expected a string")
    if isinstance(s.imports, str) or not isinstance(s.imports, Sequence) or not all(
            isinstance(m, str) and m for m in s.imports):
        raise ProfileConfigError(f"imports={s.imports!r} is invalid: give a list of module names, "
                                 "e.g. imports=[my_pkg.my_encoders]")
    for key in ("metric_hparams", "weights", "encoder_overrides"):
        if not isinstance(getattr(s, key), Mapping):
            raise ProfileConfigError(f"{key} must be a mapping, got {getattr(s, key)!r}")
    for key in ("weights", "encoder_overrides"):
        stray = sorted(set(getattr(s, key)) - set(s.encoders))
        if stray:
            raise ProfileConfigError(f"{key}.{stray[0]} names an encoder that is not profiled; "
                                     f"encoders={list(s.encoders)}")
    for name, v in s.weights.items():
        if v is not None and not isinstance(v, str):
            raise ProfileConfigError(f"weights.{name}={v!r} is invalid: expected a file path, 'hub[:tag]' or null")
    for name, v in s.encoder_overrides.items():
        if not isinstance(v, Mapping):
            raise ProfileConfigError(f"encoder_overrides.{name} must be a mapping of build_encoder keywords, got {v!r}")
        s.encoder_weights(name)
