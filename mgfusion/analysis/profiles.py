"""Profile folders written by ``tools/profile_encoders.py``: find them and read their per-stride SC/EF means.

A profile folder holds ``summary.json`` (``encoders``: ``{encoder: {stride: {metric: {"mean", "std", "count"}}}}``,
``source``, ``num_images``, ``recommendation``) and ``fingerprint.json`` (``compared``: the resolved metric
configuration, input, encoders and images that produced the numbers). ``tools/profile_encoders.py ... -m`` writes
one such folder per job under its ``output_dir``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgfusion.profiling.selection import Recommendation, recommend_pair

from .errors import AnalysisError

__all__ = ["Profile", "find_profile_folders", "load_profile"]

SUMMARY = "summary.json"
FINGERPRINT = "fingerprint.json"


@dataclass(frozen=True)
class Profile:
    """One profile run: its folder, ``summary.json`` and ``fingerprint.json`` (None when absent)."""

    folder: Path
    summary: dict[str, Any]
    fingerprint: dict[str, Any] | None

    @property
    def encoders(self) -> list[str]:
        """The profiled encoders, in table order."""
        return list(self.summary["encoders"])

    def has(self, encoder: str) -> bool:
        """Whether ``encoder`` was profiled."""
        return encoder in self.summary["encoders"]

    def means(self, encoder: str, metric: str) -> dict[int, float]:
        """``{stride: mean}`` of ``metric`` (e.g. ``"SC"``, ``"EF"``) for ``encoder``; strides in increasing order."""
        table = self.summary["encoders"]
        if encoder not in table:
            raise AnalysisError(f"encoder {encoder!r} is not in profile {self.folder}; profiled: "
                                f"{', '.join(table)}. Name the profile's encoder explicitly (see --help)")
        out: dict[int, float] = {}
        for stride, metrics in table[encoder].items():
            v = (metrics.get(metric) or {}).get("mean")
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise AnalysisError(f"{self.folder / SUMMARY}: encoders.{encoder}.{stride}.{metric}.mean is {v!r}, "
                                    "not a finite number; re-run the profile or leave this metric out")
            out[int(stride)] = float(v)
        if not out:
            raise AnalysisError(f"{self.folder / SUMMARY}: encoder {encoder!r} has no profiled strides")
        return dict(sorted(out.items()))

    def recommendation(self) -> Recommendation:
        """The recommended master / auxiliary / stride (the profiler's own rule, recomputed from the means)."""
        try:
            return recommend_pair(self.summary["encoders"])
        except ValueError as e:
            raise AnalysisError(f"{self.folder}: no recommendation ({e})") from None

    def try_recommendation(self) -> tuple[Recommendation | None, str | None]:
        """``(recommendation, None)``, or ``(None, why there is none)`` (e.g. a single encoder)."""
        try:
            return self.recommendation(), None
        except AnalysisError as e:
            return None, str(e)

    def encoder_scores(self, metric: str, encoders: Sequence[str] | None = None) -> dict[str, float]:
        """Per encoder the summary the recommendation rule uses: peak over strides for ``EF``, else the mean over
        strides (e.g. mean SC)."""
        out = {}
        for e in encoders or self.encoders:
            v = list(self.means(e, metric).values())
            out[e] = max(v) if metric == "EF" else sum(v) / len(v)
        return out

    def encoder_order(self, metric: str, encoders: Sequence[str] | None = None) -> list[str]:
        """Encoders from the highest :meth:`encoder_scores` to the lowest; ties in name order."""
        scores = self.encoder_scores(metric, encoders)
        return sorted(sorted(scores), key=lambda e: scores[e], reverse=True)

    def compared(self, section: str) -> Any:
        """A section of ``fingerprint.json``'s ``compared`` part (``metrics``, ``input``, ``encoders``, ``images``)."""
        if self.fingerprint is None:
            raise AnalysisError(f"{self.folder} has no {FINGERPRINT}: the settings behind its numbers are unknown. "
                                "Re-run the profile with a current tools/profile_encoders.py")
        compared = self.fingerprint.get("compared") or {}
        if section not in compared:
            raise AnalysisError(f"{self.folder / FINGERPRINT} has no compared.{section}")
        return compared[section]

    def describe_source(self) -> str:
        """What was profiled, e.g. ``dataset synthetic_val, 8 images`` or ``images /data/x, 100 images``."""
        src = self.summary.get("source") or {}
        what = (f"dataset {src['dataset']}" if src.get("dataset") else
                f"images {src['images']}" if src.get("images") else "unknown source")
        return f"{what}, {self.summary.get('num_images', '?')} images"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AnalysisError(f"{path} is not valid JSON ({e})") from None


def load_profile(folder: str | os.PathLike) -> Profile:
    """Read a profile folder (or its ``summary.json``)."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    path = folder / SUMMARY
    if not path.is_file():
        raise AnalysisError(f"{folder} has no {SUMMARY}: not a finished profile of tools/profile_encoders.py")
    summary = _read_json(path)
    if not isinstance(summary, dict) or not isinstance(summary.get("encoders"), Mapping) or not summary["encoders"]:
        raise AnalysisError(f"{path} has no 'encoders' table; is it a summary.json of tools/profile_encoders.py?")
    fp_path = folder / FINGERPRINT
    fingerprint = _read_json(fp_path) if fp_path.is_file() else None
    return Profile(folder=folder, summary=summary, fingerprint=fingerprint)


def find_profile_folders(root: str | os.PathLike) -> list[Path]:
    """Every profile folder under ``root`` (``root`` itself when it is one), sorted; ``superseded/`` is skipped."""
    root = Path(root)
    if not root.is_dir():
        raise AnalysisError(f"{root} is not a folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in ("superseded", "plots"))
        if SUMMARY in filenames:
            found.append(Path(dirpath))
    if not found:
        raise AnalysisError(f"no profile under {root} (no {SUMMARY}); run tools/profile_encoders.py first")
    return sorted(found)
