"""The Hydra-config trainer: detectron2's ``DefaultTrainer`` pattern (a ``TrainerBase`` with hooks delegating the
step to :class:`~mgfusion.engine.train_loop.AccumulatingAMPTrainer`), built from the composed config instead of a
yacs ``CfgNode``.

Hooks, in order: iteration timer → LR schedule → periodic atomic checkpoint (main process) → periodic and final
evaluation → metric writers (main process: console with ETA, ``metrics.json``, TensorBoard).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Mapping
from typing import Any

import torch
from detectron2.engine import TrainerBase, hooks
from detectron2.utils import comm
from detectron2.utils.events import (
    CommonMetricPrinter,
    EventWriter,
    JSONWriter,
    TensorboardXWriter,
)
from hydra.utils import instantiate
from omegaconf import DictConfig

from mgfusion.backbones.tuning import TuningRecord

from .build import build_model, describe_parameters
from .checkpoint import INCOMPATIBLE_HINT, AtomicCheckpointer
from .config import micro_batch_size, resolve_device
from .data import build_train_loader
from .distributed import create_ddp_model
from .evaluation import evaluate
from .grad_clip import build_gradient_clipper
from .lr_schedules import build_lr_scheduler
from .optim import build_optimizer
from .precision import resolve_precision
from .train_loop import AccumulatingAMPTrainer

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)


class LRSchedulerHook(hooks.LRScheduler):
    """detectron2's LR hook, logging the lr of a group at ``base_lr`` (detectron2 logs the largest group's, which
    can be the backbone's ``base_lr x multiplier``)."""

    def __init__(self, optimizer, scheduler, *, base_lr: float) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler)
        self._base_lr = base_lr

    def before_train(self) -> None:
        super().before_train()
        for i, group in enumerate(self._optimizer.param_groups):
            if abs(group.get("initial_lr", group["lr"]) - self._base_lr) <= 1e-12 * self._base_lr:
                self._best_param_group_id = i
                break


