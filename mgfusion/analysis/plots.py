"""One figure per analysis table (matplotlib, Agg backend), saved atomically with
:func:`mgfusion.visualization.save_figure`."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from mgfusion.visualization import save_figure

if TYPE_CHECKING:
    from .cross_dataset import CrossDataset
    from .ef_gain import EfGain
    from .sensitivity import Sensitivity
    from .stride_grid import StrideGrid

__all__ = ["plot_cross_dataset", "plot_ef_gain", "plot_sensitivity", "plot_stride_grid"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _stride_axis(ax: Any, strides: list[int]) -> None:
    import matplotlib.ticker

    ax.set_xscale("log", base=2)
    ax.set_xticks(strides)
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("injection / output stride")
    ax.grid(alpha=0.3)


def plot_stride_grid(grid: StrideGrid, path: str | os.PathLike) -> None:
    """One panel per metric: value vs stride per setting; star = best stride, ring = EF-chosen stride."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(grid.metrics), figsize=(4.6 * len(grid.metrics) + 3.2, 3.8), squeeze=False)
    for ax, metric in zip(axes[0], grid.metrics):
        for st in grid.settings:
            c = grid.choices[(st.name, metric)]
            xs = [s for s in sorted(c.values) if math.isfinite(c.values[s])]
            (line,) = ax.plot(xs, [c.values[s] for s in xs], marker="o",
                              label=f"{st.name}: {st.master} + {st.auxiliary} ({st.master_training})")
            ax.scatter(c.best_strides, [c.values[s] for s in c.best_strides], marker="*", s=160,
                       color=line.get_color(), zorder=3)
            if c.ef_value is not None:
                ax.scatter([c.ef_stride], [c.ef_value], s=260, facecolors="none", edgecolors=line.get_color(),
                           linewidths=1.8, zorder=3)
        _stride_axis(ax, grid.strides)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} ({grid.dataset})")
    axes[0][-1].legend(fontsize=7, title="★ best, ○ EF-chosen" if grid.profile else "★ best", title_fontsize=7,
                       loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    save_figure(fig, path)


def plot_ef_gain(result: EfGain, path: str | os.PathLike) -> None:
    """Left: EF and the metric gain vs stride (two axes); right: gain against EF, points labelled by stride."""
    plt = _pyplot()
    strides, gain = result.strides, result.gain
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.8))
    left.plot(strides, [result.ef[s] for s in strides], marker="o", color="tab:blue")
    left.set_ylabel(f"EF ({result.encoder})", color="tab:blue")
    twin = left.twinx()
    twin.plot(strides, [gain[s] for s in strides], marker="s", color="tab:orange")
    twin.set_ylabel(f"Δ{result.metric} over master only", color="tab:orange")
    _stride_axis(left, strides)
    right.scatter([result.ef[s] for s in strides], [gain[s] for s in strides], color="tab:purple")
    for s in strides:
        right.annotate(f"OS{s}", (result.ef[s], gain[s]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    right.set_xlabel(f"EF ({result.encoder})")
    right.set_ylabel(f"Δ{result.metric}")
    right.grid(alpha=0.3)
    c = result.correlation
    right.set_title(f"ρ = {c.spearman:.2f}, n = {c.n}" if c.defined else f"ρ undefined (n = {c.n})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def plot_sensitivity(result: Sensitivity, path: str | os.PathLike) -> None:
    """Heat map of the per-stride Spearman ρ of each setting (rows) for each encoder and metric (columns)."""
    import numpy as np

    plt = _pyplot()
    cols = [(e, m) for e in result.encoders for m in result.metrics]
    values = np.array([[r.correlations[c].spearman if r.correlations[c].defined else np.nan for c in cols]
                       for r in result.rows], dtype=float).reshape(len(result.rows), len(cols))
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 4.0, max(2.8, 0.45 * len(result.rows) + 1.8)))
    im = ax.imshow(values, cmap="RdYlGn", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), [f"{m}\n{e}" for e, m in cols], fontsize=7)
    labels = [r.label + ("  [pair changed]" if r.keeps_pair is False else
                         "  [stride changed]" if r.keeps_stride is False else "") for r in result.rows]
    ax.set_yticks(range(len(result.rows)), labels, fontsize=7)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, "–" if np.isnan(values[i, j]) else f"{values[i, j]:.2f}", ha="center", va="center",
                    fontsize=7)
    fig.colorbar(im, ax=ax, label="ρ vs baseline")
    ax.set_title("metric hyper-parameter sensitivity", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def plot_cross_dataset(result: CrossDataset, path: str | os.PathLike) -> None:
    """One panel per metric: each encoder's per-stride means, dataset A solid, dataset B dashed."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(result.metrics), figsize=(4.8 * len(result.metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], result.metrics):
        strides: set[int] = set()
        for e in result.encoders:
            ma, mb = result.a.means(e, metric), result.b.means(e, metric)
            strides |= set(ma) | set(mb)
            (line,) = ax.plot(list(ma), list(ma.values()), marker="o", label=f"{e} (A)")
            ax.plot(list(mb), list(mb.values()), marker="s", linestyle="--", color=line.get_color(), label=f"{e} (B)")
        _stride_axis(ax, sorted(strides))
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: A solid, B dashed", fontsize=9)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
