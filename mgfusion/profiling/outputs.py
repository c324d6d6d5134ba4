"""The last stage of a profile: everything a person reads, written into the run folder and printed.

Files: ``table_sc_ef.{md,csv}`` (Table 5 layout: encoder rows, then control rows; each row's weights / definition),
``metrics_components.md``, ``metrics_long.csv``, ``controls.md`` (every encoder vs every control, per stride and
metric), ``summary.md`` (the short human summary, warnings first), ``plots/sc_ef_vs_stride.png``,
``plots/pca_maps.png``, ``recommended_fusion.yaml``, ``before_after.{md,csv}`` (encoders from training
checkpoints), ``supervised_rq4.md`` (with labels: SC vs SC_gt, EF vs EF_gt), ``cost.md``,
``failed_images.txt`` / ``skipped_images.txt`` (when any), and ``summary.json`` (all of it in one file; read by
:func:`~mgfusion.profiling.selection.read_profile_ef`).

``summary.json`` keys: ``variant, num_images, failed_images, skipped_images, encoders`` (encoder rows only,
``{row: {stride: {metric: {mean, std, count}}}}``), ``weights``, ``timing``, ``source``, and when present
``recommendation`` (with ``controls``: its control comparisons, ``controls_pass``), ``recommendation_error``,
``controls`` (control rows, same layout as ``encoders``), ``controls_info``, ``control_comparisons``, ``warnings``,
``before_after``, ``supervised`` (``ef_vs_ef_gt`` inside), ``cost``, ``model_cost``.
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
from .before_after import before_after, before_after_csv, before_after_markdown
from .cost import model_cost_markdown
from .entries import NOISE, PIXELS, ProfileEntry, random_init_name
from .recommend import write_fusion_config
from .selection import argmax_stride, recommend_pair
from .supervised import ef_gt_report, rq4_markdown, rq4_report
from .verdict import (
    EXCEEDS,
    compare_with_controls,
    per_image_values,
    select_rows,
    verdict_markdown,
    warnings_for,
)


class ProfileReport:
    """Aggregate stored per-image records into the run folder's tables, plots, recommendation and summary.

    Args:
        out_dir: the run folder.
        entries: the rows (:class:`~mgfusion.profiling.entries.ProfileEntry`), encoders first, in table order.
        variant: the metric variant (decides the aggregation, see :func:`report.summarize`).
        source: what was profiled (images / dataset, max_images, resolution), copied into ``summary.json``.
        alpha: significance level of the control comparisons (:mod:`~mgfusion.profiling.verdict`).
    """

    def __init__(self, out_dir: str | os.PathLike, *, entries: Sequence[ProfileEntry], variant: str,
                 source: Mapping[str, Any], alpha: float = 0.05) -> None:
        self.out = Path(out_dir)
        self.entries, self.variant, self.source, self.alpha = list(entries), variant, dict(source), alpha
        self.encoders = [e for e in self.entries if e.kind == "encoder"]
        self.controls = [e for e in self.entries if e.kind == "control"]

    def write_lists(self, failures: Mapping[str, str], skipped: Mapping[str, str]) -> None:
        """``failed_images.txt`` / ``skipped_images.txt``: ``image id <TAB> reason`` per line (only when any)."""
        for name, items in (("failed_images.txt", failures), ("skipped_images.txt", skipped)):
            if items:
                atomic_write_text(self.out / name, "".join(f"{k}\t{v}\n" for k, v in sorted(items.items())))

    def write(self, records: Callable[[], Iterable[Mapping[str, Any]]], *, image_ids: Sequence[str],
              failures: Mapping[str, str],
              skipped: Mapping[str, str], timing: Mapping[str, Any], pca_entries: Sequence[Mapping[str, Any]],
              cost: Callable[[Mapping[str, Any] | None], list[dict[str, Any]]] | None = None,
              model_cost: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """Write every output file and print the table; returns the ``summary.json`` payload (+ ``files``).

        Args:
            records: returns a fresh iterator over the stored per-image records each call (read several times,
                never held in memory whole; other images and rows are ignored).
            image_ids: the images that count (profiled in this or an earlier run, not failed or skipped).
            cost: builds the encoder cost rows given the recommendation dict (or None); omitted = no cost table.
            model_cost: :func:`~mgfusion.profiling.cost.model_cost` rows of whole segmentation models.
        """
        enc_names, ctl_names = [e.name for e in self.encoders], [e.name for e in self.controls]
        summary = report.summarize(records(), encoders=enc_names, image_ids=image_ids, variant=self.variant)
        controls = report.summarize(records(), encoders=ctl_names, image_ids=image_ids, variant=self.variant)
        described = {e.name: e.description for e in self.entries}
        files = report.write_tables(self.out, summary, weights=described, controls=controls)
        report.plot_sc_ef(summary, self.out / "plots" / "sc_ef_vs_stride.png", controls=controls,
                          title=f"{len(image_ids)} images, variant={self.variant}")
        report.plot_pca_maps(pca_entries, self.out / "plots" / "pca_maps.png")
        payload: dict[str, Any] = {
            "variant": self.variant,
            "num_images": len(image_ids),
            "failed_images": len(failures),
            "skipped_images": len(skipped),
            "encoders": {e: {str(s): m for s, m in d.items()} for e, d in summary.items()},
            "weights": {e.name: e.summary() for e in self.encoders},
            "timing": dict(timing),
            "source": self.source,
        }
        if controls:
            payload["controls"] = {c: {str(s): m for s, m in d.items()} for c, d in controls.items()}
            payload["controls_info"] = {e.name: e.summary() for e in self.controls}
        self._recommend(summary, payload)
        self._control_verdicts(records, image_ids, summary, payload)
        table = before_after(summary, self.encoders)
        if table:
            payload["before_after"] = {k: {**v, "strides": {str(s): m for s, m in v["strides"].items()}}
                                       for k, v in table.items()}
            atomic_write_text(self.out / "before_after.md", before_after_markdown(table))
            atomic_write_text(self.out / "before_after.csv", before_after_csv(table))
        rq4 = rq4_report(summary)
        ef = ef_gt_report(records(), encoders=enc_names, image_ids=image_ids)
        if rq4 or ef:
            payload["supervised"] = {**(rq4 or {}), **({"ef_vs_ef_gt": _str_keys(ef)} if ef else {})}
            atomic_write_text(self.out / "supervised_rq4.md", rq4_markdown(rq4, ef))
        if cost is not None:
            payload["cost"] = cost(payload.get("recommendation"))
            text = _markdown_rows(payload["cost"])
            if model_cost:
                payload["model_cost"] = [dict(m) for m in model_cost]
                text += "\nWhole segmentation model (random weights; FLOPs on meta tensors):\n\n"
                text += model_cost_markdown(model_cost)
            atomic_write_text(self.out / "cost.md", text)
        self.write_lists(failures, skipped)
        atomic_write_text(self.out / "summary.md", self._summary_markdown(payload, summary, controls, described))
        atomic_write_text(self.out / "summary.json", json.dumps(payload, indent=2, default=_plain) + "\n")
        self._print(payload, summary, controls, described)
        payload["files"] = {k: str(v) for k, v in files.items()}
        return payload

    # ---- recommendation and controls -------------------------------------------------------------------------
    def _recommend(self, summary: report.Summary, payload: dict[str, Any]) -> None:
        """Recommend a pair among the registered encoders (the fusion config names them and their weights)."""
        registered = {e.name: e for e in self.encoders if e.source == "registry"}
        candidates = {n: d for n, d in summary.items() if n in registered}
        if len(candidates) < 2:
            return
        try:
            rec = recommend_pair(candidates)
        except ValueError as e:  # e.g. an encoder without finite means: say so instead of guessing
            payload["recommendation_error"] = str(e)
            print(f"[profile] no recommendation: {e}")
            return
        payload["recommendation"] = rec.to_dict()
        write_fusion_config(self.out / "recommended_fusion.yaml", rec,
                            weights={n: e.weights for n, e in registered.items()})

    def _control_verdicts(self, records: Callable[[], Iterable[Mapping[str, Any]]], image_ids: Sequence[str],
                          summary: report.Summary, payload: dict[str, Any]) -> None:
        """Compare every encoder row with the controls; the verdict at the recommended (or best-EF) stride."""
        names = {e.name for e in self.controls}
        if not names:
            return
        against = {e.name: [c for c in (NOISE, PIXELS, random_init_name(e.name)) if c in names] for e in self.encoders}
        values = per_image_values(records(), rows=[e.name for e in self.entries], image_ids=image_ids)
        rows = compare_with_controls(values, encoders=list(against), controls=against, alpha=self.alpha)
        payload["control_comparisons"] = rows
        atomic_write_text(self.out / "controls.md", _controls_markdown(rows, self.alpha))
        warnings: list[str] = []
        rec = payload.get("recommendation")
        if rec:
            chosen = select_rows(rows, rec["auxiliary"], rec["stride"])
            rec["controls"] = chosen
            rec["controls_pass"] = bool(chosen) and all(r["verdict"] == EXCEEDS for r in chosen)
            warnings += warnings_for(chosen, what=f"recommended auxiliary {rec['auxiliary']} at OS{rec['stride']}",
                                     alpha=self.alpha)
        else:
            for enc, d in summary.items():
                ef = {s: m["EF"]["mean"] for s, m in d.items() if m.get("EF", {}).get("mean") is not None}
                if ef:
                    best = argmax_stride(ef)
                    warnings += warnings_for(select_rows(rows, enc, best), what=f"{enc} at its best-EF stride OS{best}",
                                             alpha=self.alpha)
        payload["warnings"] = warnings

    # ---- human-readable summary ------------------------------------------------------------------------------
    def _summary_markdown(self, payload: Mapping[str, Any], summary: report.Summary, controls: report.Summary,
                          weights: Mapping[str, str]) -> str:
        lines = ["# Encoder profile", ""]
        if payload.get("warnings"):
            lines += ["## WARNING: signal not above the controls", ""]
            lines += [f"- **{w}**" for w in payload["warnings"]] + [""]
        counts = (f"{payload['num_images']} images, variant {self.variant}; {payload['failed_images']} unreadable "
                  f"and {payload['skipped_images']} too small / elongated images skipped.")
        lines += [counts, "", report.table5_markdown(summary, spread=False, weights=weights, controls=controls)]
        rec = payload.get("recommendation")
        if rec:
            choice = (f"master {rec['master']}, auxiliary {rec['auxiliary']}, injection stride {rec['stride']} "
                      f"(rule: {rec['rule']}); recommended_fusion.yaml")
            lines += ["## Recommendation", "", choice, ""]
            if rec.get("controls"):
                verdict = "passes" if rec["controls_pass"] else "does NOT pass"
                lines += [f"The auxiliary's EF and SC at OS{rec['stride']} vs the controls ({verdict}):", "",
                          verdict_markdown(rec["controls"])]
        if payload.get("before_after"):
            lines += ["Before / after fine-tuning: before_after.md", ""]
        if payload.get("supervised"):
            lines += ["Supervised checks (SC vs SC_gt, EF vs EF_gt): supervised_rq4.md", ""]
        return "\n".join(lines)

    def _print(self, payload: Mapping[str, Any], summary: report.Summary, controls: report.Summary,
               weights: Mapping[str, str]) -> None:
        print(f"[profile] {payload['num_images']} images profiled, {payload['failed_images']} unreadable skipped, "
              f"{payload['skipped_images']} too small or elongated skipped; results in {self.out}")
        print(report.table5_markdown(summary, spread=False, weights=weights, controls=controls))
        if "recommendation" in payload:
            r = payload["recommendation"]
            print(f"[profile] recommendation: master={r['master']} auxiliary={r['auxiliary']} stride={r['stride']} "
                  f"-> {self.out / 'recommended_fusion.yaml'}")
            if "controls_pass" in r:
                print(f"[profile] controls: the auxiliary's EF and SC at OS{r['stride']} "
                      f"{'exceed' if r['controls_pass'] else 'do NOT all exceed'} the controls "
                      f"({self.out / 'controls.md'})")
        if payload.get("before_after"):
            print(f"[profile] before/after fine-tuning: {self.out / 'before_after.md'}")
        for w in payload.get("warnings", []):
            print(f"[profile] WARNING: {w}")


def _controls_markdown(rows: Sequence[Mapping[str, Any]], alpha: float) -> str:
    head = (f"# Encoders vs controls\n\nPaired over images (same images, strides, grids). Verdict 'exceeds': more "
            f"images above the control than below and a one-sided sign-test p < {alpha:g}; 'too few images': "
            "no p below that level is possible. Rules: mgfusion/profiling/verdict.py.\n\n")
    return head + verdict_markdown(rows)


def _str_keys(d: Any) -> Any:
    if isinstance(d, Mapping):
        return {str(k): _str_keys(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_str_keys(v) for v in d]
    return d


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
