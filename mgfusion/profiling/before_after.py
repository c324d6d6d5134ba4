"""The before/after table of fine-tuned encoders (the paper's Table 8): SC and EF per stride, initial vs fine-tuned.

Rows come in pairs from :mod:`.entries`: a checkpoint row (``master@run``) and its initial row
(``master@run:initial``, whose ``of`` names the checkpoint row). Values are the dataset-level means of the
profile's variant (:func:`~mgfusion.profiling.report.summarize`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from .entries import ProfileEntry

# {row: {stride: {metric: {"mean": ...}}}}
Summary = Mapping[str, Mapping[int, Mapping[str, Mapping[str, Any]]]]


def _mean(summary: Summary, row: str, stride: int, metric: str) -> float | None:
    return ((summary.get(row, {}).get(stride) or {}).get(metric) or {}).get("mean")


def before_after(summary: Summary, entries: Sequence[ProfileEntry]) -> dict[str, Any]:
    """``{fine-tuned row: {"initial": row, "before": description, "after": description,
    "strides": {stride: {"SC": [before, after], "EF": [before, after]}}}}`` for every initial/fine-tuned pair."""
    by_name = {e.name: e for e in entries}
    out = {}
    for e in entries:
        if e.source != "initial" or e.of not in by_name:
            continue
        after = by_name[e.of]
        strides = sorted(set(summary.get(e.name, {})) | set(summary.get(after.name, {})))
        out[after.name] = {
            "initial": e.name, "before": e.description, "after": after.description,
            "strides": {s: {m: [_mean(summary, e.name, s, m), _mean(summary, after.name, s, m)] for m in ("SC", "EF")}
                        for s in strides}}
    return out


def _f(v: float | None, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _delta(pair: Sequence[float | None], digits: int) -> str:
    return "–" if None in pair else f"{pair[1] - pair[0]:+.{digits}f}"


def before_after_markdown(table: Mapping[str, Any]) -> str:
    """``before_after.md``: one block per fine-tuned encoder, rows = strides (the paper's Table 8 layout)."""
    lines = ["# SC / EF before and after fine-tuning", ""]
    for row, t in table.items():
        lines += [f"## {row}", "", f"- before: {t['before']}", f"- after: {t['after']}", "",
                  "| OS | SC before | SC after | ΔSC | EF before | EF after | ΔEF |", "|---|---|---|---|---|---|---|"]
        for s, m in t["strides"].items():
            lines.append(f"| {s} | {_f(m['SC'][0], 2)} | {_f(m['SC'][1], 2)} | {_delta(m['SC'], 2)} | "
                         f"{_f(m['EF'][0], 2)} | {_f(m['EF'][1], 2)} | {_delta(m['EF'], 2)} |")
        lines.append("")
    return "\n".join(lines)


def before_after_csv(table: Mapping[str, Any]) -> str:
    """``before_after.csv``: ``encoder, initial, stride, SC_before, SC_after, EF_before, EF_after``."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["encoder", "initial", "stride", "SC_before", "SC_after", "EF_before", "EF_after"])
    for row, t in table.items():
        for s, m in t["strides"].items():
            w.writerow([row, t["initial"], s, *m["SC"], *m["EF"]])
    return buf.getvalue()
