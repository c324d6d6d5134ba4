"""The second half of the paper's RQ4 (Table 7, right): does the auxiliary's per-stride EF rank the strides the way
the fused runs' gains over the master alone do?

Input: a profile (the auxiliary's mean EF per stride), the fused runs of one setting over a stride sweep, and the
master-only run trained under the same settings. Output: per stride EF, the fused metric and its gain over the
master-only run, and Spearman / Kendall correlations between EF and the gain
(:func:`~mgfusion.analysis.stats.rank_correlation`; the paper's four strides give rho = 0.8, p = 0.2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .configs import ABSENT, NOT_A_SETTING, describe, format_value
from .errors import AnalysisError
from .profiles import Profile
from .render import csv_text, fmt, markdown_table
from .runs import TrainingRun, random_init_note
from .stats import RankCorrelation, rank_correlation
from .stride_grid import (
    AUX_KEY,
    MASTER_KEY,
    STRIDE_KEY,
    TRAIN_MASTER_KEY,
    Setting,
    group_settings,
)

__all__ = ["EfGain", "correlate_ef_gain", "ef_gain_from_runs"]

#: the encoder name, and whether it is frozen, in a single-encoder (master-only) run's config.
BASELINE_ENCODER_KEY = "backbone.name"
BASELINE_FREEZE_KEY = "backbone.freeze"


@dataclass
class EfGain:
    """EF per stride against the metric gain of fused runs over the master-only run (see the module docstring)."""

    encoder: str
    metric: str
    ef: dict[int, float]
    fused: dict[int, float]
    baseline: float
    correlation: RankCorrelation
    profile: str = ""
    profile_source: str = ""
    setting: str = ""
    fused_runs: dict[int, Path] = field(default_factory=dict)
    baseline_run: Path | None = None
    missing: list[int] = field(default_factory=list)
    random_init: str = ""  # the warning of :func:`~mgfusion.analysis.runs.random_init_note`, when any

    @property
    def strides(self) -> list[int]:
        """The strides that enter the correlation."""
        return sorted(self.fused)

    @property
    def gain(self) -> dict[int, float]:
        """Fused metric minus the master-only metric, per stride (metric points)."""
        return {s: v - self.baseline for s, v in sorted(self.fused.items())}

    def markdown(self, digits: int = 2) -> str:
        """Table, correlations, the small-n warning and the runs it came from."""
        m = self.metric
        out = [f"# EF of {self.encoder} vs {m} gain of the fused runs over the master alone (paper Table 7, RQ4)\n\n"]
        if self.profile:
            out.append(f"EF from profile `{self.profile}` ({self.profile_source}). ")
        if self.setting:
            out.append(f"Fused runs: {self.setting}. ")
        out.append(f"Master-only baseline: {m} = {fmt(self.baseline, digits)}"
                   + (f" (`{self.baseline_run}`)" if self.baseline_run else "") + ".\n\n")
        rows = [[f"{s}", fmt(self.ef[s], 2), fmt(self.fused[s], digits), fmt(self.gain[s], digits, signed=True)]
                for s in self.strides]
        out.append(markdown_table(["OS", f"EF ({self.encoder})", f"{m} fused", f"Δ{m}"], rows, right=[True] * 4))
        out.append(f"\n**{self.correlation.sentence()}**\n\n")
        if self.correlation.warning:
            out.append(f"> **Warning: {self.correlation.warning}**\n\n")
        out.append("p: two-sided. `p` is the t-distribution approximation (scipy.stats.spearmanr, what papers usually "
                   "quote); `exact p` is the fraction of the n! orderings of the points whose |ρ| is at least the "
                   "observed one; Kendall's p is scipy's (exact for small n without ties).\n")
        if self.missing:
            out.append(f"\nProfiled strides without a fused run (left out): {', '.join(map(str, self.missing))}\n")
        out.append(self.random_init)
        if self.fused_runs:
            out.append("\n## Runs\n\n" + markdown_table(
                ["stride", "run folder"], [[f"OS{s}", f"`{p}`"] for s, p in sorted(self.fused_runs.items())]
                + ([["master only", f"`{self.baseline_run}`"]] if self.baseline_run else [])))
        return "".join(out)

    def csv(self) -> str:
        """One row per stride: EF, fused metric, baseline metric, gain and the run folders."""
        header = ["stride", "encoder", "ef", "metric", "fused", "baseline", "gain", "fused_run", "baseline_run",
                  "profile"]
        return csv_text(header, [{"stride": s, "encoder": self.encoder, "ef": self.ef[s], "metric": self.metric,
                                  "fused": self.fused[s], "baseline": self.baseline, "gain": self.gain[s],
                                  "fused_run": self.fused_runs.get(s, ""), "baseline_run": self.baseline_run or "",
                                  "profile": self.profile} for s in self.strides])

    def correlation_csv(self) -> str:
        """One row: the correlation fields (n, rho, p, exact p, smallest reachable p, tau, its p, warning)."""
        d = self.correlation.to_dict()
        return csv_text(["encoder", "metric", *d], [{"encoder": self.encoder, "metric": self.metric, **d}])


def correlate_ef_gain(ef: dict[int, float], fused: dict[int, float], baseline: float, *, encoder: str = "EF",
                      metric: str = "AP", **info) -> EfGain:
    """EF per stride against ``fused[stride] - baseline`` (pure; the strides of ``fused`` must have an EF)."""
    lacking = sorted(set(fused) - set(ef))
    if lacking:
        raise AnalysisError(f"strides {lacking} have fused results but no EF of {encoder} (EF strides: {sorted(ef)})")
    strides = sorted(fused)
    corr = rank_correlation([ef[s] for s in strides], [fused[s] - baseline for s in strides])
    return EfGain(encoder=encoder, metric=metric, ef={s: ef[s] for s in strides}, fused=dict(sorted(fused.items())),
                  baseline=baseline, correlation=corr, **info)


def _check_baseline(setting: Setting, baseline: TrainingRun, ignore_keys: Iterable[str]) -> None:
    fused = next(iter(setting.runs.values()))
    if AUX_KEY in baseline.flat:
        raise AnalysisError(f"the baseline {baseline.folder} is a fused run ({AUX_KEY} in its config); give the run "
                            "of the master encoder alone (tools/train_net.py backbone=<master encoder> ...)")
    master = fused.flat.get(MASTER_KEY)
    alone = baseline.flat.get(BASELINE_ENCODER_KEY, ABSENT)
    if alone is not ABSENT and alone != master:
        raise AnalysisError(f"the baseline {baseline.folder} trains {alone}, but the fused runs' master is {master}; "
                            "give the master-only run of the same encoder")
    trained, frozen = fused.flat.get(TRAIN_MASTER_KEY), baseline.flat.get(BASELINE_FREEZE_KEY)
    if isinstance(trained, bool) and isinstance(frozen, bool) and trained == frozen:
        raise AnalysisError(f"the fused runs' master is {'fine-tuned' if trained else 'frozen'} "
                            f"({TRAIN_MASTER_KEY}={format_value(trained)}) but the master-only run {baseline.folder} "
                            f"{'froze' if frozen else 'fine-tuned'} its encoder ({BASELINE_FREEZE_KEY}="
                            f"{format_value(frozen)}); the gain must compare like with like")
    skip = {*NOT_A_SETTING, *ignore_keys}
    diffs = [k for k in sorted(set(fused.flat) | set(baseline.flat))
             if not k.startswith("backbone.") and k not in skip
             and format_value(fused.flat.get(k, ABSENT)) != format_value(baseline.flat.get(k, ABSENT))]
    if diffs:
        shown = "\n".join(f"  {k}: fused {format_value(fused.flat.get(k, ABSENT))}, "
                          f"master-only {format_value(baseline.flat.get(k, ABSENT))}" for k in diffs[:12])
        raise AnalysisError(f"the master-only run {baseline.folder} was trained under other settings than the fused "
                            f"runs (e.g. {fused.folder}):\n{shown}\nA gain over it would mix in those differences. "
                            "Train the baseline with the same settings, or accept a difference explicitly with "
                            "--ignore-key KEY")


def ef_gain_from_runs(profile: Profile, fused_runs: Sequence[TrainingRun], baseline: TrainingRun, *,
                      encoder: str | None = None, metric: str = "AP", stride_key: str = STRIDE_KEY,
                      ignore_keys: Iterable[str] = (), allow_missing: bool = False) -> EfGain:
    """RQ4 from run folders: the fused runs must form one setting; the baseline must match their settings.

    Args:
        profile: where the EF comes from.
        fused_runs: finished fused runs of one setting, one per stride.
        baseline: the master-only run.
        encoder: the encoder's name in the profile; default: the fused runs' auxiliary.
        metric: ``AP``, ``PQ``, ``mIoU`` or ``task/key``.
        allow_missing: correlate over the trained strides when the profile has more.
    """
    ignore_keys = list(ignore_keys)
    settings, keys = group_settings(fused_runs, stride_key=stride_key, ignore_keys=ignore_keys)
    if len(settings) != 1:
        listed = "\n".join(f"  {s.name}: {describe(s.values, keys)}" for s in settings)
        raise AnalysisError(f"the fused runs form {len(settings)} settings; the correlation needs one:\n{listed}\n"
                            "Select one with --where KEY=VALUE (e.g. --where backbone.train_master=true)")
    setting = settings[0]
    fused_dataset = setting.runs[next(iter(setting.runs))].flat.get("dataset.name")
    if baseline.flat.get("dataset.name") != fused_dataset:
        raise AnalysisError(f"the master-only run {baseline.folder} is on dataset "
                            f"{baseline.flat.get('dataset.name')}, the fused runs on {fused_dataset}")
    _check_baseline(setting, baseline, ignore_keys)
    encoder = encoder or setting.auxiliary
    ef = profile.means(encoder, "EF")
    missing = sorted(set(ef) - set(setting.runs))
    if missing and not allow_missing:
        raise AnalysisError(f"the profile has EF at strides {missing} but there is no fused run there (trained: "
                            f"{sorted(setting.runs)}). Train them, or pass --allow-missing to correlate over the "
                            "trained strides")
    fused = {s: r.value(metric) for s, r in setting.runs.items()}
    base = baseline.value(metric)
    if not math.isfinite(base):
        raise AnalysisError(f"{baseline.metrics_file}: {metric} is null/NaN; no gain can be computed")
    return correlate_ef_gain(
        ef, fused, base, encoder=encoder, metric=metric, profile=str(profile.folder),
        profile_source=profile.describe_source(),
        setting=(f"master {setting.master} ({setting.master_training}), auxiliary {setting.auxiliary}"
                 + (f"; {describe(setting.values, keys)}" if keys else "")),
        fused_runs={s: r.folder for s, r in setting.runs.items()}, baseline_run=baseline.folder, missing=missing,
        random_init=random_init_note([*(r for _, r in sorted(setting.runs.items())), baseline]))
