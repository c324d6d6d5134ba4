"""Label-free Structural Coherence (SC) and Edge Fidelity (EF) metrics of dense features.

Depends on torch/numpy/scipy/scikit-learn only (never detectron2 or other mgfusion subpackages; of mgfusion it imports
only the registry mechanism ``mgfusion.utils.registry``), so features from any model can be profiled.
Definitions, hyper-parameters and defaults: docs/metrics.md; differences from the authors' code: docs/differences.md.

Entry points::

    compute_metrics(features, images, *, stride, variant="reference", valid_hw=None, seed=0, image_range=None,
                    **hparams)
        -> {"SFC","SCS","SC","EC","NC","FC","SP","EF", + "EC_chance","NC_chance","EC_lift","NC_lift",
            "EF_lift","SP_len"}: (B,) float32, unrounded
    compute_pyramid_metrics({stride: features}, images, ...) -> {stride: dict}
    aggregate(per_image_values, variant) -> {name: {"mean", "std", "count"}}

Image value range: uint8 images are 0..255; float images must state their scale with ``image_range=1.0`` (0..1) or
``image_range=255.0`` (0..255), other integer types too (e.g. ``image_range=65535.0`` for uint16). Values outside
``[0, image_range]`` by more than 1e-6 x image_range raise a ValueError naming the observed range (smaller
excursions are round-off and clipped); the range is never guessed from the values.

Variants (``list_variants()``):

``reference``
    The authors' code (what the paper's tables were made with; docs/differences.md): SFC on a fixed 16x16 grid;
    EC = 1 - far share and NC = ring share of the strong-feature-edge energy (regions r1 = 2, r2 = 4 feature px);
    FC on the PCA map with the linspace frequency grid; SP length in feature pixels with the zero-padded high-pass
    (bug B1: the length is 1 on almost every map). EF = 100 * clip(EC * NC * FC * SP, 0, 1). EF and SFC match the
    authors' functions to float32 round-off. Deliberate differences: only the 4 unique SP directions (same
    values); one RNG stream per image derived from ``seed`` (B13; batch-order independent); SCS via the batched
    torch k-means (restarts screened on ``scs_screen_points`` = 1024 of the 4096 pixels, at most ``scs_max_iter`` =
    40 Lloyd steps; see ``kmeans`` and ``MetricConfig``) - statistically equivalent to sklearn (differences within
    sklearn's own seed-to-seed spread of ~5e-3), while ``scs_backend="sklearn"`` runs the authors' sklearn path
    exactly, image by image; ``valid_hw`` registers padded features with their images (B5) when given.

``paper``
    The paper's literal text where it differs from the authors' code (docs/differences.md): EC = core (r1) share
    and NC = ring share of all gradient energy in V (no strong-edge restriction); FC on the z-scored L2 map; SP length
    in image pixels
    (length x stride). Everything else as ``reference``.

``corrected`` (ours; docs/metrics.md (corrected variant) shows why the reference EF ranks noise above real encoders)
    * EC/NC, chance-corrected and alignment-rewarding. d(p) = Chebyshev distance (feature px) from p to the nearest
      image centerline, k_r(d) = max(0, 1 - d / (r + 1)) (= the mean over tolerances t = 0..r of [d <= t]).
      With w = Sobel energy of the PCA map on the strong feature edges E_F and T = sum w:
      ``EC_share = sum w k_r1(d) / T``, ``NC_share = sum w k_r2(d) / T``; chance levels
      ``c_EC = mean_V k_r1(d)``, ``c_NC = mean_V k_r2(d)`` (the expected share when the edges are placed independently
      of the image); lifts ``EC_lift = EC_share / c_EC``, ``NC_lift = NC_share / c_NC`` (about 1 for noise);
      reported ``EC = clip((EC_share - c_EC) / (1 - c_EC), 0, 1)``, likewise NC (0 at chance, 1 when all energy sits
      on the centerlines). Both kernels strictly decrease with distance, so moving edge energy away from the image
      edges lowers EC and NC: an image-aligned map scores highest at zero shift and lower at every shift of 1..4
      cells (tested on real photos). ``EF_lift = EC_lift * NC_lift`` (about 1 for noise).
    * FC: as the reference but on the exact frequency grid (``fftfreq``; radius normalised to 1 at the corners).
    * SP: replicate-padded 3x3 high-pass (no border artefact, B1), the decorrelation length is the linearly
      interpolated crossing of the mean NCC curve (from NCC(0) = 1) with tau, converted to image pixels:
      ``SP = 64 / (64 + length * stride)`` - it now varies with sharpness.
    * SFC: cells of at least 2x2 feature pixels (``g = min(16, H // 2)`` per side) so coarse strides do not saturate.
    * The image is resized to feature resolution with antialiasing (bilinear, ``antialias=True``; B5).
    * EF = 100 * EC * NC * FC * SP in [0, 100]: about 0 for features unrelated to the image.

All variants also return chance levels and lifts for EC/NC (reference: area shares of the outer region / ring, see
docs/metrics.md, chance levels; paper: of the core / ring), ``EF_lift = EC_lift * NC_lift`` and ``SP_len`` (the
decorrelation length in feature pixels). Supervised counterparts (docs/metrics.md, supervised counterparts; our
reconstruction) are in ``mgfusion.metrics.supervised``.

Determinism: the same inputs and seed give identical values on every call, independent of the batch composition
and order (every random draw comes from a generator seeded with ``seed`` alone).
Degenerate input: constant features give SFC = SCS = SC = EF = 0; 1x1 maps and uniform images give finite values
(EF = 0; lifts 1 when the image has no edges); NaN/Inf inside an image's valid region raise a ValueError naming the
images (``nonfinite="zero"`` replaces them by 0 instead); inconsistent shapes raise a ValueError that states the rule.
Cost: about 0.1 s per image for SC + EF on the 4 levels of a SAM2 Hiera-B+ pyramid of a 512x1024 image on 2 CPU
cores, 20-27x less than the authors' functions measured side by side (benchmarks/metrics_speed.py); the extra memory
is O(C^2 + N k) per level (features are streamed in chunks).
"""

from mgfusion.metrics.aggregate import aggregate
from mgfusion.metrics.api import (
    METRIC_KEYS,
    PARTS,
    MetricSuite,
    compute_metrics,
    compute_pyramid_metrics,
)
from mgfusion.metrics.config import (
    VARIANTS,
    MetricConfig,
    list_variants,
    resolve_config,
)
from mgfusion.metrics.pca import pca_map
from mgfusion.metrics.supervised import ef_gt, sc_gt, spearman

__all__ = [
    "METRIC_KEYS",
    "PARTS",
    "VARIANTS",
    "MetricConfig",
    "MetricSuite",
    "aggregate",
    "compute_metrics",
    "compute_pyramid_metrics",
    "list_variants",
    "pca_map",
    "resolve_config",
    "sc_gt",
    "ef_gt",
    "spearman",
]
