"""Sharded profiling: the unfinished images split across ``num_processes`` ranks started by the training launcher.

Design:

* the main process opens the run folder (lock, fingerprint, resume index) and lists the unfinished images, then
  starts the ranks with :func:`mgfusion.engine.distributed.launch_workers` (detectron2's ``launch``: NCCL on GPUs,
  one GPU per rank; gloo processes on CPU);
* :func:`split_batches` cuts the unfinished images into the batches a single process would form and deals them out
  round-robin, so every batch (and with it every padded tensor and every per-image value) is exactly what a single
  process computes;
* each rank streams its batches (:func:`~.stream.stream_images`) into its own ``shards/rank<k>.jsonl``
  (:class:`~.store.ShardWriter`) and writes ``shards/rank<k>.json`` (unreadable / skipped images, timings);
* back in the main process, :meth:`~.store.ResultStore.merge_shards` moves the shard records into
  ``per_image.jsonl`` in the canonical order (source image order, then row order). A killed sharded run leaves
  its shard files; the next run merges them before deciding what is left to do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mgfusion.utils.device import resolve_device
from mgfusion.utils.io import atomic_write_text
from mgfusion.utils.plugins import import_modules, load_entry_point_plugins

from .entries import resolve_entries
from .pca import PCAMaps
from .settings import ProfileSettings
from .sources import ImageRecord
from .store import SHARDS_NAME, ShardWriter
from .stream import RowStages, stream_images


def split_batches(records: Sequence[ImageRecord], batch_size: int, world_size: int) -> list[list[ImageRecord]]:
    """Per rank, the records of batches ``rank, rank + world_size, ...`` of ``records`` cut into ``batch_size``."""
    batches = [list(records[i: i + batch_size]) for i in range(0, len(records), batch_size)]
    return [[r for b in batches[rank::world_size] for r in b] for rank in range(world_size)]


def meta_path(folder: str | os.PathLike, rank: int) -> Path:
    """``shards/rank<k>.json``: what rank k reports back (failures, skipped images, timings)."""
    return Path(folder) / SHARDS_NAME / f"rank{int(rank)}.json"


def rank_device(setting: str, local_rank: int) -> torch.device:
    """The device of a rank: ``cuda:<local rank>`` when the setting resolves to CUDA, else the CPU."""
    device = resolve_device(setting)
    return torch.device("cuda", local_rank) if device.type == "cuda" else device


def shard_worker(settings: ProfileSettings, shards: list[list[ImageRecord]], done: set[tuple[str, str]],
                 out_dir: str, pca_ids: list[str]) -> None:
    """The body of one rank (module-level so that spawned processes can unpickle it)."""
    from detectron2.utils import comm

    rank, local_rank = comm.get_rank(), comm.get_local_rank()
    if "OMP_NUM_THREADS" not in os.environ:  # share the CPU cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))
    records = shards[rank]
    failures: dict[str, str] = {}
    skipped: dict[str, str] = {}
    timing: dict[str, Any] = {}
    if records:
        import_modules(settings.imports)
        load_entry_point_plugins()
        device = rank_device(settings.device, local_rank)
        stages = RowStages(resolve_entries(settings), settings, device)
        writer = ShardWriter(out_dir, rank, done)
        failures, skipped = stream_images(records, stages, settings, done=lambda e, i: (e, i) in writer.done,
                                          sink=writer.append, pca=PCAMaps(out_dir, pca_ids),
                                          progress=settings.progress and rank == 0)
        timing = stages.timing()
    atomic_write_text(meta_path(out_dir, rank), json.dumps({"rank": rank, "images": len(records),
                                                             "failures": failures, "skipped": skipped,
                                                             "timing": timing}) + "\n")


def collect_meta(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Read and delete the ranks' ``shards/rank<k>.json`` reports (rank order); the emptied folder goes too."""
    root = Path(folder) / SHARDS_NAME
    if not root.is_dir():
        return []
    metas = []
    for p in sorted(root.glob("rank*.json"), key=lambda p: int(p.stem[4:])):
        metas.append(json.loads(p.read_text(encoding="utf-8")))
        p.unlink()
    if not any(root.iterdir()):
        root.rmdir()
    return metas


def merge_timing(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sum the ranks' timings (seconds of work, not wall time) and image counts."""
    out: dict[str, Any] = {"encoder_s": 0.0, "metrics_s": 0.0, "controls_s": 0.0, "random_init_s": 0.0, "images": 0,
                           "per_encoder": {}}
    for t in parts:
        if not t:
            continue
        for k in ("encoder_s", "metrics_s", "controls_s", "random_init_s", "images"):
            out[k] += t.get(k, 0)
        for name, per in t.get("per_encoder", {}).items():
            acc = out["per_encoder"].setdefault(name, {"encoder_s": 0.0, "metrics_s": 0.0, "images": 0})
            for k in acc:
                acc[k] += per.get(k, 0)
    return out
