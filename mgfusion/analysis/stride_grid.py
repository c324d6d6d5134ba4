"""The paper's Table 6 (RQ3): fused runs over a stride sweep x settings, the EF-chosen and the best stride.

Input: finished fused training runs (one per setting and injection stride ``backbone.fusion.stride``) of one
dataset, and the per-stride EF of each setting's auxiliary encoder from a profile. A *setting* is a combination of
values of the config keys that vary between the runs, other than the stride and the keys that do not change what
is trained (:data:`~mgfusion.analysis.configs.NOT_A_SETTING`): e.g. master trained or frozen
(``backbone.train_master``) and which encoder is master (D3S2 / S2D3). For every setting and metric the table marks
the best stride and the stride with the auxiliary's highest EF (the metric-guided choice,
:func:`~mgfusion.profiling.selection.argmax_stride`), and reports the gap: best value minus the value at the
EF-chosen stride (0 when the EF choice is best, ties included).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgfusion.profiling.selection import argmax_stride

from .configs import ABSENT, NOT_A_SETTING, describe, format_value, varying_keys
from .errors import AnalysisError
from .profiles import Profile
from .render import csv_text, fmt, markdown_table
from .runs import METRIC_ALIASES, TrainingRun, random_init_note

__all__ = ["AUX_KEY", "MASTER_KEY", "STRIDE_KEY", "TRAIN_MASTER_KEY", "Setting", "StrideChoice", "StrideGrid",
           "auxiliary_ef_from_profile", "build_stride_grid", "group_settings"]

STRIDE_KEY = "backbone.fusion.stride"
MASTER_KEY = "backbone.master.name"
AUX_KEY = "backbone.auxiliary.name"
TRAIN_MASTER_KEY = "backbone.train_master"
_TIE = 1e-9  # values closer than this are a tie for "best"


@dataclass(frozen=True)
class Setting:
    """One setting: its letter, the values of the varying config keys, and its run per stride."""

    name: str
    values: dict[str, Any]
    master: str
    auxiliary: str
    train_master: bool | None
    runs: dict[int, TrainingRun]

    @property
    def master_training(self) -> str:
        """``FT`` (master fine-tuned), ``FZ`` (frozen) or ``?`` (not in the config)."""
        return {True: "FT", False: "FZ"}.get(self.train_master, "?")


@dataclass(frozen=True)
class StrideChoice:
    """For one setting and metric: the value per stride, the best stride(s), the EF-chosen stride and the gap.

    ``gap`` = best value - value at the EF-chosen stride (metric points, >= 0); None when either is unknown
    (no profile, no run at the EF-chosen stride, or only NaN values).
    """

    setting: str
    metric: str
    values: dict[int, float]
    best_strides: list[int]
    best_value: float | None
    ef_stride: int | None
    ef_value: float | None
    gap: float | None

    @property
    def matches(self) -> bool | None:
        """Whether the EF-chosen stride is (one of) the best; None when unknown."""
        if self.ef_stride is None or not self.best_strides or self.ef_value is None:
            return None
        return self.ef_stride in self.best_strides


@dataclass
class StrideGrid:
    """Table 6: settings x strides for each metric, with the EF choice (see the module docstring)."""

    dataset: str
    strides: list[int]
    metrics: list[str]
    settings: list[Setting]
    setting_keys: list[str]
    choices: dict[tuple[str, str], StrideChoice]
    auxiliary_ef: dict[str, tuple[str, dict[int, float]]] = field(default_factory=dict)
    profile: str | None = None
    missing: list[tuple[str, int]] = field(default_factory=list)
    unfinished: list[tuple[Path, str]] = field(default_factory=list)
    ignored_keys: list[str] = field(default_factory=list)

    # ---- text ------------------------------------------------------------------------------------------------
    def markdown(self, digits: int = 1) -> str:
        """The whole report: one table per metric, the auxiliaries' EF, the settings and the runs."""
        out = [f"# Injection stride sweep (paper Table 6): dataset {self.dataset}\n\n"]
        if self.profile:
            out.append(f"EF of each setting's auxiliary from profile `{self.profile}`. **bold** = best stride of the "
                       "row; <u>underlined</u> = stride with the auxiliary's highest EF (the metric-guided choice); "
                       "gap = best − EF-chosen, in metric points.\n")
        else:
            out.append("No profile given: the EF-chosen stride and the gap are not reported. **bold** = best stride "
                       "of the row.\n")
        for metric in self.metrics:
            out.append(f"\n## {metric}\n\n" + self._metric_table(metric, digits) + "\n" + self.verdict(metric) + "\n")
        if self.auxiliary_ef:
            out.append("\n## Auxiliary EF per stride (profile)\n\n" + self._ef_table())
        out.append("\n## Settings\n\nSettings are the values of the config keys that differ between the runs "
                   f"(the stride `{STRIDE_KEY}` and run-layout keys excluded"
                   + (f"; also ignored on request: {', '.join(self.ignored_keys)}" if self.ignored_keys else "")
                   + "):\n\n")
        out += [f"- {s.name}: {describe(s.values, self.setting_keys)}\n" for s in self.settings]
        out.append("\n## Runs\n\n" + self._runs_table())
        if self.missing:
            out.append("\nMissing runs (cells marked `missing`): "
                       + ", ".join(f"setting {n} at OS{s}" for n, s in self.missing) + "\n")
        if self.unfinished:
            out.append("\nUnfinished runs left out:\n" + "".join(f"- `{f}`\n" for f, _ in self.unfinished))
        out.append(random_init_note([r for s in self.settings for _, r in sorted(s.runs.items())]))
        return "".join(out)

    def _metric_table(self, metric: str, digits: int) -> str:
        head = ["Setting", "master", "auxiliary", "master training", *[f"OS{s}" for s in self.strides]]
        if self.profile:
            head += ["EF stride", "best stride", "gap"]
        else:
            head += ["best stride"]
        rows = []
        for s in self.settings:
            c = self.choices[(s.name, metric)]
            cells = []
            for stride in self.strides:
                if stride not in s.runs:
                    cells.append("missing")
                    continue
                text = fmt(c.values[stride], digits)
                if stride in c.best_strides:
                    text = f"**{text}**"
                if stride == c.ef_stride:
                    text = f"<u>{text}</u>"
                cells.append(text)
            best = ", ".join(f"{b}" for b in c.best_strides) + (" (tie)" if len(c.best_strides) > 1 else "")
            row = [s.name, s.master, s.auxiliary, s.master_training, *cells]
            row += ([str(c.ef_stride), best or "–", fmt(c.gap, digits)] if self.profile else [best or "–"])
            rows.append(row)
        right = [False] * 4 + [True] * (len(head) - 4)
        return markdown_table(head, rows, right=right)

    def verdict(self, metric: str) -> str:
        """One sentence: in how many settings the EF choice is best, and the mean / max gap."""
        cs = [self.choices[(s.name, metric)] for s in self.settings]
        known = [c for c in cs if c.matches is not None]
        if not self.profile:
            return "No EF choice without a profile."
        if not known:
            return "The EF-chosen stride has no (finite) result in any setting; no gap can be reported."
        hits = sum(bool(c.matches) for c in known)
        gaps = [c.gap for c in known if c.gap is not None]
        worst = max(known, key=lambda c: c.gap or 0.0)
        text = (f"EF-chosen stride = best stride ({metric}) in {hits} of {len(known)} settings; gap best − EF-chosen: "
                f"mean {fmt(sum(gaps) / len(gaps), 2)}, max {fmt(worst.gap, 2)} (setting {worst.setting}).")
        if len(known) < len(cs):
            text += f" {len(cs) - len(known)} setting(s) without a result at their EF-chosen stride."
        return text

    def _ef_table(self) -> str:
        strides = sorted({s for _, ef in self.auxiliary_ef.values() for s in ef})
        head = ["auxiliary (config)", "profile encoder", *[f"EF OS{s}" for s in strides], "argmax"]
        rows = [[aux, name, *[fmt(ef.get(s), 2) for s in strides], str(argmax_stride(ef))]
                for aux, (name, ef) in sorted(self.auxiliary_ef.items())]
        return markdown_table(head, rows, right=[False, False] + [True] * (len(strides) + 1))

    def _runs_table(self) -> str:
        rows = [[s.name, f"OS{st}", f"`{r.folder}`", r.metrics_file.name, str(r.iteration)]
                for s in self.settings for st, r in sorted(s.runs.items())]
        return markdown_table(["Setting", "stride", "run folder", "results", "iteration"], rows)

    def csv(self) -> str:
        """Long CSV: one row per (setting, stride, metric) with the setting's config values and the run folder."""
        header = ["setting", *self.setting_keys, "master", "auxiliary", "master_training", "stride", "metric",
                  "value", "best", "ef_choice", "run_folder", "metrics_file"]
        rows = []
        for s in self.settings:
            for metric in self.metrics:
                c = self.choices[(s.name, metric)]
                for stride in self.strides:
                    run = s.runs.get(stride)
                    rows.append({"setting": s.name, **{k: format_value(s.values.get(k, ABSENT))
                                                       for k in self.setting_keys},
                                 "master": s.master, "auxiliary": s.auxiliary, "master_training": s.master_training,
                                 "stride": stride, "metric": metric, "value": c.values.get(stride, ""),
                                 "best": stride in c.best_strides, "ef_choice": stride == c.ef_stride,
                                 "run_folder": run.folder if run else "missing",
                                 "metrics_file": run.metrics_file.name if run else ""})
        return csv_text(header, rows)

    def gaps_csv(self) -> str:
        """One row per (setting, metric): EF-chosen stride and value, best stride(s) and value, gap, match."""
        header = ["setting", "metric", "auxiliary", "profile", "ef_stride", "ef_value", "best_strides", "best_value",
                  "gap", "ef_is_best"]
        rows = [{"setting": c.setting, "metric": c.metric, "auxiliary": s.auxiliary, "profile": self.profile or "",
                 "ef_stride": "" if c.ef_stride is None else c.ef_stride,
                 "ef_value": "" if c.ef_value is None else c.ef_value,
                 "best_strides": " ".join(map(str, c.best_strides)),
                 "best_value": "" if c.best_value is None else c.best_value,
                 "gap": "" if c.gap is None else c.gap, "ef_is_best": "" if c.matches is None else c.matches}
                for s in self.settings for m in self.metrics for c in [self.choices[(s.name, m)]]]
        return csv_text(header, rows)


