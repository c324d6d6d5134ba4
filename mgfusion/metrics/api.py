"""Public entry points: ``compute_metrics`` (one pyramid level), ``compute_pyramid_metrics`` and ``MetricSuite``.

Inputs are checked here (shapes, non-finite values, image/feature registration); images of a padded batch are
handled through ``valid_hw`` so padding never counts as content; images with the same valid feature size are
computed together in memory-bounded chunks (``level.level_metrics``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch

from mgfusion.metrics.config import MetricConfig, resolve_config
from mgfusion.metrics.level import level_metrics
from mgfusion.metrics.primitives import to_unit_rgb

__all__ = ["METRIC_KEYS", "PARTS", "MetricSuite", "compute_metrics", "compute_pyramid_metrics"]

#: Keys returned by every variant (more keys may follow, e.g. EC_lift, NC_lift, EF_lift, SP_len).
METRIC_KEYS = ("SFC", "SCS", "SC", "EC", "NC", "FC", "SP", "EF")
#: Metric groups that can be requested with ``parts``.
PARTS = ("SC", "EF")
# Features per chunk of images: 16 MB of float32 on the CPU (one OS4 map of a 512x1024 image, four OS16 maps), so
# every per-level intermediate stays cache-sized whatever the batch; 256 MB on accelerators (large batches keep
# them busy). Chunking never changes a result: every image is computed on its own.
_CHUNK_ELEMENTS = 1 << 22
_CHUNK_ELEMENTS_ACCELERATOR = 1 << 26

ImagesLike = torch.Tensor | Sequence[torch.Tensor]
ValidHW = torch.Tensor | Sequence[Sequence[int]]


def _check_parts(parts: Collection[str]) -> tuple[str, ...]:
    parts = tuple(parts)
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise ValueError(f"parts={list(parts)} is not valid; choose a non-empty subset of {list(PARTS)}")
    return parts


def _finite(x: torch.Tensor, what: str, policy: str, ids: list[int] | None = None) -> torch.Tensor:
    """``x`` ``(B,...)`` unchanged when finite; else a ValueError naming the batch indices (``ids[i]`` for row i when
    given), or with ``policy="zero"`` a copy with the non-finite entries set to 0."""
    if not x.is_floating_point():
        return x
    # One cheap pass: a sum is finite whenever every entry is; only a non-finite sum needs the exact check.
    if bool(torch.isfinite(x.flatten(1).sum(dim=1)).all()):
        return x
    bad = ~torch.isfinite(x.flatten(1)).all(dim=1)
    if bool(bad.any()):
        if policy == "raise":
            rows = bad.nonzero().flatten().tolist()
            raise ValueError(f"{what} contain NaN/Inf values (batch indices {[ids[i] for i in rows] if ids else rows});"
                             " clean them or pass nonfinite='zero' to replace non-finite entries by 0")
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return x


def _prepare_images(images: ImagesLike | None, batch: int, device: torch.device, policy: str,
                    image_range: float | None) -> list[torch.Tensor] | torch.Tensor | None:
    """Unit-range float32 RGB on ``device``: a ``(B,3,H0,W0)`` tensor, or a list of ``(3,h,w)`` tensors.

    The value scale follows ``primitives.to_unit_rgb``: uint8 = 0..255, anything else needs ``image_range``."""
    if images is None:
        return None
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] != batch:
            raise ValueError(f"images must be (B,3,H0,W0) RGB with B={batch} (the features' batch), "
                             f"got shape {tuple(images.shape)}")
        return to_unit_rgb(_finite(images.to(device), "images", policy), image_range)
    images = list(images)
    if len(images) != batch:
        raise ValueError(f"got {len(images)} images for a feature batch of {batch}")
    out = []
    for i, img in enumerate(images):
        if img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"images[{i}] must be (3,H,W) RGB, got shape {tuple(img.shape)}")
        try:
            out.append(to_unit_rgb(_finite(img.to(device).unsqueeze(0), f"images[{i}]", policy), image_range)[0])
        except ValueError as err:
            raise ValueError(f"images[{i}]: {err}") from None
    return out


def _image_size(images: list[torch.Tensor] | torch.Tensor | None, i: int) -> tuple[int, int] | None:
    if images is None:
        return None
    shape = images[i].shape if isinstance(images, list) else images.shape[1:]
    return int(shape[-2]), int(shape[-1])


def _parse_valid_hw(valid_hw: ValidHW | None, images, batch: int) -> list[tuple[int, int]] | None:
    if valid_hw is None:
        if isinstance(images, list):
            return [_image_size(images, i) for i in range(batch)]
        return None
    rows = valid_hw.tolist() if isinstance(valid_hw, torch.Tensor) else [list(r) for r in valid_hw]
    if len(rows) != batch or any(len(r) != 2 for r in rows):
        raise ValueError(f"valid_hw must hold one (H0, W0) pair per image ({batch}), got {rows!r}")
    sizes = [(int(r[0]), int(r[1])) for r in rows]
    if any(h < 1 or w < 1 for h, w in sizes):
        raise ValueError(f"valid_hw entries must be positive, got {sizes}")
    return sizes


def _regions(feat_hw: tuple[int, int], images, stride: int, sizes: list[tuple[int, int]] | None,
             batch: int) -> list[tuple[int, int, int, int]]:
    """Per image ``(hf, wf, crop_h, crop_w)``: valid feature size and the image crop that covers it."""
    h, w = feat_hw
    if sizes is None:
        if images is None:
            return [(h, w, 0, 0)] * batch
        h0, w0 = _image_size(images, 0)
        if abs(h0 * w - w0 * h) > min(h0, w0):
            raise ValueError(f"images ({h0}x{w0}) and features ({h}x{w}) do not cover the same field of view; "
                             "for padded batches pass valid_hw=(H0, W0) per image")
        return [(h, w, h0, w0)] * batch
    regions = []
    for i, (h0, w0) in enumerate(sizes):
        hf, wf = math.ceil(h0 / stride), math.ceil(w0 / stride)
        if hf > h or wf > w:
            raise ValueError(f"valid_hw[{i}]=({h0}, {w0}) needs {hf}x{wf} feature cells at stride {stride}, "
                             f"but the features are {h}x{w}")
        img_hw = _image_size(images, i)
        if img_hw is None:
            regions.append((hf, wf, 0, 0))
            continue
        if h0 > img_hw[0] or w0 > img_hw[1]:
            raise ValueError(f"valid_hw[{i}]=({h0}, {w0}) exceeds image {i}'s size {img_hw}")
        regions.append((hf, wf, min(img_hw[0], hf * stride), min(img_hw[1], wf * stride)))
    return regions


def _check_features(features: torch.Tensor) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.ndim != 4:
        raise ValueError(f"features must be a (B,C,H,W) tensor, got {getattr(features, 'shape', type(features))}")
    if features.shape[0] == 0:
        raise ValueError("features hold an empty batch")
    return features


def _level(features: torch.Tensor, images, *, stride: int, cfg: MetricConfig, valid_hw: ValidHW | None, seed: int,
           parts: tuple[str, ...]) -> dict[str, torch.Tensor]:
    _check_features(features)
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    if "EF" in parts and images is None:
        raise ValueError("images are required to compute EF (parts contains 'EF')")
    feats = features.detach().to(torch.float32)
    b, c, h, w = feats.shape
    regions = _regions((h, w), images, int(stride), _parse_valid_hw(valid_hw, images, b), b)
    groups: dict[tuple[int, int, int, int], list[int]] = {}
    for i, key in enumerate(regions):
        groups.setdefault(key, []).append(i)
    out: dict[str, torch.Tensor] = {}
    for (hf, wf, ch, cw), members in groups.items():
        budget = _CHUNK_ELEMENTS if feats.device.type == "cpu" else _CHUNK_ELEMENTS_ACCELERATOR
        chunk = max(1, budget // max(1, c * hf * wf))
        for s in range(0, len(members), chunk):
            ids = members[s: s + chunk]
            whole = len(ids) == b and (hf, wf) == (h, w)
            idx = torch.tensor(ids, device=feats.device)
            f = feats if whole else feats.index_select(0, idx)[:, :, :hf, :wf]
            # checked chunk by chunk (the chunk is then in cache for what follows); padding is not checked
            f = _finite(f, "features", cfg.nonfinite, ids)
            rgb = None
            if "EF" in parts:
                if isinstance(images, list):
                    rgb = torch.stack([images[i][:, :ch, :cw] for i in ids])
                else:
                    rgb = (images if whole else images.index_select(0, idx))[:, :, :ch, :cw]
            res = level_metrics(f, rgb, stride=int(stride), cfg=cfg, seed=seed, parts=parts)
            for key, val in res.items():
                if key not in out:
                    out[key] = torch.zeros(b, dtype=torch.float32, device=feats.device)
                out[key].index_copy_(0, idx, val)
    return out


def compute_metrics(features: torch.Tensor, images: ImagesLike | None, *, stride: int, variant: str = "reference",
                    valid_hw: ValidHW | None = None, seed: int = 0, parts: Collection[str] = PARTS,
                    image_range: float | None = None, **hparams: Any) -> dict[str, torch.Tensor]:
    """Label-free SC/EF metrics of one pyramid level, per image.

    Args:
        features: ``(B,C,H,W)`` features at output stride ``stride`` (any float dtype/device; autocast is ignored).
        images: the matching RGB images ``(B,3,H0,W0)``, or a list of ``(3,h,w)`` images of different sizes (then
            ``valid_hw`` defaults to their sizes). Only needed (and only checked) for EF.
        stride: output stride of ``features`` in image pixels.
        variant: ``"reference"``, ``"paper"`` or ``"corrected"`` (``list_variants()``).
        valid_hw: per-image valid ``(H0, W0)`` inside padded images/features, ``(B,2)`` tensor or pairs; features
            are cropped to ``ceil(H0/stride) x ceil(W0/stride)`` and images to the same field of view.
        seed: seed of the SCS pixel subsample, k-means++ and silhouette subsample (same for every image).
        parts: metric groups to compute, subset of ``("SC", "EF")``.
        image_range: the maximum of the images' value scale. uint8 images are 0..255 and need none; float images
            must state it (``1.0`` for 0..1, ``255.0`` for 0..255), other integer types too (e.g. ``65535.0``).
            Values outside ``[0, image_range]`` (beyond 1e-6 x image_range of round-off) raise a ValueError naming
            the observed range; the range is never guessed.
        **hparams: any ``MetricConfig`` field (defaults: docs/metrics.md), e.g. ``q_feat=0.2``, ``fc_map="l2"``.

    Returns:
        ``{name: (B,) float32 tensor}`` on the features' device, unrounded: ``SFC, SCS, SC`` (SC part) and
        ``EC, NC, FC, SP, EF, EC_chance, NC_chance, EC_lift, NC_lift, EF_lift, SP_len`` (EF part).
    """
    cfg = resolve_config(variant, hparams)
    parts = _check_parts(parts)
    _check_features(features)
    with torch.no_grad(), torch.autocast(device_type=features.device.type, enabled=False):
        imgs = _prepare_images(images if "EF" in parts else None, features.shape[0], features.device, cfg.nonfinite,
                               image_range)
        return _level(features, imgs, stride=stride, cfg=cfg, valid_hw=valid_hw, seed=seed, parts=parts)


def compute_pyramid_metrics(features: Mapping[int, torch.Tensor], images: ImagesLike | None, *,
                            variant: str = "reference", valid_hw: ValidHW | None = None, seed: int = 0,
                            parts: Collection[str] = PARTS, image_range: float | None = None,
                            **hparams: Any) -> dict[int, dict[str, torch.Tensor]]:
    """``{stride: compute_metrics(...)}`` for a pyramid ``{stride: (B,C,H/s,W/s)}``; images are prepared once.

    ``image_range`` as in ``compute_metrics``: uint8 images are 0..255, float images need ``image_range=1.0`` or
    ``255.0`` (values outside the declared range raise a ValueError)."""
    cfg = resolve_config(variant, hparams)
    parts = _check_parts(parts)
    if not features:
        raise ValueError("features must map at least one stride to a (B,C,H,W) tensor")
    first = _check_features(next(iter(features.values())))
    sizes = {int(s): _check_features(f).shape[0] for s, f in features.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every pyramid level must hold the same images; batch sizes per stride: {sizes}")
    with torch.no_grad(), torch.autocast(device_type=first.device.type, enabled=False):
        imgs = _prepare_images(images if "EF" in parts else None, first.shape[0], first.device, cfg.nonfinite,
                               image_range)
        return {int(s): _level(f, imgs, stride=int(s), cfg=cfg, valid_hw=valid_hw, seed=seed, parts=parts)
                for s, f in features.items()}


class MetricSuite:
    """A configured metric suite, e.g. a Hydra node ``{_target_: mgfusion.metrics.MetricSuite, variant: corrected}``.

    Keyword-only: ``variant``, ``seed``, ``parts`` and any ``MetricConfig`` field; validated at construction.
    """

    def __init__(self, *, variant: str = "reference", seed: int = 0, parts: Collection[str] = PARTS,
                 **hparams: Any) -> None:
        self.config = resolve_config(variant, hparams)
        self.variant, self.seed, self.parts = variant, int(seed), _check_parts(parts)
        self.hparams = dict(hparams)

    def __call__(self, features: torch.Tensor, images: ImagesLike | None, *, stride: int,
                 valid_hw: ValidHW | None = None, image_range: float | None = None) -> dict[str, torch.Tensor]:
        """``compute_metrics`` with this suite's settings (``image_range``: see ``compute_metrics``)."""
        return compute_metrics(features, images, stride=stride, variant=self.variant, valid_hw=valid_hw,
                               seed=self.seed, parts=self.parts, image_range=image_range, **self.hparams)

    def pyramid(self, features: Mapping[int, torch.Tensor], images: ImagesLike | None, *,
                valid_hw: ValidHW | None = None,
                image_range: float | None = None) -> dict[int, dict[str, torch.Tensor]]:
        """``compute_pyramid_metrics`` with this suite's settings (``image_range``: see ``compute_metrics``)."""
        return compute_pyramid_metrics(features, images, variant=self.variant, valid_hw=valid_hw, seed=self.seed,
                                       parts=self.parts, image_range=image_range, **self.hparams)

    def __repr__(self) -> str:
        return f"MetricSuite(variant={self.variant!r}, seed={self.seed}, parts={self.parts}, hparams={self.hparams})"
