"""Entry point behind ``tools/train_net.py``: train / resume / evaluate a checkpoint from a composed config, in one
process or in ``runtime.num_gpus x runtime.num_machines`` DDP processes.

``run(cfg)`` is what the CLI calls and what tests call in-process. Before anything is written or a model is built it
checks, in this order (each failure is an error that names the problem and the fix):

1. the run folder: a folder holding a training run is refused without ``resume=true`` or ``overwrite=true``, and a
   resumed run's config must match its saved ``config.yaml`` (:mod:`mgfusion.engine.run_dir`);
2. the encoders' initialisation: a foundation encoder without ``weights`` is refused unless ``weights: random``
   (:func:`~mgfusion.engine.build.random_init_encoders`; skipped when a checkpoint supplies every weight);
3. the data: the datasets are registered explicitly (the config's ``register`` node) and the train and test
   (``eval_only``: test) dicts are read, so a missing dataset fails with its not-found message.

Outputs in ``output_dir``: ``config.yaml`` (resolved config; ``eval_config.yaml`` for ``eval_only``), ``overrides.txt``
(the command-line overrides the folder is named after), ``log.txt`` (``log.txt.rank<N>`` for other ranks),
``metrics.json``, TensorBoard events, ``model_<iter>.pth`` / ``model_final.pth`` + ``last_checkpoint``,
``inference/<dataset>/`` (evaluator files), and ``final_metrics.json`` (training); an ``eval_only`` launch writes
only ``eval_config.yaml``, ``eval_metrics.json``, ``eval_inference/<dataset>/`` and ``eval_per_class_ap_*.md``, so
it can evaluate into a training run's folder without touching that run's files (a second evaluation there needs
``overwrite=true``, which moves the first one aside). The metrics files record how the model was initialised (``weights``, ``weights_strict``, keys
skipped by a non-strict load, randomly initialised encoders).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from omegaconf import DictConfig, OmegaConf

from mgfusion.backbones.tuning import merge_lora, tuning_record
from mgfusion.evaluation import grouped_class_markdown, matching_groupings
from mgfusion.profiling.cost import write_model_cost
from mgfusion.utils.io import atomic_write_text
from mgfusion.utils.plugins import load_plugins

from .build import build_model, describe_parameters, random_init_encoders
from .checkpoint import INCOMPATIBLE_HINT, AtomicCheckpointer
from .config import device_type_of, require_keys, resolve_device, resolve_seed
from .data import load_datasets, register_datasets
from .distributed import launch_workers
from .evaluation import evaluate, format_results, test_time_summary, write_metrics_json
from .run_dir import (
    DRAWN_SEED_FILE,
    EVAL_FILES,
    OVERRIDES_FILE,
    RUN_FILES,
    check_run_dir,
    move_previous_run,
)
from .trainer import Trainer

__all__ = ["EVAL_METRICS", "FINAL_METRICS", "run", "run_worker"]

logger = logging.getLogger(__name__)

#: results of the evaluation that ends training / of an ``eval_only`` run, in ``output_dir``.
FINAL_METRICS = "final_metrics.json"
EVAL_METRICS = "eval_metrics.json"
_LOGGERS = ("mgfusion", "detectron2", "fvcore")
_REQUIRED = ["backbone", "model", "dataset", "solver", "runtime", "output_dir", "resume", "eval_only", "weights",
             "seed", "device"]


def run(cfg: DictConfig, *, overrides: str | None = None) -> dict[str, Any]:
    """Train (``resume`` continues the run in ``output_dir``) or, with ``eval_only``, evaluate ``weights``.

    ``cfg.output_dir`` must be set (``tools/train_net.py`` fills it with Hydra's run directory). ``overrides`` (the
    override string the folder is named after) is written to ``overrides.txt``. With more than one process the work
    runs in DDP workers and the results are read back from the metrics file.

    Returns:
        The final evaluation results (``{task: {metric: value}}``, or per test set when there are several).
    """
    require_keys(cfg, _REQUIRED, "<root>")
    load_plugins(cfg.get("imports") or ())  # user modules first: their encoders/datasets are named by the config
    if not cfg.output_dir:
        raise ValueError("output_dir is not set; pass output_dir=PATH (tools/train_net.py uses Hydra's run dir)")
    if cfg.eval_only and not cfg.weights:
        raise ValueError("eval_only=true needs weights=PATH (a checkpoint, e.g. <output_dir>/model_final.pth)")
    container = OmegaConf.to_container(cfg, resolve=True)  # workers cannot resolve ${hydra:...} interpolations
    output_dir = os.path.abspath(str(cfg.output_dir))
    eval_only, resume, overwrite = bool(cfg.eval_only), bool(cfg.resume), bool(cfg.get("overwrite", False))
    check_run_dir(output_dir, container, resume=resume, overwrite=overwrite, eval_only=eval_only)
    resuming = resume and bool(glob.glob(os.path.join(glob.escape(output_dir), "model_*.pth")))
    random_init = [] if cfg.weights else random_init_encoders(cfg.backbone, check=not (eval_only or resuming))
    register_datasets(cfg.dataset)
    loaded = load_datasets(cfg.dataset, train=not eval_only)

    # ---- checks passed: from here on the run writes into output_dir ----
    if overwrite and cfg.runtime.machine_rank == 0 and os.path.isdir(output_dir):
        moved = move_previous_run(output_dir, EVAL_FILES if eval_only else RUN_FILES)
        if moved:
            logger.warning("overwrite=true: the previous %s files in %s were moved to %s",
                           "evaluation's" if eval_only else "run's", output_dir, moved)
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_text(os.path.join(output_dir, "eval_config.yaml" if eval_only else "config.yaml"),
                      OmegaConf.to_yaml(container))
    overrides_file = os.path.join(output_dir, OVERRIDES_FILE)
    if overrides is not None and not (eval_only and os.path.exists(overrides_file)):
        atomic_write_text(overrides_file, overrides + "\n")
    init = {"random_init": random_init}
    rt = cfg.runtime
    if rt.num_gpus * rt.num_machines == 1:
        return run_worker(container, output_dir, init=init, loaded=loaded)
    del loaded  # the workers read the datasets themselves
    launch_workers(run_worker, num_processes=rt.num_gpus, num_machines=rt.num_machines, machine_rank=rt.machine_rank,
                   dist_url=rt.dist_url, timeout_minutes=rt.dist_timeout_minutes, device_type=device_type_of(cfg.device),
                   args=(container, output_dir, init))
    metrics_file = os.path.join(output_dir, EVAL_METRICS if cfg.eval_only else FINAL_METRICS)
    if rt.machine_rank != 0 or not os.path.isfile(metrics_file):
        return {}
    with open(metrics_file, encoding="utf-8") as f:
        return json.load(f)["results"]


def run_worker(container: dict[str, Any], output_dir: str, init: Mapping[str, Any] | None = None,
               loaded: Mapping[str, list[dict]] | None = None) -> dict[str, Any]:
    """The per-process body of :func:`run` (module-level so that DDP workers can unpickle it).

    ``init``: facts about the initialisation recorded in the metrics file; ``loaded``: dataset dicts already read
    by :func:`run` (a single process), else they are registered and read here (before the model is built).
    """
    cfg = OmegaConf.create(container)
    load_plugins(cfg.get("imports") or ())  # a spawned DDP worker starts without the user's registrations
    with _logging_to(output_dir):
        seed = _run_seed(cfg, output_dir)
        if comm.get_world_size() > 1:
            seed = comm.all_gather(seed)[0]  # a random seed must be shared (sampler order)
        seed_all_rng(seed + comm.get_rank())
        if comm.get_local_size() > 1 and device_type_of(cfg.device) == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))  # no oversubscription
        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = bool(cfg.runtime.cudnn_benchmark)
        logger.info("Rank %d/%d, seed %d, output %s", comm.get_rank(), comm.get_world_size(), seed, output_dir)
        if loaded is None:
            register_datasets(cfg.dataset)
            loaded = load_datasets(cfg.dataset, train=not cfg.eval_only)
        init = dict(init or {})
        for where in init.get("random_init", []):
            logger.warning("RANDOM INITIALISATION: %s starts from random weights (weights: random or an encoder "
                           "without released weights); recorded in the metrics file", where)
        results = (_evaluate_checkpoint(cfg, output_dir, loaded) if cfg.eval_only
                   else _train(cfg, output_dir, seed, loaded, init))
        comm.synchronize()
    return results


def _run_seed(cfg: DictConfig, output_dir: str) -> int:
    """``cfg.seed``, or for ``seed: null`` (or < 0) a random seed that is drawn once per training run and kept in
    ``<output_dir>/drawn_seed.txt``, so that ``resume=true`` continues the same sample order and augmentations."""
    if cfg.seed is not None and int(cfg.seed) >= 0:
        return int(cfg.seed)
    path = os.path.join(output_dir, DRAWN_SEED_FILE)
    if not cfg.eval_only and cfg.resume and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            seed = int(f.read().strip())
        logger.info("seed=null: resuming with the seed drawn when the run started (%d, %s)", seed, path)
        return seed
    seed = resolve_seed(None)
    if not cfg.eval_only and comm.is_main_process():
        atomic_write_text(path, f"{seed}\n")
    return seed


def _init_record(cfg: DictConfig, checkpointer: AtomicCheckpointer) -> dict[str, Any]:
    """How the model's weights were loaded, for the metrics file."""
    record: dict[str, Any] = {"weights_strict": bool(cfg.get("weights_strict", True))}
    if checkpointer.incompatible:
        record["weights_not_loaded"] = checkpointer.incompatible
    return record


