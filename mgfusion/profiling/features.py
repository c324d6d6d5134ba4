"""The per-encoder stage of a profile: one frozen encoder turns a batch into per-image SC/EF (and SC_gt) records.

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

from mgfusion.backbones import Encoder, build_encoder
from mgfusion.metrics import compute_pyramid_metrics, sc_gt

from .settings import ProfileSettings


def build_profiled_encoder(name: str, settings: ProfileSettings, device: torch.device) -> Encoder:
    """Build a frozen encoder for profiling (weights and build overrides from the settings, seeded init)."""
    kwargs: dict[str, Any] = dict(settings.encoder_overrides.get(name) or {})
    weights = settings.encoder_weights(name)
    if weights:
        kwargs["weights"] = weights
    if settings.projection_free and name.startswith(("dinov", "samvit")):
        kwargs.setdefault("neck", "raw")
    torch.manual_seed(settings.seed)  # random-init necks/encoders are reproducible across runs and resumes
    return build_encoder(name, freeze=True, **kwargs).to(device)


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
class EncodedBatch:
    """What :class:`FeatureMetrics` computed for the kept images of a batch.

    Attributes:
        ids: image ids (B).
        images: (B,3,H,W) uint8 on the device, zero-padded; ``valid_hw`` (B,2) their real sizes.
        features: {stride: (B,C,ceil(H/s),ceil(W/s)) float32}.
        records: one JSON-ready record per image (``encoder, image_id, variant, size, metrics{stride: {...}}``).
    """

    ids: list[str]
    images: torch.Tensor
    valid_hw: torch.Tensor
    features: dict[int, torch.Tensor]
    records: list[dict[str, Any]]


class FeatureMetrics:
    """Features of one frozen encoder and their label-free metrics (plus SC_gt when the batch has labels).

    Args:
        name: the encoder's registry name (stored in each record).
        encoder: the frozen encoder, on ``device``.
        variant / metric_hparams / seed: passed to :func:`mgfusion.metrics.compute_pyramid_metrics`.
        amp: bf16 autocast for the encoder forward (metrics always in fp32).

    ``timing`` accumulates seconds spent in the encoder and in the metrics.
    """

    def __init__(self, name: str, encoder: Encoder, *, variant: str, metric_hparams: Mapping[str, Any], seed: int,
                 amp: bool, device: torch.device) -> None:
        self.name, self.encoder = name, encoder
        self.variant, self.metric_hparams, self.seed = variant, dict(metric_hparams), seed
        self.amp, self.device = amp, device
        self.timing = {"encoder_s": 0.0, "metrics_s": 0.0, "images": 0}

    def __call__(self, batch: Mapping[str, Any], keep: Sequence[int]) -> EncodedBatch:
        """Profile the images ``keep`` (indices into ``batch["ids"]``) of a collated batch."""
        idx = torch.tensor(list(keep), dtype=torch.long)
        images = batch["images"][idx].to(self.device)
        if images.dtype != torch.uint8:
            raise TypeError(f"profiling batches must hold uint8 images, got {images.dtype}")
        valid = batch["valid_hw"][idx].to(self.device)
        ids = [batch["ids"][i] for i in keep]
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            feats = self.encoder(normalize(images, valid, self.encoder))
        feats = {int(s): f.float() for s, f in feats.items()}
        self._sync()
        t1 = time.perf_counter()
        metrics = compute_pyramid_metrics(feats, images, variant=self.variant, valid_hw=valid, seed=self.seed,
                                          **self.metric_hparams)
        supervised = self._sc_gt(feats, batch, idx, valid) if batch.get("sem") is not None else {}
        self._sync()
        self.timing["encoder_s"] += t1 - t0
        self.timing["metrics_s"] += time.perf_counter() - t1
        self.timing["images"] += len(ids)
        records = []
        for b, iid in enumerate(ids):
            per_stride = {}
            for s, m in metrics.items():
                row = {k: _finite(v[b]) for k, v in m.items()}
                if s in supervised:
                    row["SC_gt"] = _finite(supervised[s][b])
                per_stride[str(s)] = row
            h, w = (int(v) for v in valid[b])
            records.append({"encoder": self.name, "image_id": iid, "variant": self.variant, "size": [h, w],
                            "metrics": per_stride})
        return EncodedBatch(ids=ids, images=images, valid_hw=valid, features=feats, records=records)

    def _sc_gt(self, feats: Mapping[int, torch.Tensor], batch: Mapping[str, Any], idx: torch.Tensor,
               valid: torch.Tensor) -> dict[int, torch.Tensor]:
        """SC_gt per stride from the batch's label maps (void = -1)."""
        sem = batch["sem"][idx].to(self.device)
        inst = batch["inst"][idx].to(self.device)
        return {s: sc_gt(f, stride=s, semantic=sem, instance=inst, ignore_label=-1, valid_hw=valid,
                         seed=self.seed)["SC_gt"] for s, f in feats.items()}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _finite(v: torch.Tensor) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None
