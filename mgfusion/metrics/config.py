"""Hyper-parameters and the registry of metric variants (``reference``, ``paper``, ``corrected``).

Every numeric default is the authors' code value (docs/metrics.md, defaults). A *variant* is a named set of rule
switches on top of those defaults; any field of :class:`MetricConfig` can still be overridden per call
(``**hparams``), so a study can e.g. run the reference with FC on the L2 map (``fc_map="l2"``).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from mgfusion.utils.registry import Registry, RegistryError

__all__ = ["CHOICES", "VARIANTS", "MetricConfig", "list_variants", "register_variant", "resolve_config"]

#: Allowed values of the string-valued rule switches.
CHOICES: dict[str, tuple[str, ...]] = {
    "concentration": ("reference", "paper", "corrected"),
    "fc_map": ("pca", "l2"),
    "fc_grid": ("linspace", "fftfreq"),
    "sp_pad": ("zero", "replicate"),
    "sp_units": ("feature", "image"),
    "scs_backend": ("torch", "sklearn"),
    "nonfinite": ("raise", "zero"),
}


@dataclass(frozen=True)
class MetricConfig:
    """All knobs of the SC/EF suite. Units: radii and lengths in feature pixels unless stated otherwise.

    SFC: ``sfc_grid`` cells per side (G), cells at least ``sfc_min_cell`` feature pixels per side,
    intra-cell variance floor ``sfc_intra_floor``.
    SCS: PCA to ``scs_pca_dims`` dims; k-means for each k in ``scs_ks`` with ``scs_n_init`` k-means++ restarts
    (the torch backend screens all restarts - k-means++ and ``scs_screen_iter`` Lloyd steps - on an even subset of
    ``scs_screen_points`` of the clustering pixels (0: all), then runs the best one per k on all of them to
    convergence: centre shift <= ``scs_tol`` x mean feature variance, at most ``scs_max_iter`` steps in all - 40,
    where sklearn allows 300: continuous features take 40-140 steps to reach sklearn's tolerance while the SCS moves
    by < 1e-3 after step 40 (measured), below its seed-to-seed spread of ~5e-3; pass 300 for sklearn's cap);
    ``scs_samples`` clustering pixels, ``scs_sil_samples`` stratified silhouette pixels.
    EF: top fractions ``q_img`` (image edges) / ``q_feat`` (strong feature edges), invalid ``border``, core/outer
    radii ``r1``/``r2`` (``None`` -> max(2 r1, 3)), FC cut ``fc_cut`` (corner-normalised radius) and z-clip
    ``fc_clip``, SP threshold ``sp_tau``, ``sp_num_radii`` log-spaced radii up to ``sp_rmax_frac`` x min(H, W),
    3x3 (``sp_highpass``) box high-pass, decay ``sp_kappa``; EF scale ``ef_scale`` (lambda).
    Rule switches (see module docstrings of ``concentration``, ``spectrum``, ``precision``): ``concentration``,
    ``fc_map``, ``fc_grid``, ``sp_pad``, ``sp_units``, ``sp_interpolate``, ``image_antialias``.
    ``nonfinite``: ``"raise"`` (ValueError naming the images) or ``"zero"`` (non-finite entries replaced by 0).
    """

    # --- Structural coherence ---
    sfc_grid: int = 16
    sfc_min_cell: int = 1
    sfc_intra_floor: float = 1e-6
    scs_pca_dims: int = 32
    scs_ks: tuple[int, ...] = (6, 8, 10)
    scs_samples: int = 4096
    scs_sil_samples: int = 2000
    scs_n_init: int = 10
    scs_screen_iter: int = 3
    scs_screen_points: int = 1024
    scs_max_iter: int = 40
    scs_tol: float = 1e-4
    scs_backend: str = "torch"
    # --- Edge fidelity: preprocessing and regions ---
    q_img: float = 0.10
    q_feat: float = 0.10
    border: int = 1
    r1: int = 2
    r2: int | None = None
    image_antialias: bool = False
    concentration: str = "reference"
    # --- Frequency content ---
    fc_map: str = "pca"
    fc_grid: str = "linspace"
    fc_cut: float = 0.15
    fc_clip: float = 8.0
    # --- Spatial precision ---
    sp_tau: float = 0.5
    sp_num_radii: int = 16
    sp_rmax_frac: float = 0.6
    sp_highpass: int = 3
    sp_pad: str = "zero"
    sp_units: str = "feature"
    sp_interpolate: bool = False
    sp_kappa: float = 64.0
    # --- Composite / input handling ---
    ef_scale: float = 100.0
    nonfinite: str = "raise"

    @property
    def outer_radius(self) -> int:
        """r2 in feature pixels (defaults to max(2 r1, 3) as in the reference)."""
        return self.r2 if self.r2 is not None else max(2 * self.r1, 3)

    def validate(self) -> MetricConfig:
        """Raise ValueError naming the first invalid field; return self."""
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not valid; choose one of {list(allowed)}")
        positive_ints = ("sfc_grid", "sfc_min_cell", "scs_pca_dims", "scs_samples", "scs_sil_samples",
                         "scs_n_init", "scs_max_iter", "sp_num_radii")
        for name in positive_ints:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if min(self.scs_screen_iter, self.scs_screen_points, self.border, self.r1, self.sp_highpass) < 0:
            raise ValueError("scs_screen_iter, scs_screen_points, border, r1 and sp_highpass must be >= 0")
        if self.outer_radius < self.r1:
            raise ValueError(f"r2={self.outer_radius} must be >= r1={self.r1}")
        if not self.scs_ks or any(int(k) < 2 for k in self.scs_ks):
            raise ValueError(f"scs_ks must be a non-empty sequence of cluster counts >= 2, got {self.scs_ks!r}")
        for name in ("q_img", "q_feat"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in (0, 1], got {getattr(self, name)!r}")
        for name in ("fc_cut", "sp_tau", "sp_rmax_frac"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in (0, 1], got {getattr(self, name)!r}")
        if self.sp_kappa <= 0 or self.ef_scale <= 0 or self.fc_clip <= 0 or self.scs_tol < 0:
            raise ValueError("sp_kappa, ef_scale, fc_clip must be > 0 and scs_tol >= 0")
        return self


#: Rule switches of each named variant (on top of the defaults of MetricConfig); add one with
#: ``register_variant``.
VARIANTS: Registry[Mapping[str, Any]] = Registry("metric variant")
_ORDER: list[str] = []  # registration order, the order list_variants() reports


def register_variant(name: str, switches: Mapping[str, Any]) -> None:
    """Register a named variant: ``switches`` are MetricConfig fields overriding the defaults (validated now)."""
    dataclasses.replace(MetricConfig(), **dict(switches)).validate()
    VARIANTS.register(name, MappingProxyType(dict(switches)))
    _ORDER.append(name)


# The authors' code (docs/differences.md): EC = 1 - far share and NC = ring share on strong feature edges,
# FC on the PCA map with the linspace frequency grid, SP in feature pixels with the zero-padded high-pass.
register_variant("reference", {})
# The paper's literal definitions where they differ from the authors' code (docs/differences.md): EC = core share and
# NC = ring share of all valid gradient energy, FC on the z-scored L2 map, SP length in image pixels.
register_variant("paper", {"concentration": "paper", "fc_map": "l2", "sp_units": "image"})
# mgfusion's corrected metric (module docstring of mgfusion.metrics): chance-corrected, alignment-rewarding
# EC/NC, exact frequency grid, replicate-padded high-pass and sub-radius SP in image pixels, SFC cells >= 2x2,
# antialiased image resize.
register_variant("corrected", {
    "sfc_min_cell": 2,
    "concentration": "corrected",
    "fc_grid": "fftfreq",
    "sp_pad": "replicate",
    "sp_units": "image",
    "sp_interpolate": True,
    "image_antialias": True,
})

_FIELDS = tuple(f.name for f in dataclasses.fields(MetricConfig))


def list_variants() -> list[str]:
    """Names of the registered metric variants, in registration order."""
    return [name for name in _ORDER if name in VARIANTS]


def resolve_config(variant: str = "reference", overrides: Mapping[str, Any] | None = None) -> MetricConfig:
    """Build the validated config of ``variant`` with per-call ``overrides`` (any MetricConfig field)."""
    if variant not in VARIANTS:
        hint = difflib.get_close_matches(str(variant), list_variants(), n=1)
        raise RegistryError(f"unknown metric variant {variant!r}; valid variants: {list_variants()}"
                            + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown metric hyper-parameter(s) {unknown}; valid names: {sorted(_FIELDS)}")
    if "scs_ks" in overrides:
        overrides["scs_ks"] = tuple(int(k) for k in overrides["scs_ks"])
    return dataclasses.replace(MetricConfig(), **{**VARIANTS.get(variant), **overrides}).validate()