def _letters(i: int) -> str:
    name = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        name = chr(ord("A") + r) + name
    return name


def _label(setting: Setting, keys: Sequence[str]) -> str:
    """``A (backbone.train_master=false)``, or just ``A`` when there is one setting."""
    return f"{setting.name} ({describe(setting.values, keys)})" if keys else setting.name


def _stride_of(run: TrainingRun, stride_key: str) -> int:
    v = run.flat.get(stride_key, ABSENT)
    if isinstance(v, bool) or not isinstance(v, int):
        why = ("is not in the config" if v is ABSENT else
               "is null (the stride was chosen from a profile or per batch, so the config does not say which)"
               if v is None else f"is {format_value(v)} (several strides)" if isinstance(v, tuple) else f"is {v!r}")
        raise AnalysisError(f"run {run.folder}: {stride_key} {why}; a stride sweep needs one explicit stride per "
                            f"run (tools/train_net.py -m {stride_key}=4,8,16,32)")
    return v


def group_settings(runs: Sequence[TrainingRun], *, stride_key: str = STRIDE_KEY,
                   ignore_keys: Iterable[str] = ()) -> tuple[list[Setting], list[str]]:
    """Group fused runs into settings by the config keys that vary between them (see the module docstring).

    Returns ``(settings, varying keys)``. Settings are lettered A, B, ... in the order (master, fine-tuned before
    frozen, auxiliary, other values). Errors: a run that is not a fused run, a run without one explicit stride,
    runs of more than one dataset, two runs of the same setting and stride.
    """
    if not runs:
        raise AnalysisError("no finished runs to tabulate")
    datasets: dict[str, list[Path]] = {}
    for r in runs:
        datasets.setdefault(format_value(r.flat.get("dataset.name", ABSENT)), []).append(r.folder)
    if len(datasets) > 1:
        listed = "\n".join(f"  {d}: {', '.join(str(f) for f in fs[:3])}{' ...' if len(fs) > 3 else ''}"
                           for d, fs in sorted(datasets.items()))
        raise AnalysisError(f"the runs belong to {len(datasets)} datasets; a table compares runs of one dataset:\n"
                            f"{listed}\nGive the multirun folder of one dataset (outputs/multirun/<dataset>)")
    for r in runs:
        if AUX_KEY not in r.flat:
            raise AnalysisError(f"run {r.folder} is not a fused run ({AUX_KEY} is not in {r.config_file}); "
                                "give the folder of the fused stride sweep (its master-only baseline goes to "
                                "the rq4 command's --baseline)")
    strides = {id(r): _stride_of(r, stride_key) for r in runs}
    keys = varying_keys([r.flat for r in runs], exclude={*NOT_A_SETTING, stride_key, *ignore_keys})
    groups: dict[tuple[str, ...], list[TrainingRun]] = {}
    for r in runs:
        groups.setdefault(tuple(json.dumps(format_value(r.flat.get(k, ABSENT))) for k in keys), []).append(r)

    def order(members: list[TrainingRun]) -> tuple:
        f = members[0].flat
        return (str(f.get(MASTER_KEY)), f.get(TRAIN_MASTER_KEY) is not True, str(f.get(AUX_KEY)),
                [format_value(f.get(k, ABSENT)) for k in keys])

    settings = []
    for i, members in enumerate(sorted(groups.values(), key=order)):
        by_stride: dict[int, TrainingRun] = {}
        for r in members:
            s = strides[id(r)]
            if s in by_stride:
                raise AnalysisError(f"two runs of the same setting at stride {s}: {by_stride[s].folder} and "
                                    f"{r.folder}; their configs agree apart from run-layout keys (or keys ignored "
                                    "with --ignore-key), so they are the same experiment. Leave one out")
            by_stride[s] = r
        f = members[0].flat
        tm = f.get(TRAIN_MASTER_KEY)
        settings.append(Setting(name=_letters(i), values={k: f.get(k, ABSENT) for k in keys},
                                master=str(f.get(MASTER_KEY, "?")), auxiliary=str(f[AUX_KEY]),
                                train_master=tm if isinstance(tm, bool) else None,
                                runs=dict(sorted(by_stride.items()))))
    return settings, keys


