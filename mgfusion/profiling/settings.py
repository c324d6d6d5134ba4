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


CHECKPOINT_PARTS = ("master", "auxiliary", "encoder")
ENTRY_FORMS = ("a registered encoder name (e.g. dinov3_vitb16), or PART@PATH for an encoder taken out of a training "
               "checkpoint: PART = master | auxiliary (fusion backbone) | encoder (single-encoder backbone), PATH = "
               "a training run folder (its model_final.pth, else its last_checkpoint) or one of its model_*.pth "
               "files; quote paths with '=' in them: 'encoders=[\"master@outputs/run/solver.max_iter=2\"]'")
CONTROL_KEYS = {"noise": bool, "pixels": bool, "random_init": bool, "noise_channels": object, "alpha": float}


class ProfileConfigError(ValueError):
    """A profiling setting is invalid; the message names the key, the value and the accepted forms."""


def split_checkpoint_entry(entry: str) -> tuple[str, str] | None:
    """``("master", PATH)`` for an ``encoders`` entry ``master@PATH``; None for a registry name."""
    if "@" not in entry:
        return None
    part, _, path = entry.partition("@")
    if part not in CHECKPOINT_PARTS or not path:
        raise ProfileConfigError(f"encoders entry {entry!r} is invalid: expected {ENTRY_FORMS}")
    return part, path


def default_controls() -> dict[str, Any]:
    """The ``controls`` defaults: noise and pixel controls on, random-init off, noise channels of the first entry."""
    return {"noise": True, "pixels": True, "random_init": False, "noise_channels": "auto", "alpha": 0.05}


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
    controls: Mapping[str, Any] = field(default_factory=default_controls)
    initial_weights: bool = True
    cost: bool = True
    cost_repeats: int = 3
    cost_models: Sequence[str] = field(default_factory=list)
    cost_model_resolution: Sequence[int] = (1024, 2048)
    num_processes: int = 1
    dist_url: str = "auto"
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
        values = {k: v for k, v in cfg.items() if k in known}
        if isinstance(values.get("controls"), Mapping):
            values["controls"] = {**default_controls(), **values["controls"]}
        settings = cls(**values)
        validate_settings(settings)
        return settings

    def control(self, key: str) -> Any:
        """The value of ``controls.<key>`` (defaults filled in)."""
        return {**default_controls(), **dict(self.controls)}[key]

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
        raise ProfileConfigError(f"encoders must be names, got {list(s.encoders)}; each entry is {ENTRY_FORMS}")
    for e in s.encoders:
        split_checkpoint_entry(e)
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
    _check_int("num_processes", s.num_processes, minimum=1, hint=" (processes that share the images; one per GPU "
               "on CUDA, gloo processes on CPU)")
    if not isinstance(s.dist_url, str) or not (s.dist_url == "auto" or s.dist_url.startswith(("tcp://", "file://"))):
        raise ProfileConfigError(f"dist_url={s.dist_url!r} is invalid: expected auto or tcp://HOST:PORT")
    validate_controls(s.controls)
    if isinstance(s.cost_models, str) or not isinstance(s.cost_models, Sequence) or not all(
            isinstance(m, str) and m for m in s.cost_models):
        raise ProfileConfigError(f"cost_models={s.cost_models!r} is invalid: give a list of training run folders "
                                 "or training config.yaml files, e.g. cost_models=[outputs/my_run]")
    res = s.cost_model_resolution
    if isinstance(res, str) or not isinstance(res, Sequence) or len(res) != 2 or not all(
            _is_int(v) and v > 0 for v in res):
        raise ProfileConfigError(f"cost_model_resolution={_show(res)} is invalid: expected [H,W] in pixels, "
                                 "e.g. [1024,2048] (the paper's Cityscapes input)")
    _check_int("seed", s.seed, minimum=0)
    for key in ("amp", "allow_random_init", "projection_free", "fresh", "supervised", "initial_weights", "cost",
                "progress"):
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


def validate_controls(controls: Any) -> None:
    """``controls``: a mapping of the keys in :data:`CONTROL_KEYS` (see configs/tools/profile_encoders.yaml)."""
    if not isinstance(controls, Mapping):
        raise ProfileConfigError(f"controls must be a mapping, got {controls!r}")
    unknown = sorted(set(controls) - set(CONTROL_KEYS))
    if unknown:
        raise ProfileConfigError(f"unknown controls key(s) {unknown}; valid: {', '.join(CONTROL_KEYS)}")
    for key in ("noise", "pixels", "random_init"):
        if key in controls and not isinstance(controls[key], bool):
            raise ProfileConfigError(f"controls.{key}={controls[key]!r} is invalid: expected true or false")
    alpha = controls.get("alpha", 0.05)
    if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool) or not 0.0 < alpha < 1.0:
        raise ProfileConfigError(f"controls.alpha={alpha!r} is invalid: expected a significance level in (0, 1)")
    ch = controls.get("noise_channels", "auto")
    if ch != "auto" and not (isinstance(ch, Sequence) and not isinstance(ch, str) and len(ch) == 4
                             and all(_is_int(c) and c > 0 for c in ch)):
        raise ProfileConfigError(f"controls.noise_channels={_show(ch)} is invalid: expected auto (the channels of "
                                 "the first profiled encoder) or 4 positive counts for strides 4, 8, 16, 32")
