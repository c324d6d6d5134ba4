"""Aggregate per-image profiling results into tables (CSV / JSON / Markdown, the paper's Table 5 layout) and plots."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mgfusion.metrics import aggregate
from mgfusion.utils.io import atomic_write_text
from mgfusion.visualization import save_figure

METRIC_KEYS = ("SFC", "SCS", "SC", "EC", "NC", "FC", "SP", "EF")

# {encoder: {stride: {metric: {"mean", "std", "n", ...}}}}
Summary = dict[str, dict[int, dict[str, dict[str, float]]]]


def summarize(records: Iterable[Mapping[str, Any]], *, encoders: Sequence[str], image_ids: Sequence[str],
              variant: str) -> Summary:
    """Dataset-level value per (encoder, stride, metric) over the images in ``image_ids`` (docs/metrics.md).

    The reference variant reproduces the authors' aggregation (per-image rounding to 2 decimals, mean, rounded);
    the others report the plain mean. Every entry also carries the std and the image count.
    """
    wanted = set(image_ids)
    values: dict[str, dict[int, dict[str, list[float]]]] = {e: {} for e in encoders}
    for rec in records:
        enc = rec["encoder"]
        if enc not in values or rec["image_id"] not in wanted:
            continue
        for s, metrics in rec["metrics"].items():
            per = values[enc].setdefault(int(s), {})
            for k, v in metrics.items():
                if v is not None:
                    per.setdefault(k, []).append(float(v))
    return {
        enc: {s: aggregate({k: np.asarray(v) for k, v in per.items()}, variant=variant) for s, per in sorted(d.items())}
        for enc, d in values.items() if d
    }


def _fmt(entry: Mapping[str, float] | None, digits: int = 2, spread: bool = True) -> str:
    if not entry or entry.get("count", 0) == 0 or entry.get("mean") is None or not math.isfinite(entry["mean"]):
        return "–"
    s = f"{entry['mean']:.{digits}f}"
    if spread and entry.get("count", 0) > 1 and entry.get("std") is not None:
        s += f" ± {entry['std']:.{digits}f}"
    return s


def _strides(*summaries: Summary | None) -> list[int]:
    return sorted({s for summary in summaries if summary for d in summary.values() for s in d})


def table5_markdown(summary: Summary, *, spread: bool = True, weights: Mapping[str, str] | None = None,
                    controls: Summary | None = None) -> str:
    """The paper's Table 5 layout: rows = encoders, then the control rows; columns = SC and EF at each stride.

    ``weights``: ``{row: description of its weights / definition}``, listed below the table when given.
    """
    strides = _strides(summary, controls)
    head = ["Encoder"] + [f"SC OS{s}" for s in strides] + [f"EF OS{s}" for s in strides]
    rows = []
    for enc, d in {**summary, **(controls or {})}.items():
        rows.append([enc] + [_fmt(d.get(s, {}).get("SC"), 2, spread) for s in strides]
                    + [_fmt(d.get(s, {}).get("EF"), 2, spread) for s in strides])
    text = _markdown(head, rows)
    if weights:
        text += "\nWeights:\n" + "".join(f"- {enc}: {weights.get(enc, '?')}\n" for enc in summary)
        if controls:
            text += "\nControls (same images, strides and grids):\n" + "".join(
                f"- {c}: {weights.get(c, '?')}\n" for c in controls)
    return text


def components_markdown(summary: Summary, controls: Summary | None = None) -> str:
    """All eight metrics (and EF_gt with labels) per (row, stride)."""
    every = {**summary, **(controls or {})}
    extra = [k for k in ("EF_gt", "SC_gt") if any(k in m for d in every.values() for m in d.values())]
    head = ["Encoder", "OS", *METRIC_KEYS, *extra, "images"]
    rows = []
    for enc, d in every.items():
        for s, m in d.items():
            n = max((e.get("count", 0) for e in m.values()), default=0)
            rows.append([enc, str(s)] + [_fmt(m.get(k), 3, spread=False) for k in (*METRIC_KEYS, *extra)] + [str(n)])
    return _markdown(head, rows)


def _markdown(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _kinds(summary: Summary, controls: Summary | None) -> list[tuple[str, str, dict]]:
    return [(n, "encoder", d) for n, d in summary.items()] + [(n, "control", d) for n, d in (controls or {}).items()]


def long_csv(summary: Summary, controls: Summary | None = None) -> str:
    """CSV with one row per (row, stride, metric): mean, std, count, and ``kind`` (encoder / control)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["encoder", "stride", "metric", "mean", "std", "count", "kind"])
    for enc, kind, d in _kinds(summary, controls):
        for s, m in d.items():
            for k, e in m.items():
                w.writerow([enc, s, k, e.get("mean"), e.get("std"), e.get("count"), kind])
    return buf.getvalue()