def _train(cfg: DictConfig, output_dir: str, seed: int, loaded: Mapping[str, list[dict]],
           init: Mapping[str, Any]) -> dict[str, Any]:
    trainer = Trainer(cfg, output_dir=output_dir, seed=seed, loaded=loaded)
    trainer.resume_or_load(resume=bool(cfg.resume))
    if comm.is_main_process():  # parameters and GFLOPs of the whole model at 1024x2048 (paper Table 11)
        write_model_cost(trainer.model, output_dir)
    record = {"init_weights": str(cfg.weights) if cfg.weights else None, **_init_record(cfg, trainer.checkpointer),
              **init}
    results = trainer.train() or {}
    if comm.is_main_process() and results:
        logger.info("Final results (iteration %d):\n%s", trainer.max_iter, format_results(results))
        write_metrics_json(os.path.join(output_dir, FINAL_METRICS), results, iteration=trainer.max_iter,
                           weights=os.path.join(output_dir, f"{trainer.checkpointer.file_prefix}_final.pth"),
                           test_time=test_time_summary(cfg.get("test_time"), cfg.dataset),
                           tuning=tuning_record(trainer.model), **record)
        _write_class_tables(results, output_dir)
    return results


def _evaluate_checkpoint(cfg: DictConfig, output_dir: str, loaded: Mapping[str, list[dict]]) -> dict[str, Any]:
    model = build_model(cfg, resolve_device(cfg.device))
    logger.info(describe_parameters(model))
    checkpointer = AtomicCheckpointer(model, output_dir, strict=bool(cfg.get("weights_strict", True)),
                                      strict_hint=INCOMPATIBLE_HINT)
    extra = checkpointer.load(str(cfg.weights), checkpointables=[])
    if cfg.get("merge_lora") and merge_lora(model):  # fold LoRA adapters into the weights (same outputs, faster)
        logger.info("Merged the LoRA adapters into the encoder weights (merge_lora=true)")
    results = evaluate(model, cfg.dataset, output_dir=output_dir, num_workers=cfg.runtime.num_workers, loaded=loaded,
                       test_time=cfg.get("test_time"), inference_dir="eval_inference")
    if comm.is_main_process():
        iteration = extra.get("iteration")
        logger.info("Results of %s (iteration %s):\n%s", cfg.weights, iteration, format_results(results))
        write_metrics_json(os.path.join(output_dir, EVAL_METRICS), results, iteration=iteration,
                           weights=os.path.abspath(str(cfg.weights)),
                           test_time=test_time_summary(cfg.get("test_time"), cfg.dataset),
                           tuning=tuning_record(model),
                           **_init_record(cfg, checkpointer))
        _write_class_tables(results, output_dir, prefix="eval_")
    return results


def _write_class_tables(results: dict[str, Any], output_dir: str, prefix: str = "") -> None:
    """Per-class AP grouped as in the paper's Table 4 (e.g. Cityscapes boundary-sensitive vs large rigid classes),
    written as ``<prefix>per_class_ap_<grouping>.md`` when the results have every class of a known grouping."""
    for name in matching_groupings(results):
        table = grouped_class_markdown({os.path.basename(output_dir.rstrip(os.sep)) or "run": results}, name)
        atomic_write_text(os.path.join(output_dir, f"{prefix}per_class_ap_{name}.md"), table + "\n")
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
