"""Control rows of a profile: features that carry no learned signal, scored exactly like an encoder's.

* :func:`noise_features`: i.i.d. standard-normal features with a given channel count per stride, drawn per image
  from a CPU generator seeded with ``sha256(seed, image id, stride)``, so a control row does not depend on the
  batch, the rank, the device or a resume;
* :func:`pixel_features`: the image's RGB values / 255 average-pooled over ``stride x stride`` blocks (the last,
  partial blocks average their own pixels), 3 channels.

:class:`ControlFeatures` computes both for a batch (each image once, however many encoders are profiled) and
scores them with the profile's :class:`~mgfusion.profiling.features.MetricScorer`. The random-init control is an
encoder row (:class:`~mgfusion.profiling.features.FeatureMetrics` over a random-init encoder).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .entries import NOISE, PIXELS
from .features import BatchPart, MetricScorer, select, sync


def image_seed(seed: int, image_id: str, stride: int) -> int:
    """A 63-bit generator seed from the profile seed, the image id and the stride."""
    digest = hashlib.sha256(f"{seed}\t{image_id}\t{stride}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def noise_features(ids: Sequence[str], valid_hw: torch.Tensor, padded_hw: tuple[int, int],
                   channels: Mapping[int, int], *, seed: int, device: torch.device) -> dict[int, torch.Tensor]:
    """``{stride: (B, channels[stride], ceil(H/s), ceil(W/s))}`` standard-normal features (zero outside each image's
    own ``ceil(h/s) x ceil(w/s)`` grid); ``padded_hw`` = (H, W) of the padded batch, ``valid_hw`` (B,2)."""
    out = {}
    for s, c in channels.items():
        grid = (math.ceil(padded_hw[0] / s), math.ceil(padded_hw[1] / s))
        feats = torch.zeros(len(ids), int(c), *grid)
        for b, iid in enumerate(ids):
            hf, wf = (math.ceil(int(v) / s) for v in valid_hw[b])
            gen = torch.Generator(device="cpu").manual_seed(image_seed(seed, iid, s))
            feats[b, :, :hf, :wf] = torch.randn(int(c), hf, wf, generator=gen)
        out[int(s)] = feats.to(device)
    return out


def pixel_features(images: torch.Tensor, valid_hw: torch.Tensor, strides: Sequence[int]) -> dict[int, torch.Tensor]:
    """``{stride: (B,3,ceil(H/s),ceil(W/s))}``: each image's RGB / 255 average-pooled on its own valid region.

    ``images``: (B,3,H,W) uint8, zero-padded; ``valid_hw``: (B,2) the real sizes.
    """
    b, _, h, w = images.shape
    rgb = images.float() / 255.0
    same = bool((valid_hw[:, 0] == h).all() and (valid_hw[:, 1] == w).all())
    out = {}
    for s in strides:
        if same:
            out[int(s)] = F.avg_pool2d(rgb, s, stride=s, ceil_mode=True)
            continue
        feats = rgb.new_zeros(b, 3, math.ceil(h / s), math.ceil(w / s))
        for i in range(b):
            vh, vw = (int(v) for v in valid_hw[i])
            pooled = F.avg_pool2d(rgb[i: i + 1, :, :vh, :vw], s, stride=s, ceil_mode=True)
            feats[i, :, : pooled.shape[-2], : pooled.shape[-1]] = pooled[0]
        out[int(s)] = feats
    return out


class ControlFeatures:
    """The noise and pixel control rows of a batch.

    Args:
        names: the control rows to compute (a subset of ``control:noise``, ``control:pixels``).
        scorer: the profile's metric stage.
        noise_channels: ``{stride: channels}`` of the noise control (needed with ``control:noise``).
        strides: the strides of every row.
        seed: the profile seed (noise seeds derive from it).

    ``timing`` accumulates the seconds spent (feature construction + metrics) and the images done.
    """

    def __init__(self, names: Sequence[str], scorer: MetricScorer, *, strides: Sequence[int],
                 noise_channels: Mapping[int, int] | None, seed: int, device: torch.device) -> None:
        unknown = sorted(set(names) - {NOISE, PIXELS})
        if unknown:
            raise ValueError(f"ControlFeatures computes {NOISE} and {PIXELS}, not {unknown}")
        if NOISE in names and not noise_channels:
            raise ValueError("the noise control needs its channel count per stride")
        self.names, self.scorer, self.strides = list(names), scorer, [int(s) for s in strides]
        self.noise_channels = {int(s): int(c) for s, c in (noise_channels or {}).items()}
        self.seed, self.device = seed, device
        self.timing = {"controls_s": 0.0, "images": 0}

    def features(self, name: str, part: BatchPart) -> dict[int, torch.Tensor]:
        """The feature pyramid of control ``name`` for the images of ``part``."""
        if name == NOISE:
            return noise_features(part.ids, part.valid_hw.cpu(), tuple(part.images.shape[-2:]), self.noise_channels,
                                  seed=self.seed, device=self.device)
        return pixel_features(part.images, part.valid_hw, self.strides)

    def __call__(self, batch: Mapping[str, Any], keep: Mapping[str, Sequence[int]]) -> list[dict[str, Any]]:
        """Records of each control for its images ``keep[name]`` (indices into ``batch["ids"]``)."""
        t0 = time.perf_counter()
        records: list[dict[str, Any]] = []
        done: set[int] = set()
        for name in self.names:
            if keep.get(name):
                part = select(batch, keep[name], self.device)
                records += self.scorer.records(name, "control", self.features(name, part), part)
                done.update(keep[name])
        sync(self.device)
        self.timing["controls_s"] += time.perf_counter() - t0
        self.timing["images"] += len(done)
        return records
