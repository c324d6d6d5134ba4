"""Training run folders written by ``tools/train_net.py``: find them, read their config and final metrics.

A run folder holds ``config.yaml`` (the resolved config) and, once finished, ``final_metrics.json`` (the evaluation
that ends training) or ``eval_metrics.json`` (an ``eval_only`` run; its config is ``eval_config.yaml`` when the
trainer wrote one), each ``{"iteration": ..., "weights": ..., "results": {task: {metric: value}}}``; with several
test sets ``results`` is ``{test set: {task: {metric: value}}}``. A Hydra multirun folder holds one run folder per
job, at any depth.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .configs import ABSENT, flatten_config, format_value
from .errors import AnalysisError, UnfinishedRunError

__all__ = ["METRIC_ALIASES", "TrainingRun", "find_run_folders", "load_run", "load_runs", "metric_value",
           "random_init_note", "select_runs"]

#: headline metric names and where detectron2's evaluators put them: ``results[task][key]``.
METRIC_ALIASES: dict[str, tuple[str, str]] = {
    "AP": ("segm", "AP"),
    "PQ": ("panoptic_seg", "PQ"),
    "mIoU": ("sem_seg", "mIoU"),
}
_RESULT_FILES = {"final": ("final_metrics.json", "config.yaml"), "eval": ("eval_metrics.json", "eval_config.yaml")}
_SKIP_DIRS = ("inference", "eval_inference", "superseded", "plots")  # folders inside a run (or a profile) that hold no run


@dataclass(frozen=True)
class TrainingRun:
    """One finished training (or evaluation) run: its folder, resolved config and final results.

    ``flat``: the config with dotted keys (:func:`~mgfusion.analysis.configs.flatten_config`); ``results``:
    ``{task: {metric: value}}`` (a null value, e.g. an AP without ground truth, is NaN); ``random_init``: the
    encoders the run started from random weights, when its metrics file records them.
    """

    folder: Path
    config: dict[str, Any]
    results: dict[str, dict[str, float]]
    metrics_file: Path
    config_file: Path
    iteration: int | None = None
    random_init: tuple[str, ...] = ()
    flat: dict[str, Any] = field(default_factory=dict, repr=False)

    def value(self, metric: str) -> float:
        """The value of ``metric`` (a :data:`METRIC_ALIASES` name or ``task/key``, e.g. ``segm/AP50``)."""
        return metric_value(self.results, metric, where=str(self.metrics_file))

    def has(self, metric: str) -> bool:
        """Whether the results hold ``metric``."""
        task, key = _split_metric(metric)
        return key in (self.results.get(task) or {})


def _split_metric(metric: str) -> tuple[str, str]:
    if metric in METRIC_ALIASES:
        return METRIC_ALIASES[metric]
    if "/" in metric:
        task, key = metric.split("/", 1)
        return task, key
    raise AnalysisError(f"unknown metric {metric!r}: give one of {', '.join(METRIC_ALIASES)} or task/key "
                        "(e.g. segm/AP50, sem_seg/mIoU)")


def metric_value(results: Mapping[str, Mapping[str, Any]], metric: str, *, where: str) -> float:
    """``results[task][key]`` of ``metric`` as a float (null -> NaN); a missing entry names what exists."""
    task, key = _split_metric(metric)
    scores = results.get(task)
    if not isinstance(scores, Mapping) or key not in scores:
        have = {t: sorted(v) for t, v in results.items() if isinstance(v, Mapping)}
        raise AnalysisError(f"{where} has no {task}/{key} (metric {metric!r}); it holds {have}")
    v = scores[key]
    return float("nan") if v is None else float(v)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise AnalysisError(f"{path} is not valid YAML ({e}); is the run folder damaged?") from None
    if not isinstance(data, dict):
        raise AnalysisError(f"{path} does not hold a config mapping")
    return data


def _select_test_set(results: Mapping[str, Any], config: Mapping[str, Any], test_set: str | None,
                     where: Path) -> dict[str, Any]:
    tests = list((config.get("dataset") or {}).get("test") or [])
    per_test = len(tests) > 1 and set(results) <= set(tests)
    if not per_test:
        if test_set is not None and tests and test_set not in tests:
            raise AnalysisError(f"{where}: test set {test_set!r} was not evaluated; the run tested {tests}")
        return dict(results)
    if test_set is None:
        raise AnalysisError(f"{where} holds results for several test sets {sorted(results)}; choose one with "
                            "--test-set NAME")
    if test_set not in results:
        raise AnalysisError(f"{where} has no results for test set {test_set!r}; it has {sorted(results)}")
    return dict(results[test_set])


def load_run(folder: str | os.PathLike, *, results: str = "auto", test_set: str | None = None) -> TrainingRun:
    """Read one run folder.

    Args:
        folder: the run folder.
        results: ``final`` (``final_metrics.json`` + ``config.yaml``), ``eval`` (``eval_metrics.json`` +
            ``eval_config.yaml``, else ``config.yaml``) or ``auto`` (``final`` when the run finished training,
            else ``eval``). The file used is recorded in :attr:`TrainingRun.metrics_file`.
        test_set: which test set's results to use when the run evaluated several.
    """
    folder = Path(folder)
    if results not in ("auto", *_RESULT_FILES):
        raise AnalysisError(f"results={results!r} is invalid; use auto, final or eval")
    kinds = [results] if results != "auto" else [k for k in ("final", "eval")
                                                  if (folder / _RESULT_FILES[k][0]).is_file()][:1]
    if not kinds or not (folder / _RESULT_FILES[kinds[0]][0]).is_file():
        wanted = " or ".join(_RESULT_FILES[k][0] for k in (kinds or ["final", "eval"]))
        raise UnfinishedRunError(f"{folder} has no {wanted}: the run did not finish (or failed). Finish it "
                            "(tools/train_net.py ... resume=true) or leave it out")
    metrics_file, config_name = (folder / name for name in _RESULT_FILES[kinds[0]])
    config_file = config_name if config_name.is_file() else folder / "config.yaml"
    if not config_file.is_file():
        raise AnalysisError(f"{folder} has {metrics_file.name} but no config.yaml; the settings of its results are "
                            "unknown, so it cannot be placed in a table")
    config = _read_yaml(config_file)
    try:
        payload = json.loads(metrics_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AnalysisError(f"{metrics_file} is not valid JSON ({e})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("results"), dict):
        raise AnalysisError(f"{metrics_file} has no 'results' mapping; was it written by tools/train_net.py?")
    res = _select_test_set(payload["results"], config, test_set, metrics_file)
    random_init = payload.get("random_init") or ()
    return TrainingRun(folder=folder, config=config, results=res, metrics_file=metrics_file, config_file=config_file,
                       iteration=payload.get("iteration"), random_init=tuple(str(x) for x in random_init),
                       flat=flatten_config(config))


def find_run_folders(root: str | os.PathLike) -> list[Path]:
    """Every run folder under ``root`` (``root`` itself when it is one): folders holding ``config.yaml`` or
    ``eval_config.yaml``, in sorted order; hidden folders (Hydra's ``.hydra``) and a run's own subfolders are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise AnalysisError(f"{root} is not a folder")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS
                             and not d.startswith("overwritten-"))
        if "config.yaml" in filenames or "eval_config.yaml" in filenames:
            found.append(Path(dirpath))
            dirnames[:] = []  # a run's subfolders are its own (inference/, checkpoints)
    return sorted(found)


