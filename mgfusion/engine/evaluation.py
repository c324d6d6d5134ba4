"""Evaluation wiring: run the dataset's evaluator over each test set, print tables, save the metrics as JSON.

With several test sets (e.g. the domain-generalisation protocol: train on GTA5, test on Cityscapes, BDD100K and
Mapillary) the results also hold an ``"average"`` row, the unweighted mean of each headline metric (mIoU, AP, PQ)
over the test sets (:func:`average_over_targets`), and the log shows one table row per test set plus the average.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from detectron2.evaluation import inference_on_dataset
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table
from hydra.utils import instantiate
from omegaconf import DictConfig
from tabulate import tabulate
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mgfusion.utils.io import atomic_write_text

from .data import build_test_loader

__all__ = [
    "AVERAGE_KEY",
    "HEADLINE_METRICS",
    "average_definition",
    "average_over_targets",
    "evaluate",
    "format_results",
    "per_target_table",
    "plain_results",
    "test_time_summary",
    "write_metrics_json",
]

#: key of the average row in the results of several test sets
AVERAGE_KEY = "average"
#: result key -> the metric averaged over test sets (semantic mIoU, mask AP, PQ)
HEADLINE_METRICS = {"sem_seg": "mIoU", "segm": "AP", "panoptic_seg": "PQ"}

logger = logging.getLogger(__name__)


def evaluate(model: nn.Module, dataset_cfg: DictConfig, *, output_dir: str, num_workers: int = 0,
             loaded: Mapping[str, list[dict]] | None = None,
             test_time: Mapping[str, Any] | None = None, inference_dir: str = "inference") -> dict[str, Any]:
    """Evaluate ``model`` on every ``dataset.test`` name with the dataset's evaluator (all ranks must call this).

    Args:
        output_dir: the run folder; the evaluators write into ``<output_dir>/<inference_dir>/<dataset name>/``
            (``eval_inference`` for ``eval_only``, so a training run's final evaluation files are kept).
        loaded: test dataset dicts already read (:func:`~mgfusion.engine.data.load_datasets`).
        test_time: the ``test_time`` config node (whole image, sliding window, TTA; see
            :mod:`mgfusion.inference.test_time`); None = whole image. :func:`test_time_summary` gives what to record.

    Returns:
        detectron2's convention: ``{task: {metric: value}}`` for one test set, ``{name: {task: {...}}}`` for several,
        then with the row ``"average"`` (:func:`average_over_targets`); ``{}`` on non-main ranks of a distributed run.
    """
    if len(dataset_cfg.test) > 1 and AVERAGE_KEY in dataset_cfg.test:
        raise ValueError(f"a test set may not be named {AVERAGE_KEY!r}: that key holds the average over test sets")
    if isinstance(model, DistributedDataParallel):
        model = model.module  # ranks see different numbers of images: no collective calls in forward
    model = _with_test_time(model, dataset_cfg, test_time)
    make_evaluator = instantiate(dataset_cfg.evaluator, _convert_="all")
    results: dict[str, Any] = OrderedDict()
    for name in dataset_cfg.test:
        loader = build_test_loader(dataset_cfg, name, num_workers=num_workers, loaded=loaded)
        evaluator = make_evaluator(dataset_name=name, output_dir=os.path.join(output_dir, inference_dir, name))
        with torch.no_grad():
            results[name] = inference_on_dataset(model, loader, evaluator)
        if comm.is_main_process():
            logger.info("Evaluation results for %s:\n%s", name, format_results(results[name]))
    if not comm.is_main_process():
        return {}
    results = plain_results(results)
    if len(results) == 1:
        return results[dataset_cfg.test[0]]
    results[AVERAGE_KEY] = average_over_targets(results)
    logger.info("Results per test set (%s):\n%s", average_definition(results[AVERAGE_KEY]), per_target_table(results))
    return results


def average_over_targets(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The average row of several test sets' results ``{name: {task: {metric: value}}}``.

    For each headline metric of :data:`HEADLINE_METRICS` that every test set reports, the unweighted mean of the
    per-test-set values (a mean of scores, not a score of the pooled images; NaN if any value is NaN). Only numbers,
    as detectron2's evaluation hook requires of results.

    Returns:
        ``{task: {metric: mean}, ..., "num_test_sets": n}``.
    """
    targets = [name for name in results if name != AVERAGE_KEY]
    row: dict[str, Any] = {}
    for task, metric in HEADLINE_METRICS.items():
        values = [results[name].get(task, {}).get(metric) for name in targets]
        if targets and all(isinstance(v, (int, float)) for v in values):
            row[task] = {metric: math.fsum(values) / len(values)}
    row["num_test_sets"] = len(targets)
    return row


def average_definition(average: Mapping[str, Any]) -> str:
    """What the average row of :func:`average_over_targets` is, in words (for logs and reports)."""
    metrics = [HEADLINE_METRICS[task] for task in average if task in HEADLINE_METRICS]
    return (f"'{AVERAGE_KEY}' = unweighted mean over the {average['num_test_sets']} test sets of each one's "
            f"{', '.join(metrics) or 'metric (none is common to all test sets)'}")  # fmt: skip


def per_target_table(results: Mapping[str, Any]) -> str:
    """A Markdown table with one row per test set and the average row; columns are the headline metrics any test
    set reports (``-`` where a test set lacks one)."""
    targets = [name for name in results if name != AVERAGE_KEY]
    columns = [(task, metric) for task, metric in HEADLINE_METRICS.items()
               if any(metric in results[name].get(task, {}) for name in targets)]  # fmt: skip

    def cells(scores: Mapping[str, Any]) -> list[str]:
        values = [scores.get(task, {}).get(metric) for task, metric in columns]
        return [f"{v:.2f}" if isinstance(v, (int, float)) else "-" for v in values]

    rows = [[name, *cells(results[name])] for name in targets]
    if AVERAGE_KEY in results:
        rows.append([f"{AVERAGE_KEY} (mean of {len(targets)} test sets)", *cells(results[AVERAGE_KEY])])
    headers = ["test set", *(f"{metric} ({task})" for task, metric in columns)]
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True,
                    colalign=("left", *("right" for _ in columns)))  # fmt: skip


