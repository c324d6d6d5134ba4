"""Markdown / CSV text of analysis tables, and writing a table's files without overwriting finished ones."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mgfusion.utils.io import atomic_write_text

from .errors import AnalysisError

__all__ = ["csv_text", "fmt", "markdown_table", "write_table_files"]


def fmt(v: float | None, digits: int = 2, *, signed: bool = False) -> str:
    """A number for a table cell; None / NaN -> ``–``."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[Any]], *, right: Sequence[bool] | None = None) -> str:
    """A Markdown table; ``right[i]`` right-aligns column ``i`` (numbers)."""
    right = list(right) if right is not None else [False] * len(head)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(header: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV with the given columns (missing keys empty; NaN written as ``nan``)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(header), extrasaction="raise", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow(dict(row))
    return buf.getvalue()


def write_table_files(out_dir: str | os.PathLike, texts: Mapping[str, str],
                      figures: Mapping[str, Callable[[Path], None]] | None = None, *,
                      overwrite: bool = False) -> list[Path]:
    """Write ``{file name: text}`` and ``{file name: draw(path)}`` into ``out_dir``; returns the written paths.

    Every target is checked before anything is written: an existing file is an error unless ``overwrite``.
    """
    out = Path(out_dir)
    figures = dict(figures or {})
    targets = [out / name for name in [*texts, *figures]]
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise AnalysisError(f"{len(existing)} output file(s) exist already ({', '.join(str(p) for p in existing)}); "
                            "nothing was written. Give another --out folder, or --overwrite to replace them")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        atomic_write_text(out / name, text)
    for name, draw in figures.items():
        draw(out / name)
    return targets
