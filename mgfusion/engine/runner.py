"""Entry point behind ``tools/train_net.py``: train / resume / evaluate a checkpoint from a composed config, in one
process or in ``runtime.num_gpus x runtime.num_machines`` DDP processes.

``run(cfg)`` is what the CLI calls and what tests call in-process. Outputs in ``output_dir``:
``config.yaml`` (resolved config), ``log.txt`` (``log.txt.rank<N>`` for other ranks), ``metrics.json``, TensorBoard
events, ``model_<iter>.pth`` / ``model_final.pth`` + ``last_checkpoint``, ``inference/<dataset>/`` (evaluator
files), and ``final_metrics.json`` (training) or ``eval_metrics.json`` (``eval_only``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any, Iterator

import torch
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from omegaconf import DictConfig, OmegaConf

from mgfusion.backbones.tuning import merge_lora, tuning_record
from mgfusion.evaluation import grouped_class_markdown, matching_groupings
from mgfusion.utils.io import atomic_write_text

from .build import build_model, describe_parameters
from .checkpoint import AtomicCheckpointer
from .config import device_type_of, require_keys, resolve_device, resolve_seed
from .data import register_datasets
from .distributed import launch_workers
from .evaluation import evaluate, format_results, write_metrics_json
from .trainer import Trainer

__all__ = ["run", "run_worker", "FINAL_METRICS", "EVAL_METRICS"]

logger = logging.getLogger(__name__)

#: results of the evaluation that ends training / of an ``eval_only`` run, in ``output_dir``.
FINAL_METRICS = "final_metrics.json"
EVAL_METRICS = "eval_metrics.json"
_LOGGERS = ("mgfusion", "detectron2", "fvcore")
_REQUIRED = ["backbone", "model", "dataset", "solver", "runtime", "output_dir", "resume", "eval_only", "weights",
             "seed", "device"]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train (``resume`` continues the run in ``output_dir``) or, with ``eval_only``, evaluate ``weights``.

    ``cfg.output_dir`` must be set (``tools/train_net.py`` fills it with Hydra's run directory). With more than one
    process the work runs in DDP workers and the results are read back from the metrics file.

    Returns:
        The final evaluation results (``{task: {metric: value}}``, or per test set when there are several).
    """
    require_keys(cfg, _REQUIRED, "<root>")
    if not cfg.output_dir:
        raise ValueError("output_dir is not set; pass output_dir=PATH (tools/train_net.py uses Hydra's run dir)")
    if cfg.eval_only and not cfg.weights:
        raise ValueError("eval_only=true needs weights=PATH (a checkpoint, e.g. <output_dir>/model_final.pth)")
    container = OmegaConf.to_container(cfg, resolve=True)  # workers cannot resolve ${hydra:...} interpolations
    output_dir = os.path.abspath(str(cfg.output_dir))
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_text(os.path.join(output_dir, "config.yaml"), OmegaConf.to_yaml(container))
    rt = cfg.runtime
    if rt.num_gpus * rt.num_machines == 1:
        return run_worker(container, output_dir)
    launch_workers(run_worker, num_processes=rt.num_gpus, num_machines=rt.num_machines, machine_rank=rt.machine_rank,
                   dist_url=rt.dist_url, timeout_minutes=rt.dist_timeout_minutes, device_type=device_type_of(cfg.device),
                   args=(container, output_dir))
    metrics_file = os.path.join(output_dir, EVAL_METRICS if cfg.eval_only else FINAL_METRICS)
    if rt.machine_rank != 0 or not os.path.isfile(metrics_file):
        return {}
    with open(metrics_file, encoding="utf-8") as f:
        return json.load(f)["results"]


def run_worker(container: dict[str, Any], output_dir: str) -> dict[str, Any]:
    """The per-process body of :func:`run` (module-level so that DDP workers can unpickle it)."""
    cfg = OmegaConf.create(container)
    with _logging_to(output_dir):
        seed = resolve_seed(cfg.seed)
        if comm.get_world_size() > 1:
            seed = comm.all_gather(seed)[0]  # a random seed must be shared (sampler order)
        seed_all_rng(seed + comm.get_rank())
        if comm.get_local_size() > 1 and device_type_of(cfg.device) == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))  # no oversubscription
        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = bool(cfg.runtime.cudnn_benchmark)
        logger.info("Rank %d/%d, seed %d, output %s", comm.get_rank(), comm.get_world_size(), seed, output_dir)
        register_datasets(cfg.dataset)
        results = _evaluate_checkpoint(cfg, output_dir) if cfg.eval_only else _train(cfg, output_dir, seed)
        comm.synchronize()
    return results


def _train(cfg: DictConfig, output_dir: str, seed: int) -> dict[str, Any]:
    trainer = Trainer(cfg, output_dir=output_dir, seed=seed)
    trainer.resume_or_load(resume=bool(cfg.resume))
    results = trainer.train() or {}
    if comm.is_main_process() and results:
        logger.info("Final results (iteration %d):\n%s", trainer.max_iter, format_results(results))
        write_metrics_json(os.path.join(output_dir, FINAL_METRICS), results, iteration=trainer.max_iter,
                           weights=os.path.join(output_dir, f"{trainer.checkpointer.file_prefix}_final.pth"),
                           tuning=tuning_record(trainer.model))
        _write_class_tables(results, output_dir)
    return results


def _evaluate_checkpoint(cfg: DictConfig, output_dir: str) -> dict[str, Any]:
    model = build_model(cfg, resolve_device(cfg.device))
    logger.info(describe_parameters(model))
    extra = AtomicCheckpointer(model, output_dir).load(str(cfg.weights), checkpointables=[])
    if cfg.get("merge_lora") and merge_lora(model):  # fold LoRA adapters into the weights (same outputs, faster)
        logger.info("Merged the LoRA adapters into the encoder weights (merge_lora=true)")
    results = evaluate(model, cfg.dataset, output_dir=output_dir, num_workers=cfg.runtime.num_workers)
    if comm.is_main_process():
        iteration = extra.get("iteration")
        logger.info("Results of %s (iteration %s):\n%s", cfg.weights, iteration, format_results(results))
        write_metrics_json(os.path.join(output_dir, EVAL_METRICS), results, iteration=iteration,
                           weights=os.path.abspath(str(cfg.weights)), tuning=tuning_record(model))
        _write_class_tables(results, output_dir)
    return results


def _write_class_tables(results: dict[str, Any], output_dir: str) -> None:
    """Per-class AP grouped as in the paper's Table 4 (e.g. Cityscapes boundary-sensitive vs large rigid classes),
    written as ``per_class_ap_<grouping>.md`` when the results have every class of a known grouping."""
    for name in matching_groupings(results):
        table = grouped_class_markdown({os.path.basename(output_dir.rstrip(os.sep)) or "run": results}, name)
        atomic_write_text(os.path.join(output_dir, f"per_class_ap_{name}.md"), table + "\n")
        logger.info("Per-class AP (%s groups):\n%s", name, table)


@contextlib.contextmanager
def _logging_to(output_dir: str) -> Iterator[None]:
    """Console logging (main rank) plus ``<output_dir>/log.txt[.rank<N>]`` for the duration of a run."""
    rank = comm.get_rank()
    for name in _LOGGERS:
        setup_logger(output=None, distributed_rank=rank, name=name, abbrev_name="mgf" if name == "mgfusion" else None)
    path = os.path.join(output_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s", "%m/%d %H:%M:%S"))
    handler.setLevel(logging.DEBUG)
    for name in _LOGGERS:
        logging.getLogger(name).addHandler(handler)
    try:
        yield
    finally:
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        handler.close()
