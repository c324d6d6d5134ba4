"""The last stage of a profile: everything a person reads, written into the run folder and printed.

Files: ``table_sc_ef.{md,csv}`` (Table 5 layout, with each encoder's weights), ``metrics_components.md``,
``metrics_long.csv``, ``plots/sc_ef_vs_stride.png``, ``plots/pca_maps.png``, ``recommended_fusion.yaml``,
``supervised_rq4.md`` (with labels), ``cost.md``, ``failed_images.txt`` / ``skipped_images.txt`` (when any), and
``summary.json`` (all of it in one file; read by :func:`~mgfusion.profiling.selection.read_profile_ef`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgfusion.utils.io import atomic_write_text

from . import report
from .recommend import write_fusion_config
from .selection import recommend_pair
from .supervised import rq4_markdown, rq4_report


class ProfileReport:
    """Aggregate stored per-image records into the run folder's tables, plots, recommendation and summary.

    Args:
        out_dir: the run folder.
        encoders: the profiled encoders, in table order.
        variant: the metric variant (decides the aggregation, see :func:`report.summarize`).
        weights: ``{encoder: {"description": str, "weights": value or None, ...}}`` recorded with the tables.
        source: what was profiled (images / dataset, max_images, resolution), copied into ``summary.json``.
    """

    def __init__(self, out_dir: str | os.PathLike, *, encoders: Sequence[str], variant: str,
                 weights: Mapping[str, Mapping[str, Any]], source: Mapping[str, Any]) -> None:
        self.out = Path(out_dir)
        self.encoders, self.variant = list(encoders), variant
        self.weights, self.source = weights, dict(source)

    def write_lists(self, failures: Mapping[str, str], skipped: Mapping[str, str]) -> None:
        """``failed_images.txt`` / ``skipped_images.txt``: ``image id <TAB> reason`` per line (only when any)."""
        for name, items in (("failed_images.txt", failures), ("skipped_images.txt", skipped)):
            if items:
                atomic_write_text(self.out / name, "".join(f"{k}\t{v}\n" for k, v in sorted(items.items())))

    def write(self, records: Iterable[Mapping[str, Any]], *, image_ids: Sequence[str], failures: Mapping[str, str],
              skipped: Mapping[str, str], timing: Mapping[str, Any], pca_entries: Sequence[Mapping[str, Any]],
              cost: Callable[[Mapping[str, Any] | None], list[dict[str, Any]]] | None = None) -> dict[str, Any]:
        """Write every output file and print the table; returns the ``summary.json`` payload (+ ``files``).

        Args:
            records: the stored per-image records (other images and encoders are ignored).
            image_ids: the images that count (profiled in this or an earlier run, not failed or skipped).
            cost: builds the cost rows given the recommendation dict (or None); omitted = no cost table.
        """
        summary = report.summarize(records, encoders=self.encoders, image_ids=image_ids, variant=self.variant)
        described = {e: str(w.get("description", "")) for e, w in self.weights.items()}
        files = report.write_tables(self.out, summary, weights=described)
        report.plot_sc_ef(summary, self.out / "plots" / "sc_ef_vs_stride.png",
                          title=f"{len(image_ids)} images, variant={self.variant}")
        report.plot_pca_maps(pca_entries, self.out / "plots" / "pca_maps.png")
        payload: dict[str, Any] = {
            "variant": self.variant,
            "num_images": len(image_ids),
            "failed_images": len(failures),
            "skipped_images": len(skipped),
            "encoders": {e: {str(s): m for s, m in d.items()} for e, d in summary.items()},
            "weights": {e: dict(w) for e, w in self.weights.items()},
            "timing": dict(timing),
            "source": self.source,
        }
        if len(summary) >= 2:
            try:
                rec = recommend_pair(summary)
            except ValueError as e:  # e.g. an encoder without finite means: say so instead of guessing
                payload["recommendation_error"] = str(e)
                print(f"[profile] no recommendation: {e}")
            else:
                payload["recommendation"] = rec.to_dict()
                write_fusion_config(self.out / "recommended_fusion.yaml", rec,
                                    weights={e: w.get("weights") for e, w in self.weights.items()})
        rq4 = rq4_report(summary)
        if rq4:
            payload["supervised"] = rq4
            atomic_write_text(self.out / "supervised_rq4.md", rq4_markdown(rq4))
        if cost is not None:
            payload["cost"] = cost(payload.get("recommendation"))
            atomic_write_text(self.out / "cost.md", _markdown_rows(payload["cost"]))
        self.write_lists(failures, skipped)
        atomic_write_text(self.out / "summary.json", json.dumps(payload, indent=2, default=_plain) + "\n")
        self._print(payload, summary, described)
        payload["files"] = {k: str(v) for k, v in files.items()}
        return payload

    def _print(self, payload: Mapping[str, Any], summary: report.Summary, weights: Mapping[str, str]) -> None:
        print(f"[profile] {payload['num_images']} images profiled, {payload['failed_images']} unreadable skipped, "
              f"{payload['skipped_images']} too small or elongated skipped; results in {self.out}")
        print(report.table5_markdown(summary, spread=False, weights=weights))
        if "recommendation" in payload:
            r = payload["recommendation"]
            print(f"[profile] recommendation: master={r['master']} auxiliary={r['auxiliary']} stride={r['stride']} "
                  f"-> {self.out / 'recommended_fusion.yaml'}")


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, torch.Tensor):
        return v.tolist()
    return v


def _markdown_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    from mgfusion.utils.bench import format_table

    return format_table([{k: ("–" if v is None else v) for k, v in r.items()} for r in rows]) + "\n"
