"""Hyper-parameter sensitivity of the profile (paper §A.1): profile the same images under a sweep of metric
hyper-parameters and check that the per-stride ranking and the recommendation stay put.

Input: profile folders of one sweep (``tools/profile_encoders.py ... metric_hparams.sfc_grid=8,16,24 -m``; one
folder per job), all of the same images, input settings and encoders; one of them is the default setting (the
baseline). Each job's hyper-parameters are read from its ``fingerprint.json`` (the resolved metric configuration),
and a job is labelled by its differences from the baseline. For each job, encoder and metric the per-stride means
are rank-correlated with the baseline's; the recommendation (master, auxiliary, stride) and the encoder order by
mean SC / peak EF are compared with the baseline's.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgfusion.profiling.selection import Recommendation

from .configs import ABSENT, flatten_config, format_value
from .errors import AnalysisError
from .profiles import Profile
from .render import csv_text, fmt, markdown_table
from .stats import RankCorrelation, rank_correlation

__all__ = ["Sensitivity", "SensitivityRow", "analyse_sensitivity", "default_profile", "same_inputs"]

DEFAULT_METRICS = ("SC", "EF")


@dataclass
class SensitivityRow:
    """One job of the sweep compared with the baseline."""

    folder: Path
    changes: dict[str, tuple[Any, Any]]
    correlations: dict[tuple[str, str], RankCorrelation]
    recommendation: Recommendation | None
    recommendation_error: str | None
    keeps_stride: bool | None
    keeps_pair: bool | None
    keeps_order: dict[str, bool]

    @property
    def label(self) -> str:
        """``sfc_grid=8`` (the job's differences from the baseline)."""
        return ", ".join(f"{k}={format_value(v)}" for k, (_, v) in self.changes.items())


@dataclass
class Sensitivity:
    """The sweep against its baseline (see the module docstring)."""

    baseline: Profile
    baseline_recommendation: Recommendation | None
    rows: list[SensitivityRow]
    encoders: list[str]
    metrics: list[str]
    strides: list[int] = field(default_factory=list)

    def kept(self, what: str) -> tuple[int, int]:
        """``(kept, compared)`` for ``what`` in ``stride`` / ``pair``."""
        flags = [getattr(r, f"keeps_{what}") for r in self.rows]
        known = [f for f in flags if f is not None]
        return sum(known), len(known)

    def markdown(self) -> str:
        """Summary, per-job table, the hyper-parameters of each job and the folders."""
        b = self.baseline_recommendation
        out = ["# Metric hyper-parameter sensitivity (paper §A.1)\n\n",
               (f"Baseline (default setting): `{self.baseline.folder}` ({self.baseline.describe_source()}); "
                f"{len(self.rows)} other setting(s) on the same images. "),
               f"Baseline recommendation: master {b.master}, auxiliary {b.auxiliary}, stride {b.stride}.\n\n" if b else
               "The baseline has no recommendation.\n\n"]
        for what in ("stride", "pair"):
            k, n = self.kept(what)
            out.append(f"- settings that keep the recommended {what}: **{k} of {n}**"
                       + (f" ({k / n:.0%})" if n else "") + "\n")
        for metric in self.metrics:
            k = sum(r.keeps_order[metric] for r in self.rows)
            out.append(f"- settings that keep the encoder order by {'peak' if metric == 'EF' else 'mean'} {metric}: "
                       f"{k} of {len(self.rows)}\n")
        for enc in self.encoders:
            for metric in self.metrics:
                vals = [r.correlations[(enc, metric)].spearman for r in self.rows
                        if r.correlations[(enc, metric)].defined]
                if vals:
                    out.append(f"- {enc} {metric} per-stride Spearman ρ vs baseline: median {statistics.median(vals):.2f},"
                               f" min {min(vals):.2f} ({len(vals)} setting(s))\n")
        head = ["setting (vs baseline)", *[f"ρ {m} {e}" for e in self.encoders for m in self.metrics],
                "recommendation", "stride kept", "pair kept"]
        rows = []
        for r in self.rows:
            cells = [fmt(r.correlations[(e, m)].spearman, 2) for e in self.encoders for m in self.metrics]
            rec = (f"{r.recommendation.master} + {r.recommendation.auxiliary} @ OS{r.recommendation.stride}"
                   if r.recommendation else f"none ({r.recommendation_error})")
            rows.append([r.label, *cells, rec, _yes(r.keeps_stride), _yes(r.keeps_pair)])
        out.append("\n" + markdown_table(head, rows, right=[False] + [True] * (len(head) - 4) + [False] * 3))
        n = len(self.strides)
        out.append(f"\nρ: Spearman correlation of a setting's per-stride means with the baseline's ({n} strides; "
                   "1 = same ranking of the strides, – = undefined, e.g. a constant curve). Stride kept = the same "
                   "auxiliary at the same stride; pair kept = the same master and auxiliary. "
                   + ("With so few points ρ describes the ranking; it is not a test. " if n < 5 else "")
                   + "Kendall τ and p-values are in sensitivity.csv.\n")
        out.append("\n## Settings\n\n" + markdown_table(
            ["setting", "changed hyper-parameters (baseline → setting)", "profile folder"],
            [[r.label, ", ".join(f"{k}: {format_value(a)} → {format_value(v)}" for k, (a, v) in r.changes.items()),
              f"`{r.folder}`"] for r in self.rows]))
        return "".join(out)

    def csv(self) -> str:
        """Long CSV: one row per (setting, encoder, metric) with the correlation fields."""
        fields = list(RankCorrelation(n=0).to_dict())
        header = ["setting", "profile", "encoder", "metric", *fields]
        return csv_text(header, [{"setting": r.label, "profile": r.folder, "encoder": e, "metric": m,
                                  **r.correlations[(e, m)].to_dict()}
                                 for r in self.rows for e in self.encoders for m in self.metrics])

    def recommendations_csv(self) -> str:
        """One row per setting (baseline first): recommended master, auxiliary, stride and whether each is kept."""
        header = ["setting", "profile", "master", "auxiliary", "stride", "keeps_stride", "keeps_pair",
                  *[f"keeps_{m}_order" for m in self.metrics]]
        b = self.baseline_recommendation
        rows = [{"setting": "baseline", "profile": self.baseline.folder, "master": b.master if b else "",
                 "auxiliary": b.auxiliary if b else "", "stride": b.stride if b else "", "keeps_stride": "",
                 "keeps_pair": "", **{f"keeps_{m}_order": "" for m in self.metrics}}]
        for r in self.rows:
            rec = r.recommendation
            rows.append({"setting": r.label, "profile": r.folder, "master": rec.master if rec else "",
                         "auxiliary": rec.auxiliary if rec else "", "stride": rec.stride if rec else "",
                         "keeps_stride": _blank(r.keeps_stride), "keeps_pair": _blank(r.keeps_pair),
                         **{f"keeps_{m}_order": r.keeps_order[m] for m in self.metrics}})
        return csv_text(header, rows)


def _yes(v: bool | None) -> str:
    return "–" if v is None else ("yes" if v else "**no**")


def _blank(v: bool | None) -> Any:
    return "" if v is None else v


def same_inputs(profiles: Sequence[Profile], sections: Sequence[str] = ("images", "input", "encoders")) -> None:
    """Refuse profiles whose fingerprints differ in any of ``sections`` (naming the folders and keys)."""
    first = profiles[0]
    for p in profiles[1:]:
        for section in sections:
            a, b = flatten_config({section: first.compared(section)}), flatten_config({section: p.compared(section)})
            diff = [k for k in sorted(set(a) | set(b)) if a.get(k, ABSENT) != b.get(k, ABSENT)]
            if diff:
                raise AnalysisError(f"{p.folder} and {first.folder} differ in {section} ({', '.join(diff[:6])}); a "
                                    "sensitivity sweep compares profiles of the same images, input settings and "
                                    "encoders. Give the folders of one sweep")


def _metric_settings(p: Profile) -> dict[str, Any]:
    m = p.compared("metrics")
    return {**flatten_config(m.get("config") or {}), **{k: v for k, v in m.items() if k != "config"}}


def default_profile(profiles: Sequence[Profile]) -> Profile:
    """The one profile whose resolved metric configuration equals its variant's defaults (no ``metric_hparams``
    change); an error names the candidates when there is none or more than one."""
    from dataclasses import asdict

    from mgfusion.metrics import resolve_config

    def is_default(p: Profile) -> bool:
        m = p.compared("metrics")
        defaults = json.loads(json.dumps(asdict(resolve_config(m.get("variant", "reference")))))
        return json.loads(json.dumps(m.get("config"))) == defaults

    found = [p for p in profiles if is_default(p)]
    if len(found) != 1:
        listed = ", ".join(str(p.folder) for p in found) or "none"
        raise AnalysisError(f"{len(found)} of the {len(profiles)} profiles use the default metric settings "
                            f"({listed}); name the baseline with --baseline FOLDER")
    return found[0]


def analyse_sensitivity(profiles: Sequence[Profile], baseline: Profile | None = None, *,
                        metrics: Sequence[str] = DEFAULT_METRICS) -> Sensitivity:
    """Compare every profile of a sweep with the baseline (default: :func:`default_profile`).

    Errors: fewer than two profiles, profiles of other images / inputs / encoders, two jobs with the same
    hyper-parameters.
    """
    profiles = list(profiles)
    if baseline is not None and all(p.folder != baseline.folder for p in profiles):
        profiles.insert(0, baseline)
    if len(profiles) < 2:
        raise AnalysisError(f"a sensitivity analysis needs at least two profiles of one sweep, got {len(profiles)}")
    same_inputs(profiles)
    baseline = baseline or default_profile(profiles)
    encoders = baseline.encoders
    base_settings = _metric_settings(baseline)
    seen: dict[str, Path] = {json.dumps(base_settings, sort_keys=True, default=str): baseline.folder}
    base_rec, _ = baseline.try_recommendation()
    rows = []
    for p in profiles:
        if p.folder == baseline.folder:
            continue
        settings = _metric_settings(p)
        key = json.dumps(settings, sort_keys=True, default=str)
        if key in seen:
            raise AnalysisError(f"{p.folder} and {seen[key]} were profiled with the same metric settings; leave one "
                                "out")
        seen[key] = p.folder
        changes = {k: (base_settings.get(k, ABSENT), settings.get(k, ABSENT))
                   for k in sorted(set(base_settings) | set(settings))
                   if base_settings.get(k, ABSENT) != settings.get(k, ABSENT)}
        correlations = {}
        for e in encoders:
            for m in metrics:
                a, b = baseline.means(e, m), p.means(e, m)
                common = sorted(set(a) & set(b))
                correlations[(e, m)] = rank_correlation([a[s] for s in common], [b[s] for s in common])
        rec, err = p.try_recommendation()
        keeps_stride = None if rec is None or base_rec is None else (
            rec.stride == base_rec.stride and rec.auxiliary == base_rec.auxiliary)
        keeps_pair = None if rec is None or base_rec is None else (
            (rec.master, rec.auxiliary) == (base_rec.master, base_rec.auxiliary))
        order = {m: p.encoder_order(m, encoders) == baseline.encoder_order(m, encoders) for m in metrics}
        rows.append(SensitivityRow(folder=p.folder, changes=changes, correlations=correlations, recommendation=rec,
                                   recommendation_error=err, keeps_stride=keeps_stride, keeps_pair=keeps_pair,
                                   keeps_order=order))
    strides = sorted({s for e in encoders for s in baseline.means(e, metrics[0])})
    return Sensitivity(baseline=baseline, baseline_recommendation=base_rec, rows=rows, encoders=encoders,
                       metrics=list(metrics), strides=strides)
