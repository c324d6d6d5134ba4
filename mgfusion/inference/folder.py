"""Predicting a set of inputs into an output folder, resumably (what ``tools/predict.py`` runs).

Layout of the output folder::

    predict_manifest.json            the fingerprint of model + settings (a rerun with others is refused)
    done.jsonl                       one line per finished input: {"name", "path"}
    overlay/<name>.png               detectron2 Visualizer overlay                     (outputs: overlay)
    semantic/<name>.png              class ids, 255 = no class                         (outputs: semantic)
    instances/<name>.json            COCO-style instances, RLE masks                   (outputs: instances)
    panoptic/<name>.png, <name>.json COCO panoptic PNG + annotation; panoptic.json     (outputs: panoptic)
    video/<name>.mp4                 overlay video at the source frame rate            (video inputs)

Inputs whose name is in ``done.jsonl`` (for the same path) and whose files all exist are skipped, so a killed run
continues where it stopped. Unreadable inputs are reported by path and skipped.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from mgfusion.utils.io import atomic_write_text

from .predictor import TASKS, Predictor
from .sources import InputItem, expand_inputs, iter_video_frames, read_image, video_info
from .writers import (
    overlay_image,
    write_instances_json,
    write_overlay_png,
    write_panoptic,
    write_panoptic_index,
    write_semantic_png,
)

__all__ = [
    "MANIFEST",
    "OUTPUT_KINDS",
    "FingerprintMismatchError",
    "FolderReport",
    "output_kinds_for",
    "predict_to_folder",
]

logger = logging.getLogger(__name__)

#: per-image output kinds and the model task each needs (None: any task).
OUTPUT_KINDS = {"overlay": None, "semantic": "semantic", "instances": "instance", "panoptic": "panoptic"}
MANIFEST = "predict_manifest.json"
DONE_INDEX = "done.jsonl"


class FingerprintMismatchError(ValueError):
    """The output folder holds predictions made with another model or other settings."""


@dataclass
class FolderReport:
    """What a :func:`predict_to_folder` call did: input names written now, skipped as already done, and failed
    inputs as (path, reason)."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def readable(self) -> int:
        return len(self.written) + len(self.skipped)


def output_kinds_for(tasks: Sequence[str], requested: Sequence[str] | None) -> list[str]:
    """The requested output kinds the model can produce (None: all it can). Semantic labels can also come from a
    panoptic model. Unknown kinds raise ValueError."""
    unknown = sorted(set(requested or []) - set(OUTPUT_KINDS))
    if unknown:
        raise ValueError(f"unknown outputs {unknown}; valid: {list(OUTPUT_KINDS)}")
    possible = [k for k, task in OUTPUT_KINDS.items()
                if task is None or task in tasks or (k == "semantic" and "panoptic" in tasks)]
    if requested is None:
        return possible
    impossible = [k for k in requested if k not in possible]
    if impossible:
        raise ValueError(f"outputs {impossible} need tasks the model does not predict (it predicts {list(tasks)})")
    return [k for k in OUTPUT_KINDS if k in requested]


def _expected_files(out: Path, name: str, kinds: Sequence[str]) -> list[Path]:
    files = {"overlay": [out / "overlay" / f"{name}.png"], "semantic": [out / "semantic" / f"{name}.png"],
             "instances": [out / "instances" / f"{name}.json"],
             "panoptic": [out / "panoptic" / f"{name}.png", out / "panoptic" / f"{name}.json"]}
    return [f for k in kinds for f in files[k]]


def _check_manifest(out: Path, fingerprint: dict[str, Any], info: dict[str, Any]) -> None:
    path = out / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8")).get("fingerprint", {})
        differing = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        if differing:
            details = "; ".join(f"{k}: {old.get(k)!r} there, {fingerprint.get(k)!r} now" for k in differing)
            raise FingerprintMismatchError(
                f"{out} holds predictions of another model or other settings ({details}). Predict into another "
                "output folder, or delete that one to start over.")
        return
    atomic_write_text(path, json.dumps({"fingerprint": fingerprint, "info": info}, indent=2) + "\n")