def auxiliary_ef_from_profile(profile: Profile, auxiliaries: Iterable[str],
                              names: Mapping[str, str] | None = None) -> dict[str, tuple[str, dict[int, float]]]:
    """``{auxiliary: (profile encoder, {stride: mean EF})}`` for each auxiliary named in the run configs.

    ``names``: ``{name in the run configs: name in the profile}`` where they differ (default: the same name).
    """
    names = dict(names or {})
    out = {}
    for aux in sorted(set(auxiliaries)):
        name = names.get(aux, aux)
        if not profile.has(name):
            raise AnalysisError(f"the runs' auxiliary {aux!r} is not in profile {profile.folder} (profiled: "
                                f"{', '.join(profile.encoders)}); name its profile encoder with --profile-encoder "
                                f"{aux}=NAME")
        out[aux] = (name, profile.means(name, "EF"))
    return out


def _default_metrics(runs: Sequence[TrainingRun]) -> list[str]:
    found = [m for m in METRIC_ALIASES if all(r.has(m) for r in runs)]
    if not found:
        raise AnalysisError(f"none of {', '.join(METRIC_ALIASES)} is in the results of every run "
                            f"(e.g. {runs[0].metrics_file} holds {sorted(runs[0].results)}); choose --metric task/key")
    return found


