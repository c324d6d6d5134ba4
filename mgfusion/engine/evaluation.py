"""Evaluation wiring: run the dataset's evaluator over each test set, print tables, save the metrics as JSON."""

from __future__ import annotations

import json
import logging
import math
import os
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np
import torch
from detectron2.evaluation import inference_on_dataset
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mgfusion.utils.io import atomic_write_text

from .data import build_test_loader

__all__ = ["evaluate", "format_results", "write_metrics_json", "plain_results", "test_time_summary"]

logger = logging.getLogger(__name__)


def evaluate(model: nn.Module, dataset_cfg: DictConfig, *, output_dir: str, num_workers: int = 0,
             loaded: Mapping[str, list[dict]] | None = None,
             test_time: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on every ``dataset.test`` name with the dataset's evaluator (all ranks must call this).

    Args:
        loaded: test dataset dicts already read (:func:`~mgfusion.engine.data.load_datasets`).
        test_time: the ``test_time`` config node (whole image, sliding window, TTA; see
            :mod:`mgfusion.inference.test_time`); None = whole image. :func:`test_time_summary` gives what to record.

    Returns:
        detectron2's convention: ``{task: {metric: value}}`` for one test set, ``{name: {task: {...}}}`` for several;
        ``{}`` on non-main ranks of a distributed run.
    """
    if isinstance(model, DistributedDataParallel):
        model = model.module  # ranks see different numbers of images: no collective calls in forward
    model = _with_test_time(model, dataset_cfg, test_time)
    make_evaluator = instantiate(dataset_cfg.evaluator, _convert_="all")
    results: dict[str, Any] = OrderedDict()
    for name in dataset_cfg.test:
        loader = build_test_loader(dataset_cfg, name, num_workers=num_workers, loaded=loaded)
        evaluator = make_evaluator(dataset_name=name, output_dir=os.path.join(output_dir, "inference", name))
        with torch.no_grad():
            results[name] = inference_on_dataset(model, loader, evaluator)
        if comm.is_main_process():
            logger.info("Evaluation results for %s:\n%s", name, format_results(results[name]))
    if not comm.is_main_process():
        return {}
    results = plain_results(results)
    return results[dataset_cfg.test[0]] if len(results) == 1 else results


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
