"""Append-only, crash-safe store of per-image profiling results (JSON Lines).

Each line is one (encoder, image) result with all strides. Lines are flushed and fsynced per batch; a line cut by a
kill is dropped (and the file truncated back to the last complete line) when the store is reopened, so a resumed
run recomputes exactly the unfinished images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator


class ResultStore:
    """Per-image results in ``path`` (JSONL); ``done`` holds the finished ``(encoder, image_id)`` pairs."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[tuple[str, str]] = set()
        self._repair_and_index()

    def _repair_and_index(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = data.rfind(b"\n") + 1  # bytes after the last newline belong to a line cut by a kill
        if good_end != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        for rec in self.records():
            self.done.add((rec["encoder"], rec["image_id"]))

    def records(self) -> Iterator[dict[str, Any]]:
        """All stored records, in write order (unparsable lines are skipped)."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Append records durably (flush + fsync); returns how many were written."""
        lines = [json.dumps(r, sort_keys=True) + "\n" for r in records]
        if not lines:
            return 0
        with open(self.path, "a", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        for line in lines:
            r = json.loads(line)
            self.done.add((r["encoder"], r["image_id"]))
        return len(lines)