class Trainer(TrainerBase):
    """Training (and its periodic evaluation) of the model described by a composed mgfusion config.

    Args:
        cfg: the composed config (``backbone``, ``model``, ``dataset``, ``solver``, ``runtime``, top-level keys).
            Datasets must already be registered (:func:`mgfusion.engine.data.register_datasets`).
        output_dir: checkpoints, ``metrics.json``, TensorBoard events and evaluator outputs go here.
        seed: shuffle seed of the training stream (identical on all ranks).
        loaded: the train dataset dicts already read (:func:`mgfusion.engine.data.load_datasets`); read from the
            catalog when absent.

    Use: ``t = Trainer(cfg, output_dir=..., seed=...); t.resume_or_load(resume=...); results = t.train()``.
    """

    def __init__(self, cfg: DictConfig, *, output_dir: str, seed: int,
                 loaded: Mapping[str, list[dict]] | None = None) -> None:
        super().__init__()
        solver, runtime = cfg.solver, cfg.runtime
        for key, value in (("solver.checkpoint_period", solver.checkpoint_period),
                           ("runtime.log_period", runtime.log_period), ("solver.max_iter", solver.max_iter)):
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        self.cfg = cfg
        self.output_dir = output_dir
        self.seed = seed
        self.loaded = loaded
        os.makedirs(output_dir, exist_ok=True)
        self.device = resolve_device(cfg.device)
        self.micro_batch = micro_batch_size(ims_per_batch=solver.ims_per_batch, grad_accum_steps=solver.grad_accum_steps,
                                            world_size=comm.get_world_size())

        self.model = build_model(cfg, self.device)
        logger.info(describe_parameters(self.model))
        self.optimizer = build_optimizer(self.model, optimizer=instantiate(solver.optimizer, _convert_="all"),
                                         base_lr=solver.base_lr, param_groups=solver.param_groups)
        multiplier = instantiate(solver.lr_scheduler, max_iter=solver.max_iter, _convert_="all")
        self.scheduler = build_lr_scheduler(self.optimizer, multiplier, max_iter=solver.max_iter)
        self.precision = precision = resolve_precision(enabled=solver.amp.enabled, dtype=solver.amp.dtype,
                                                       device=self.device)
        ddp_model = create_ddp_model(self.model, broadcast_buffers=False,
                                     find_unused_parameters=_find_unused(runtime.find_unused_parameters, self.model))
        self._trainer = AccumulatingAMPTrainer(
            ddp_model, None, self.optimizer, precision=precision, accumulation_steps=solver.grad_accum_steps,
            clipper=build_gradient_clipper(self.model.parameters(), **solver.clip_gradients),
            gather_metric_period=runtime.gather_metric_period,
        )  # fmt: skip
        logger.info("Optimizer step: %d image(s) in %d micro-batch(es) of %d over %d process(es); precision %s; %s",
                    solver.ims_per_batch, solver.grad_accum_steps, self.micro_batch, comm.get_world_size(), precision,
                    self._trainer.clipper or "no gradient clipping")
        self.checkpointer = AtomicCheckpointer(self.model, output_dir, trainer=weakref.proxy(self),
                                               strict=bool(cfg.get("weights_strict", True)),
                                               strict_hint=INCOMPATIBLE_HINT,
                                               tuning=TuningRecord(self.model))  # the encoders' tuning modes
        self.start_iter = 0
        self.max_iter = int(solver.max_iter)
        self.last_eval_results: dict[str, Any] | None = None
        self.register_hooks(self.build_hooks())

    # ---- construction ------------------------------------------------------------------------------------------
    def build_hooks(self) -> list[hooks.HookBase]:
        solver, runtime = self.cfg.solver, self.cfg.runtime
        ret: list[hooks.HookBase] = [
            hooks.IterationTimer(),
            LRSchedulerHook(self.optimizer, self.scheduler, base_lr=solver.base_lr),
        ]
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, solver.checkpoint_period,
                                                  max_to_keep=solver.get("checkpoint_max_to_keep"),
                                                  file_prefix=self.checkpointer.file_prefix))
        if self.cfg.dataset.get("test"):
            ret.append(hooks.EvalHook(solver.eval_period, self.test))
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=runtime.log_period))
        return ret

    def build_writers(self) -> list[EventWriter]:
        """Console (losses, lr, ETA), ``metrics.json`` and TensorBoard writers."""
        writers: list[EventWriter] = [CommonMetricPrinter(self.max_iter),
                                      JSONWriter(os.path.join(self.output_dir, "metrics.json"))]
        if self.cfg.runtime.tensorboard:
            writers.append(TensorboardXWriter(self.output_dir))
        return writers

    # ---- running -----------------------------------------------------------------------------------------------
    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume``, continue from the newest readable checkpoint in ``output_dir`` (model, optimizer, LR
        schedule, grad scaler, iteration; always strictly); otherwise (or when there is none) initialize the model
        from ``cfg.weights`` if set (strictly unless ``weights_strict=false``). Then position the training stream
        where the run left off."""
        self.checkpointer.resume_or_load(self.cfg.get("weights") or "", resume=resume)
        if self.checkpointer.resumed_from:
            self.start_iter = self.iter + 1
            logger.info("Resuming at iteration %d of %d", self.start_iter, self.max_iter)
        consumed = self.start_iter * self.cfg.solver.grad_accum_steps
        self._trainer.reset_data_loader(lambda: build_train_loader(
            self.cfg.dataset, images_per_step=self.micro_batch, batches_consumed=consumed, seed=self.seed,
            num_workers=self.cfg.runtime.num_workers, aspect_ratio_grouping=self.cfg.runtime.aspect_ratio_grouping,
            loaded=self.loaded,
        ))  # fmt: skip

    def train(self) -> dict[str, Any] | None:
        """Train from ``start_iter`` to ``max_iter``; returns the last evaluation's results (main process).

        A run resumed at ``max_iter`` (killed while writing its final checkpoint or during the final evaluation) runs
        no step: it writes the missing ``<prefix>_final.pth`` and the final evaluation."""
        if self._trainer.data_loader is None:
            raise RuntimeError("call resume_or_load() before train()")
        if self.start_iter >= self.max_iter:
            self._write_missing_final_checkpoint()
        super().train(self.start_iter, self.max_iter)
        return self.last_eval_results

    def _write_missing_final_checkpoint(self) -> None:
        final = os.path.join(self.output_dir, f"{self.checkpointer.file_prefix}_final.pth")
        if comm.is_main_process() and not os.path.isfile(final):
            logger.warning("The run had finished its %d iterations but %s is missing (interrupted while writing it); "
                           "writing it from %s", self.max_iter, final, self.checkpointer.resumed_from)
            self.checkpointer.save(f"{self.checkpointer.file_prefix}_final", iteration=self.max_iter - 1)
        comm.synchronize()

    def run_step(self) -> None:
        self._trainer.iter = self.iter
        self._trainer.run_step()

    def test(self) -> dict[str, Any]:
        """Evaluate the current model on the test sets (all ranks); remembered as ``last_eval_results``."""
        self.last_eval_results = evaluate(self.model, self.cfg.dataset, output_dir=self.output_dir,
                                          num_workers=self.cfg.runtime.num_workers, loaded=self.loaded,
                                          test_time=self.cfg.get("test_time"))
        return self.last_eval_results

    def state_dict(self) -> dict[str, Any]:
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])


def _find_unused(setting: bool | str, model: torch.nn.Module) -> bool:
    """DDP's ``find_unused_parameters``: the setting, or for ``auto`` whether some trainable parameters can go
    without a gradient in a step (a fusion backbone re-selecting its injection stride per batch)."""
    if setting == "auto":
        return any(getattr(m, "dynamic_stride", False) for m in model.modules())
    if not isinstance(setting, bool):
        raise ValueError(f"runtime.find_unused_parameters must be true, false or auto, got {setting!r}")
    return setting
