"""The run folder's durable state: per-image results (JSON Lines), their fingerprint, and the folder lock.

Opening a :class:`ResultStore`:

1. locks the folder (:class:`~mgfusion.profiling.lock.RunLock`; a second job fails at once);
2. with ``fresh=True`` moves every earlier result to ``superseded/<time>/`` (nothing is deleted);
3. compares the stored ``fingerprint.json`` with this run's (:mod:`~mgfusion.profiling.fingerprint`) and refuses a
   mismatch before writing anything; results without a fingerprint are refused the same way;
4. drops a last line cut by a kill (truncating the file back to its last complete line), indexes the finished
   ``(encoder, image_id)`` pairs, and refuses a file with a damaged complete line or a repeated pair.

Records are appended per batch with flush + fsync; :meth:`ResultStore.append` refuses a pair that is already stored,
so a record is never doubled.

Sharded runs (``num_processes > 1``): while the main process holds the lock, each rank appends its records to its
own ``shards/rank<k>.jsonl`` (:class:`ShardWriter`); :meth:`ResultStore.merge_shards` then moves them into
``per_image.jsonl`` in a canonical order (image order of the source, then row order) and deletes the shard files.
Shards left by a killed run are merged when the folder is opened again, so their records are kept.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgfusion.utils.io import atomic_write_text

from .fingerprint import FingerprintMismatchError, check_compatible, merged
from .lock import LOCK_NAME, RunLock

if TYPE_CHECKING:
    from typing_extensions import Self

RESULTS_NAME = "per_image.jsonl"
FINGERPRINT_NAME = "fingerprint.json"
RUNS_NAME = "runs.jsonl"
SUPERSEDED_NAME = "superseded"
SHARDS_NAME = "shards"


class ResultStoreError(RuntimeError):
    """The stored results are damaged (not just a cut last line) or were doubled; the message names the line."""


def archive_previous(folder: Path) -> Path | None:
    """Move everything in ``folder`` except the lock, logs and older archives to ``superseded/<time>/``."""
    entries = [p for p in folder.iterdir()
               if p.name not in (LOCK_NAME, SUPERSEDED_NAME) and not p.name.endswith(".log")]
    if not entries:
        return None
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = folder / SUPERSEDED_NAME / stamp
    k = 1
    while dest.exists():
        k += 1
        dest = folder / SUPERSEDED_NAME / f"{stamp}-{k}"
    dest.mkdir(parents=True)
    for p in entries:
        shutil.move(str(p), str(dest / p.name))
    return dest


class ResultStore:
    """Per-image results of one run folder; ``done`` holds the finished ``(encoder, image_id)`` pairs.

    Args:
        folder: the run folder (created if missing).
        fingerprint: this run's fingerprint (:func:`~mgfusion.profiling.fingerprint.build_fingerprint`).
        fresh: move earlier results to ``superseded/`` instead of resuming them.

    Use as a context manager (or call :meth:`close`) so the folder lock is released.
    """

    def __init__(self, folder: str | os.PathLike, fingerprint: Mapping[str, Any], *, fresh: bool = False) -> None:
        self.folder = Path(folder)
        self.path = self.folder / RESULTS_NAME
        self.fingerprint_path = self.folder / FINGERPRINT_NAME
        self.done: set[tuple[str, str]] = set()
        self.superseded: Path | None = None
        self.lock = RunLock(self.folder).acquire()
        try:
            if fresh:
                self.superseded = archive_previous(self.folder)
            self.fingerprint = self._check_fingerprint(fingerprint)
            self._repair_and_index()
            atomic_write_text(self.fingerprint_path, json.dumps(self.fingerprint, indent=2) + "\n")
        except BaseException:
            self.lock.release()
            raise

    # ---- opening ---------------------------------------------------------------------------------------------
    def _check_fingerprint(self, current: Mapping[str, Any]) -> dict[str, Any]:
        if not self.fingerprint_path.exists():
            if self.path.exists() and self.path.stat().st_size > 0:
                raise FingerprintMismatchError(
                    f"{self.path} has no {FINGERPRINT_NAME} next to it (written by an older mgfusion, or the file "
                    "was removed), so the settings of its results cannot be checked. Nothing was written. Give a "
                    "new output_dir=..., or add fresh=true to move the old results to superseded/.")
            return dict(current)
        try:
            stored = json.loads(self.fingerprint_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ResultStoreError(f"{self.fingerprint_path} is damaged ({e}); give a new output_dir=... or "
                                   "fresh=true") from None
        check_compatible(stored, current, where=str(self.folder))
        return merged(stored, current)

    def _repair_and_index(self) -> None:
        if not self.path.exists():
            return
        _truncate_cut_line(self.path)
        first_line: dict[tuple[str, str], int] = {}
        for lineno, rec in _parse(self.path):
            key = (rec["encoder"], rec["image_id"])
            if key in first_line:
                raise ResultStoreError(f"{self.path}: lines {first_line[key]} and {lineno} both hold encoder "
                                       f"{key[0]!r}, image {key[1]!r}; the file was written twice. Give a new "
                                       "output_dir=... or fresh=true")
            first_line[key] = lineno
        self.done = set(first_line)

    # ---- reading and writing ---------------------------------------------------------------------------------
    def records(self) -> Iterator[dict[str, Any]]:
        """All stored records, in write order."""
        if self.path.exists():
            for _, rec in _parse(self.path):
                yield rec

    def append(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Append records durably (flush + fsync); returns how many were written.

        Raises ValueError if a record's ``(encoder, image_id)`` is already stored or repeated in ``records``.
        """
        if not self.lock.held:
            raise RuntimeError(f"ResultStore of {self.folder} is closed")
        records = list(records)
        keys = _new_keys(records, self.done, self.path)
        if not records:
            return 0
        _append_lines(self.path, records)
        self.done.update(keys)
        return len(records)

    def merge_shards(self, order: Callable[[Mapping[str, Any]], Any]) -> int:
        """Move the records of ``shards/rank*.jsonl`` into ``per_image.jsonl`` sorted by ``order(record)``, then
        delete the shard files; records already stored are skipped. Returns how many were added."""
        files = shard_files(self.folder)
        if not files:
            return 0
        new: dict[tuple[str, str], dict[str, Any]] = {}
        for path in files:
            _truncate_cut_line(path)
            for _, rec in _parse(path):
                key = (rec["encoder"], rec["image_id"])
                if key not in self.done and key not in new:
                    new[key] = rec
        added = self.append(sorted(new.values(), key=order))
        for path in files:
            path.unlink()
        return added

    def log_run(self, entry: Mapping[str, Any]) -> None:
        """Append one line describing this invocation (time, command, settings) to ``runs.jsonl``."""
        line = {"time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), **entry}
        with open(self.folder / RUNS_NAME, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    # ---- lifetime --------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the folder lock."""
        self.lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _truncate_cut_line(path: Path) -> None:
    """Drop the bytes after the last newline of ``path`` (a line cut by a kill)."""
    data = path.read_bytes()
    good_end = data.rfind(b"\n") + 1
    if good_end != len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
            f.flush()
            os.fsync(f.fileno())


def _parse(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of every non-empty line of a records file; a damaged line is an error."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                rec["encoder"], rec["image_id"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ResultStoreError(
                    f"{path}: line {lineno} is not a profiling record ({line[:80]!r}); the file is "
                    "damaged beyond a cut last line. Give a new output_dir=... or fresh=true") from None
            yield lineno, rec


def _new_keys(records: list[Mapping[str, Any]], done: set[tuple[str, str]], path: Path) -> list[tuple[str, str]]:
    """The ``(encoder, image_id)`` keys of ``records``; ValueError if one is in ``done`` or repeated."""
    keys = [(r["encoder"], r["image_id"]) for r in records]
    repeated = [k for k in keys if k in done] or [k for i, k in enumerate(keys) if k in keys[:i]]
    if repeated:
        raise ValueError(f"refusing to store encoder {repeated[0][0]!r}, image {repeated[0][1]!r} twice in {path}")
    return keys


def _append_lines(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in records)
        f.flush()
        os.fsync(f.fileno())


def shard_files(folder: str | os.PathLike) -> list[Path]:
    """The shard record files of a run folder, in rank order."""
    root = Path(folder) / SHARDS_NAME
    if not root.is_dir():
        return []
    return sorted(root.glob("rank*.jsonl"), key=lambda p: int(p.stem[4:]) if p.stem[4:].isdigit() else -1)


class ShardWriter:
    """Appends one rank's records to ``shards/rank<k>.jsonl`` (flush + fsync per batch).

    Used by the worker processes of a sharded run while the main process holds the folder lock; ``done`` is the
    main store's index, so a pair stored there (or by this writer) is never written again.
    """

    def __init__(self, folder: str | os.PathLike, rank: int, done: Iterable[tuple[str, str]]) -> None:
        self.path = Path(folder) / SHARDS_NAME / f"rank{int(rank)}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done = set(done)

    def append(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Append records durably; raises ValueError for a pair already stored."""
        records = list(records)
        keys = _new_keys(records, self.done, self.path)
        if records:
            _append_lines(self.path, records)
        self.done.update(keys)
        return len(records)