def load_runs(roots: Sequence[str | os.PathLike], *, results: str = "auto", test_set: str | None = None,
              allow_missing: bool = False) -> tuple[list[TrainingRun], list[tuple[Path, str]]]:
    """All finished runs under ``roots`` (run folders or multirun folders) and the unfinished ones.

    Returns ``(runs, unfinished)``; ``unfinished`` = ``[(folder, reason)]``. Unless ``allow_missing``, an
    unfinished run is an error that names every one of them.
    """
    runs: list[TrainingRun] = []
    unfinished: list[tuple[Path, str]] = []
    folders: dict[Path, Path] = {}  # resolved -> as found: a run under two of the roots is read once
    for root in roots:
        found = find_run_folders(root)
        if not found:
            raise AnalysisError(f"no training run under {root} (no config.yaml found); give a run folder or a "
                                "multirun folder of tools/train_net.py")
        for f in found:
            folders.setdefault(f.resolve(), f)
    for folder in folders.values():
        try:
            runs.append(load_run(folder, results=results, test_set=test_set))
        except UnfinishedRunError as e:
            unfinished.append((folder, str(e)))
    if unfinished and not allow_missing:
        listed = "\n".join(f"  {f}" for f, _ in unfinished)
        raise AnalysisError(f"{len(unfinished)} run(s) have no final_metrics.json / eval_metrics.json (unfinished "
                            f"or failed):\n{listed}\nFinish them (same command + resume=true), remove them, or pass "
                            "--allow-missing to tabulate the others (missing cells are marked).")
    return runs, unfinished


def random_init_note(runs: Sequence[TrainingRun]) -> str:
    """A Markdown warning listing the runs whose metrics file records encoders started from random weights
    (empty when none)."""
    hit = [r for r in runs if r.random_init]
    if not hit:
        return ""
    return ("\n**Warning: some runs started from random weights** (recorded in their metrics files):\n"
            + "".join(f"- `{r.folder}`: {', '.join(r.random_init)}\n" for r in hit))


def select_runs(runs: Sequence[TrainingRun], where: Mapping[str, str]) -> list[TrainingRun]:
    """The runs whose config value of every ``where`` key, written as on the command line (``true``, ``16``,
    ``dinov3_vitb16``), equals the given text. A key no run has, or a filter that keeps nothing, is an error."""
    for key in where:
        if not any(key in r.flat for r in runs):
            raise AnalysisError(f"--where {key}=...: no run has the config key {key!r}")
    kept = [r for r in runs if all(format_value(r.flat.get(k, ABSENT)) == v for k, v in where.items())]
    if not kept:
        seen = {k: sorted({format_value(r.flat.get(k, ABSENT)) for r in runs}) for k in where}
        raise AnalysisError(f"no run matches {dict(where)}; the runs have {seen}")
    return kept