def _with_test_time(model: nn.Module, dataset_cfg: DictConfig, test_time: Mapping[str, Any] | None) -> nn.Module:
    """``model`` itself for whole-image inference, else wrapped to run the test-time mode."""
    # imported here: mgfusion.inference imports mgfusion.engine
    from mgfusion.inference.test_time import TestTimeModel, crop_size_of

    wrapped = TestTimeModel(model, test_time, crop_size=crop_size_of(dataset_cfg))
    logger.info("Test-time mode: %s", wrapped.config.describe())
    return model if wrapped.config.is_plain else wrapped


def test_time_summary(test_time: Mapping[str, Any] | None, dataset_cfg: DictConfig) -> dict[str, Any]:
    """The resolved test-time settings as a plain dict (``mode``, ``window``, ``stride``, ``scales``, ``flip``,
    ``window_batch``), to record next to the metrics it produced."""
    from mgfusion.inference.test_time import TestTimeConfig, crop_size_of

    return TestTimeConfig.from_any(test_time).with_defaults(crop_size_of(dataset_cfg)).summary()


def plain_results(results: Any) -> Any:
    """``results`` with numpy/torch scalars turned into Python floats/ints (JSON-serialisable, nested)."""
    if isinstance(results, Mapping):
        return OrderedDict((str(k), plain_results(v)) for k, v in results.items())
    if isinstance(results, (list, tuple)):
        return [plain_results(v) for v in results]
    if isinstance(results, (np.generic, torch.Tensor)):
        return results.item()
    return results


def format_results(results: Mapping[str, Any]) -> str:
    """One table per task (``{task: {metric: value}}``), metrics as columns; nested dicts are flattened."""
    blocks = []
    for task, metrics in results.items():
        if isinstance(metrics, Mapping) and metrics and all(not isinstance(v, Mapping) for v in metrics.values()):
            blocks.append(f"{task}:\n{create_small_table(dict(metrics))}")
        elif isinstance(metrics, Mapping):
            blocks.append(format_results({f"{task}/{k}": v for k, v in metrics.items()}))
        else:
            blocks.append(f"{task}: {metrics}")
    return "\n".join(blocks)


def write_metrics_json(path: str, results: Mapping[str, Any], **info: Any) -> None:
    """Atomically write ``{**info, "results": results}`` (non-finite floats become null) to ``path``."""
    payload = {**info, "results": _finite(plain_results(results))}
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