def table5_csv(summary: Summary, weights: Mapping[str, str] | None = None, controls: Summary | None = None) -> str:
    """CSV in the Table 5 layout (means only): encoder rows, then control rows; a ``weights`` column when
    ``weights`` is given, and a last ``kind`` column (``encoder`` / ``control``)."""
    strides = _strides(summary, controls)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["encoder"] + [f"SC_OS{s}" for s in strides] + [f"EF_OS{s}" for s in strides]
               + (["weights"] if weights else []) + ["kind"])
    for enc, kind, d in _kinds(summary, controls):
        w.writerow([enc] + [d.get(s, {}).get("SC", {}).get("mean") for s in strides]
                   + [d.get(s, {}).get("EF", {}).get("mean") for s in strides]
                   + ([weights.get(enc, "")] if weights else []) + [kind])
    return buf.getvalue()


def write_tables(out_dir: str | os.PathLike, summary: Summary, weights: Mapping[str, str] | None = None,
                 controls: Summary | None = None) -> dict[str, Path]:
    """Write table_sc_ef.{md,csv}, metrics_components.md and metrics_long.csv into ``out_dir``.

    ``weights``: ``{row: description of its weights}`` added to the SC/EF table; ``controls``: the control rows.
    """
    out = Path(out_dir)
    files = {
        "table_md": out / "table_sc_ef.md",
        "table_csv": out / "table_sc_ef.csv",
        "components_md": out / "metrics_components.md",
        "long_csv": out / "metrics_long.csv",
    }
    atomic_write_text(files["table_md"], table5_markdown(summary, weights=weights, controls=controls))
    atomic_write_text(files["table_csv"], table5_csv(summary, weights, controls))
    atomic_write_text(files["components_md"], components_markdown(summary, controls))
    atomic_write_text(files["long_csv"], long_csv(summary, controls))
    return files


def plot_sc_ef(summary: Summary, path: str | os.PathLike, *, title: str = "", controls: Summary | None = None
               ) -> None:
    """SC and EF vs output stride, one line per encoder (error bars = std over images); controls dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for enc, kind, d in _kinds(summary, controls):
        strides = sorted(d)
        style = {"marker": "o"} if kind == "encoder" else {"marker": "x", "linestyle": "--", "alpha": 0.6}
        for ax, key in zip(axes, ("SC", "EF")):
            if not all(key in d[s] for s in strides):
                continue
            mean = [d[s][key]["mean"] for s in strides]
            std = [d[s][key].get("std") or 0.0 for s in strides]
            ax.errorbar(strides, mean, yerr=std, capsize=3, label=enc, **style)
    for ax, key, label in zip(axes, ("SC", "EF"), ("Structural Coherence (SC)", "Edge Fidelity (EF)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(_strides(summary, controls))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("output stride")
        ax.set_ylabel(key)
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_pca_maps(entries: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Grid like the paper's Fig. 2: per (image, encoder) row, the image then the PCA map at each stride.

    ``entries``: dicts with ``image`` (H,W,3 uint8), ``encoder``, ``image_id`` and ``maps`` {stride: (h,w) in [0,1]}.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not entries:
        return
    strides = sorted({int(s) for e in entries for s in e["maps"]})
    fig, axes = plt.subplots(len(entries), 1 + len(strides), figsize=(2.2 * (1 + len(strides)), 2.0 * len(entries)),
                             squeeze=False)
    for r, e in enumerate(entries):
        axes[r, 0].imshow(e["image"])
        axes[r, 0].set_ylabel(f"{e['encoder']}\n{e['image_id']}", fontsize=7)
        for c, s in enumerate(strides, start=1):
            m = e["maps"].get(s, e["maps"].get(str(s)))
            if m is not None:
                axes[r, c].imshow(np.asarray(m, dtype=np.float32), cmap="viridis", vmin=0, vmax=1,
                                  interpolation="nearest")
            if r == 0:
                axes[r, c].set_title(f"OS{s} PCA-1", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path)
