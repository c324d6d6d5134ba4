"""The streaming loop of a profile, shared by the single-process run and every rank of a sharded run.

:class:`RowStages` builds, once per process, one :class:`~.features.FeatureMetrics` per encoder row and random-init
control, and one :class:`~.controls.ControlFeatures` for the noise / pixel controls. :func:`stream_images` runs the
unfinished images through them batch by batch and hands each batch's records to a sink (the run folder's
:class:`~.store.ResultStore`, or a rank's :class:`~.store.ShardWriter`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from tqdm import tqdm

from .controls import ControlFeatures
from .entries import NOISE, ProfileEntry, build_entry_encoder
from .features import FeatureMetrics, MetricScorer
from .loader import ImageStream
from .pca import PCAMaps
from .settings import ProfileSettings
from .sources import ImageRecord


class RowStages:
    """The stages of every row of a profile, built on ``device``.

    ``encoders``: ``{row name: FeatureMetrics}`` (encoder rows and random-init controls); ``controls``: the noise /
    pixel stage or None.
    """

    def __init__(self, entries: Sequence[ProfileEntry], s: ProfileSettings, device: torch.device) -> None:
        self.scorer = MetricScorer(variant=s.variant, metric_hparams=s.metric_hparams, seed=s.seed,
                                   supervised=s.supervised)
        self.encoders = {e.name: FeatureMetrics(e.name, build_entry_encoder(e, s, device), self.scorer, amp=s.amp,
                                                device=device, kind=e.kind)
                         for e in entries if e.uses_encoder}
        first = next(iter(self.encoders.values())).encoder
        names = [e.name for e in entries if e.source in ("noise", "pixels")]
        self.controls = None
        if names:
            ch = s.control("noise_channels")
            channels = dict(first.out_channels) if ch == "auto" else dict(zip(first.out_strides, ch))
            self.controls = ControlFeatures(names, self.scorer, strides=first.out_strides, seed=s.seed,
                                            noise_channels=channels if NOISE in names else None, device=device)

    def row_names(self) -> list[str]:
        """Every row these stages compute, encoders first."""
        return list(self.encoders) + (self.controls.names if self.controls else [])

    def timing(self) -> dict[str, Any]:
        """Seconds per part: encoder rows (encoder / metrics), random-init controls, noise + pixel controls."""
        enc = {n: dict(st.timing) for n, st in self.encoders.items() if st.kind == "encoder"}
        rnd = {n: dict(st.timing) for n, st in self.encoders.items() if st.kind == "control"}
        ctl = dict(self.controls.timing) if self.controls else {"controls_s": 0.0, "images": 0}
        return {"encoder_s": sum(t["encoder_s"] for t in enc.values()),
                "metrics_s": sum(t["metrics_s"] for t in enc.values()),
                "controls_s": ctl["controls_s"],
                "random_init_s": sum(t["encoder_s"] + t["metrics_s"] for t in rnd.values()),
                "images": max([t["images"] for t in enc.values()] + [ctl["images"]], default=0),
                "per_encoder": {**enc, **rnd}}


def stream_images(todo: Sequence[ImageRecord], stages: RowStages, s: ProfileSettings, *,
                  done: Callable[[str, str], bool], sink: Callable[[Iterable[Mapping[str, Any]]], Any],
                  pca: PCAMaps, progress: bool) -> tuple[dict[str, str], dict[str, str]]:
    """Profile ``todo`` (batches of ``s.batch_size`` in order) with every row not ``done(row, image_id)``.

    Returns ``(failures, skipped)``: ``{image_id: reason}`` of unreadable and too small / elongated images.
    """
    failures: dict[str, str] = {}
    skipped: dict[str, str] = {}
    stream = ImageStream(todo, batch_size=s.batch_size, resolution=s.resolution, max_size=s.max_size,
                         num_workers=s.num_workers, load_labels=s.supervised, min_side=s.min_image_side,
                         max_aspect=s.max_aspect_ratio)
    bar = tqdm(total=len(stream), desc="profile", unit="img", disable=not progress, dynamic_ncols=True)
    for batch in stream:
        for image_id, err in batch["errors"]:
            failures[image_id] = err
            tqdm.write(f"[profile] skipped unreadable image: {err}")
        for image_id, why in batch["skipped"]:
            skipped[image_id] = why
            tqdm.write(f"[profile] skipped image: {why}")
        lines: list[dict[str, Any]] = []
        for name, stage in stages.encoders.items():
            keep = [i for i, iid in enumerate(batch["ids"]) if not done(name, iid)]
            if keep:
                encoded = stage(batch, keep)
                if stage.kind == "encoder":
                    pca.save(name, encoded)
                lines += encoded.records
        if stages.controls is not None:
            keep = {n: [i for i, iid in enumerate(batch["ids"]) if not done(n, iid)] for n in stages.controls.names}
            lines += stages.controls(batch, keep)
        sink(lines)
        bar.update(len(batch["ids"]) + len(batch["errors"]) + len(batch["skipped"]))
        bar.set_postfix(failed=len(failures), skipped=len(skipped))
    bar.close()
    return failures, skipped

