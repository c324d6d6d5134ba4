"""Helpers shared by the scripts in ``benchmarks/``: timing, machine description, table and JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Any, Callable, Sequence

import torch

from .io import atomic_write_text


def time_call(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1, sync: bool = True) -> dict[str, float]:
    """Run ``fn`` ``warmup`` times, then time ``repeats`` runs; seconds as median / min / max / mean."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync and torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync and torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "mean_s": statistics.fmean(times), "repeats": repeats}


def machine_info() -> dict[str, Any]:
    """Where a benchmark ran: CPU, threads, torch version, GPU name if any."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (floats to 3 significant decimals)."""
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def write_results(path: str | os.PathLike, name: str, rows: Sequence[dict[str, Any]], **extra: Any) -> None:
    """Write ``{"benchmark": name, "machine": ..., "rows": rows, **extra}`` as JSON (atomically)."""
    payload = {"benchmark": name, "machine": machine_info(), "rows": list(rows), **extra}
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
