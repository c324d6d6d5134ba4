"""The per-row stages of a profile: features of a batch -> per-image SC/EF (+ SC_gt, EF_gt) records.

:class:`MetricScorer` turns any feature pyramid into records; :class:`FeatureMetrics` feeds it one frozen encoder's
features. Control features (noise, pixels) are fed to the same scorer by :mod:`.controls`, so every row of a
table is measured by the same code on the same images, strides and grids.

Images reach the metrics as ``uint8`` tensors, whose range (0..255) is defined by the dtype, so no range guess or
``image_range`` argument is involved.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mgfusion.backbones import Encoder
from mgfusion.metrics import compute_pyramid_metrics, ef_gt, sc_gt

#: the EF_gt outputs kept in each record (docs/metrics.md, EF_gt)
EF_GT_KEYS = ("EF_gt", "EC_gt", "NC_gt", "EF_gt_lift")


def normalize(images: torch.Tensor, valid_hw: torch.Tensor, encoder: Encoder) -> torch.Tensor:
    """(B,3,H,W) uint8 RGB -> float normalized with the encoder's stats; padding set to 0 (as detectron2 pads)."""
    mean = torch.tensor(encoder.pixel_mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(encoder.pixel_std, device=images.device).view(1, 3, 1, 1)
    x = (images.float() - mean) / std
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device).view(1, h, 1) < valid_hw[:, 0].view(-1, 1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w) < valid_hw[:, 1].view(-1, 1, 1)
    return x * (rows & cols).unsqueeze(1)


@dataclass
class BatchPart:
    """The kept images of a collated batch, on the device.

    Attributes:
        ids: image ids (B); ``images`` (B,3,H,W) uint8 zero-padded; ``valid_hw`` (B,2) their real sizes;
        ``sem`` / ``inst``: (B,H,W) int64 label maps (-1 = void / no instance) or None.
    """

    ids: list[str]
    images: torch.Tensor
    valid_hw: torch.Tensor
    sem: torch.Tensor | None
    inst: torch.Tensor | None


def select(batch: Mapping[str, Any], keep: Sequence[int], device: torch.device) -> BatchPart:
    """The images ``keep`` (indices into ``batch["ids"]``) of a collated batch, moved to ``device``."""
    idx = torch.tensor(list(keep), dtype=torch.long)
    images = batch["images"][idx].to(device)
    if images.dtype != torch.uint8:
        raise TypeError(f"profiling batches must hold uint8 images, got {images.dtype}")
    labels = batch.get("sem") is not None
    return BatchPart(ids=[batch["ids"][i] for i in keep], images=images, valid_hw=batch["valid_hw"][idx].to(device),
                     sem=batch["sem"][idx].to(device) if labels else None,
                     inst=batch["inst"][idx].to(device) if labels else None)


class MetricScorer:
    """Per-image records of feature pyramids: label-free SC/EF (:func:`~mgfusion.metrics.compute_pyramid_metrics`)
    and, when the batch has labels, SC_gt and EF_gt.

    Args:
        variant / metric_hparams / seed: passed to the metrics.
        supervised: compute SC_gt / EF_gt when labels are present.
    """

    def __init__(self, *, variant: str, metric_hparams: Mapping[str, Any], seed: int, supervised: bool = True
                 ) -> None:
        self.variant, self.metric_hparams, self.seed = variant, dict(metric_hparams), seed
        self.supervised = supervised

    def records(self, name: str, kind: str, feats: Mapping[int, torch.Tensor], part: BatchPart
                ) -> list[dict[str, Any]]:
        """One JSON-ready record per image: ``encoder, kind, image_id, variant, size, metrics{stride: {...}}``.

        ``feats``: ``{stride: (B,C,ceil(H/s),ceil(W/s)) float32}`` for the images of ``part``.
        """
        metrics = compute_pyramid_metrics(feats, part.images, variant=self.variant, valid_hw=part.valid_hw,
                                          seed=self.seed, **self.metric_hparams)
        supervised = self._supervised(feats, part) if self.supervised and part.sem is not None else {}
        records = []
        for b, iid in enumerate(part.ids):
            per_stride = {}
            for s, m in metrics.items():
                row = {k: _finite(v[b]) for k, v in m.items()}
                row.update({k: _finite(v[b]) for k, v in supervised.get(s, {}).items()})
                per_stride[str(s)] = row
            h, w = (int(v) for v in part.valid_hw[b])
            records.append({"encoder": name, "kind": kind, "image_id": iid, "variant": self.variant, "size": [h, w],
                            "metrics": per_stride})
        return records

    def _supervised(self, feats: Mapping[int, torch.Tensor], part: BatchPart) -> dict[int, dict[str, torch.Tensor]]:
        """SC_gt and EF_gt per stride from the batch's label maps (void = -1)."""
        out = {}
        for s, f in feats.items():
            sc = sc_gt(f, stride=s, semantic=part.sem, instance=part.inst, ignore_label=-1, valid_hw=part.valid_hw,
                       seed=self.seed)
            ef = ef_gt(f, stride=s, semantic=part.sem, instance=part.inst, valid_hw=part.valid_hw,
                       **self.metric_hparams)
            out[s] = {"SC_gt": sc["SC_gt"], **{k: ef[k] for k in EF_GT_KEYS}}
        return out


@dataclass
class EncodedBatch:
    """What :class:`FeatureMetrics` computed for the kept images of a batch.

    Attributes:
        ids: image ids (B).
        images: (B,3,H,W) uint8 on the device, zero-padded; ``valid_hw`` (B,2) their real sizes.
        features: {stride: (B,C,ceil(H/s),ceil(W/s)) float32}.
        records: one JSON-ready record per image (``encoder, kind, image_id, variant, size, metrics``).
    """

    ids: list[str]
    images: torch.Tensor
    valid_hw: torch.Tensor
    features: dict[int, torch.Tensor]
    records: list[dict[str, Any]]


class FeatureMetrics:
    """Features of one frozen encoder and their metrics (:class:`MetricScorer`).

    Args:
        name: the row's name (stored in each record); ``kind``: ``encoder`` or ``control`` (random-init control).
        encoder: the frozen encoder, on ``device``.
        scorer: the metric stage shared by every row.
        amp: bf16 autocast for the encoder forward (metrics always in fp32).

    ``timing`` accumulates seconds spent in the encoder and in the metrics.
    """

    def __init__(self, name: str, encoder: Encoder, scorer: MetricScorer, *, amp: bool, device: torch.device,
                 kind: str = "encoder") -> None:
        self.name, self.kind, self.encoder, self.scorer = name, kind, encoder, scorer
        self.amp, self.device = amp, device
        self.timing = {"encoder_s": 0.0, "metrics_s": 0.0, "images": 0}

    def __call__(self, batch: Mapping[str, Any], keep: Sequence[int]) -> EncodedBatch:
        """Profile the images ``keep`` (indices into ``batch["ids"]``) of a collated batch."""
        part = select(batch, keep, self.device)
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            feats = self.encoder(normalize(part.images, part.valid_hw, self.encoder))
        feats = {int(s): f.float() for s, f in feats.items()}
        sync(self.device)
        t1 = time.perf_counter()
        records = self.scorer.records(self.name, self.kind, feats, part)
        sync(self.device)
        self.timing["encoder_s"] += t1 - t0
        self.timing["metrics_s"] += time.perf_counter() - t1
        self.timing["images"] += len(part.ids)
        return EncodedBatch(ids=part.ids, images=part.images, valid_hw=part.valid_hw, features=feats,
                            records=records)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (for honest timings on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _finite(v: torch.Tensor) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None