def _choice(setting: Setting, metric: str, ef_stride: int | None) -> StrideChoice:
    values = {s: r.value(metric) for s, r in setting.runs.items()}
    finite = {s: v for s, v in values.items() if math.isfinite(v)}
    best_value = max(finite.values()) if finite else None
    best = sorted(s for s, v in finite.items() if best_value is not None and best_value - v <= _TIE)
    ef_value = finite.get(ef_stride) if ef_stride is not None else None
    gap = None if ef_value is None or best_value is None else max(0.0, best_value - ef_value)
    return StrideChoice(setting=setting.name, metric=metric, values=values, best_strides=best, best_value=best_value,
                        ef_stride=ef_stride, ef_value=ef_value, gap=gap)


def build_stride_grid(runs: Sequence[TrainingRun], *, metrics: Sequence[str] | None = None,
                      auxiliary_ef: Mapping[str, tuple[str, Mapping[int, float]]] | None = None,
                      profile: str | None = None, stride_key: str = STRIDE_KEY, ignore_keys: Iterable[str] = (),
                      allow_missing: bool = False, unfinished: Sequence[tuple[Path, str]] = ()) -> StrideGrid:
    """Table 6 from finished fused runs (see the module docstring).

    Args:
        runs: the finished runs of one dataset (a sweep over ``stride_key`` x settings).
        metrics: metric names (``AP``, ``PQ``, ``mIoU`` or ``task/key``); default: those of AP / PQ / mIoU that
            every run has.
        auxiliary_ef: ``{auxiliary name in the run configs: (encoder name in the profile, {stride: mean EF})}``
            for every setting's auxiliary; None = no EF choice.
        profile: the profile folder the EF comes from (named in the table).
        ignore_keys: config keys whose differences must not split settings (e.g. a changed ``device``).
        allow_missing: tabulate a grid with missing (setting, stride) cells instead of refusing it.
        unfinished: runs left out because they did not finish (listed in the report).
    """
    ignore_keys = list(ignore_keys)
    settings, keys = group_settings(runs, stride_key=stride_key, ignore_keys=ignore_keys)
    ef_map = {aux: (name, dict(sorted((int(k), float(v)) for k, v in ef.items())))
              for aux, (name, ef) in (auxiliary_ef or {}).items()}
    ef_strides: dict[str, int] = {}
    if auxiliary_ef is not None:
        for st in settings:
            if st.auxiliary not in ef_map:
                raise AnalysisError(f"no EF for auxiliary {st.auxiliary!r} of setting {st.name}; the profile holds "
                                    f"{sorted(ef_map)}")
            ef_strides[st.name] = argmax_stride(ef_map[st.auxiliary][1])
    # the columns: every trained stride and every EF-chosen one (an untrained EF choice is a missing cell)
    strides = sorted({s for st in settings for s in st.runs} | set(ef_strides.values()))
    missing = [(st.name, s) for st in settings for s in strides if s not in st.runs]
    if missing and not allow_missing:
        listed = "\n".join(
            f"  setting {_label(next(x for x in settings if x.name == n), keys)} at stride {s}"
            + (" (its auxiliary's EF-chosen stride)" if ef_strides.get(n) == s else "") for n, s in missing)
        raise AnalysisError(f"the grid has {len(missing)} missing run(s):\n{listed}\nTrain them, or pass "
                            "--allow-missing to tabulate the others")
    metrics = list(metrics) if metrics else _default_metrics(runs)
    choices = {(st.name, m): _choice(st, m, ef_strides.get(st.name)) for st in settings for m in metrics}
    dataset = format_value(runs[0].flat.get("dataset.name", ABSENT))
    return StrideGrid(dataset=dataset, strides=strides, metrics=metrics, settings=settings, setting_keys=keys,
                      choices=choices, auxiliary_ef=ef_map, profile=profile, missing=missing,
                      unfinished=list(unfinished), ignored_keys=ignore_keys)