def _read_done(out: Path) -> dict[str, str]:
    done: dict[str, str] = {}
    path = out / DONE_INDEX
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                done[row["name"]] = row["path"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line torn by a kill: that input is redone
    return done


def _mark_done(out: Path, item: InputItem) -> None:
    with open(out / DONE_INDEX, "a", encoding="utf-8") as f:
        f.write(json.dumps({"name": item.name, "path": os.path.abspath(item.path)}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _is_done(out: Path, item: InputItem, done: dict[str, str], kinds: Sequence[str]) -> bool:
    recorded = done.get(item.name)
    if recorded is None:
        return False
    if recorded != os.path.abspath(item.path):
        raise FingerprintMismatchError(f"{out} already holds predictions named {item.name!r} for {recorded}, not for "
                                       f"{item.path}; predict these inputs into another output folder")
    files = [out / "video" / f"{item.name}.mp4"] if item.kind == "video" else _expected_files(out, item.name, kinds)
    return all(f.is_file() for f in files)


def _chunks(items: Sequence[InputItem], size: int) -> Iterator[list[InputItem]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _write_image_outputs(out: Path, item: InputItem, image: np.ndarray, pred: Any, predictor: Predictor,
                         kinds: Sequence[str], overlay_task: str | None) -> None:
    classes = predictor.classes
    for kind in kinds:
        if kind == "overlay":
            write_overlay_png(out / "overlay" / f"{item.name}.png", image, pred, classes, task=overlay_task,
                              score_threshold=predictor.score_threshold)
        elif kind == "semantic":
            write_semantic_png(out / "semantic" / f"{item.name}.png", pred, classes.num_classes)
        elif kind == "instances":
            write_instances_json(out / "instances" / f"{item.name}.json", pred, classes)
        elif kind == "panoptic":
            write_panoptic(out / "panoptic" / f"{item.name}.png", out / "panoptic" / f"{item.name}.json", pred,
                           classes)


def _predict_video(out: Path, item: InputItem, predictor: Predictor, overlay_task: str | None,
                   progress: bool) -> None:
    """Overlay video ``video/<name>.mp4`` at the source frame rate, written to a temporary file and renamed."""
    fps, frames, width, height = video_info(item.path)
    target = out / "video" / f"{item.name}.mp4"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp.mp4", dir=target.parent)
    os.close(fd)
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    written = 0
    try:
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write an mp4v video to {tmp}")
        bar = tqdm(total=frames or None, desc=f"video {item.name}", unit="frame", disable=not progress)
        batch: list[np.ndarray] = []

        def flush() -> None:
            nonlocal written
            preds = predictor.predict_arrays(batch, [f"{item.path}#{written + i}" for i in range(len(batch))])
            for frame, pred in zip(batch, preds):
                overlay = overlay_image(frame, pred, predictor.classes, task=overlay_task,
                                        score_threshold=predictor.score_threshold)
                writer.write(cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
            written += len(batch)
            bar.update(len(batch))
            batch.clear()

        for frame in iter_video_frames(item.path):
            batch.append(frame)
            if len(batch) == predictor.batch_size:
                flush()
        if batch:
            flush()
        bar.close()
        writer.release()
        if written == 0:
            raise OSError(f"video {item.path} has no decodable frames")
        os.replace(tmp, target)
    finally:
        writer.release()
        if os.path.exists(tmp):
            os.unlink(tmp)


def predict_to_folder(predictor: Predictor, inputs: str | os.PathLike | Sequence[str | os.PathLike],
                      output_dir: str | os.PathLike, *, outputs: Sequence[str] | None = None,
                      overlay_task: str | None = None, progress: bool = True) -> FolderReport:
    """Predict every input into ``output_dir`` (layout in the module docstring); resumable.

    Args:
        predictor: the model.
        inputs: image / folder / glob / ``.txt`` list / video, or a list of them (:func:`expand_inputs`).
        outputs: output kinds (``overlay``, ``semantic``, ``instances``, ``panoptic``); None = all the model has.
        overlay_task: ``panoptic`` | ``instance`` | ``semantic`` drawn in overlays; None = the richest.
        progress: tqdm progress bars (with ETA) on stderr.

    Raises:
        FingerprintMismatchError: the folder holds predictions of another model/settings (keys named).
    """
    if overlay_task is not None and overlay_task not in predictor.tasks:
        raise ValueError(f"overlay_task={overlay_task!r} is not a task of the model ({list(predictor.tasks)}); "
                         f"valid: {list(TASKS)}")
    kinds = output_kinds_for(predictor.tasks, outputs)
    items = expand_inputs(inputs)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = {**predictor.fingerprint(), "outputs": kinds, "overlay_task": overlay_task}
    _check_manifest(out, fingerprint, {"weights": str(predictor.weights), "iteration": predictor.iteration,
                                       "model_tasks": list(predictor.tasks)})
    for kind in kinds:
        (out / kind).mkdir(exist_ok=True)
    done = _read_done(out)
    report = FolderReport()
    pending = []
    for item in items:
        (report.skipped if _is_done(out, item, done, kinds) else pending).append(item)
    if report.skipped:
        logger.info("%d of %d inputs already done in %s; skipping them", len(report.skipped), len(items), out)
        report.skipped = [i.name for i in report.skipped]
    images = [i for i in pending if i.kind == "image"]
    bar = tqdm(total=len(images), desc="predict", unit="img", disable=not progress or not images)
    for chunk in _chunks(images, predictor.batch_size):
        readable, arrays = [], []
        for item in chunk:
            try:
                arrays.append(read_image(item.path))
                readable.append(item)
            except OSError as err:
                report.failed.append((item.path, str(err)))
                logger.warning("skipping unreadable input %s: %s", item.path, err)
        if readable:
            for item, image, pred in zip(readable, arrays,
                                         predictor.predict_arrays(arrays, [i.path for i in readable])):
                _write_image_outputs(out, item, image, pred, predictor, kinds, overlay_task)
                _mark_done(out, item)
                report.written.append(item.name)
        bar.update(len(chunk))
    bar.close()
    for item in (i for i in pending if i.kind == "video"):
        try:
            _predict_video(out, item, predictor, overlay_task, progress)
        except OSError as err:
            report.failed.append((item.path, str(err)))
            logger.warning("skipping unreadable video %s: %s", item.path, err)
            continue
        _mark_done(out, item)
        report.written.append(item.name)
    if "panoptic" in kinds:
        annotations = [json.loads(p.read_text(encoding="utf-8"))
                       for p in sorted((out / "panoptic").rglob("*.json"))]
        write_panoptic_index(out / "panoptic.json", annotations, predictor.classes)
    return report
