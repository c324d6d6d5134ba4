"""The optimizer step: gradient accumulation, mixed precision and gradient clipping on detectron2's ``SimpleTrainer``.

One trainer iteration = one optimizer step = ``accumulation_steps`` micro-batches, each loss scaled by
``1/accumulation_steps`` (so N micro-batches of b images match one batch of N*b images when the model averages its
losses over images). The forward runs under the :class:`~mgfusion.engine.precision.Precision` policy (CUDA fp16 with
a GradScaler as detectron2's ``AMPTrainer``, CUDA/CPU bf16 without one); gradients are unscaled before clipping.
Under DDP, gradient all-reduce is skipped (``no_sync``) for all micro-batches but the last.

Why not detectron2's ``AMPTrainer``: it asserts CUDA, has no accumulation and no hook point between unscaling and
stepping; this class keeps its checkpoint layout (``grad_scaler`` key) and metric names.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .grad_clip import GradientClipper
from .precision import Precision

__all__ = ["AccumulatingAMPTrainer"]


class AccumulatingAMPTrainer(SimpleTrainer):
    """``SimpleTrainer`` with gradient accumulation, autocast (CPU or CUDA) and gradient clipping.

    Args:
        model: returns a dict of scalar losses (or one scalar) for a list of detectron2 dataset dicts.
        data_loader: iterable of micro-batches (``list[dict]``).
        optimizer: the optimizer.
        precision: autocast policy; a GradScaler is created when it needs one (fp16).
        accumulation_steps: micro-batches per optimizer step (>= 1).
        clipper: gradient clipper applied after unscaling, or None.
        gather_metric_period: write losses to the event storage every this many steps (each write syncs host
            and device once).
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable | None,
        optimizer: torch.optim.Optimizer,
        *,
        precision: Precision,
        accumulation_steps: int = 1,
        clipper: GradientClipper | None = None,
        gather_metric_period: int = 1,
    ) -> None:
        if accumulation_steps < 1:
            raise ValueError(f"solver.grad_accum_steps must be >= 1, got {accumulation_steps}")
        if gather_metric_period < 1:
            raise ValueError(f"runtime.gather_metric_period must be >= 1, got {gather_metric_period}")
        super().__init__(model, data_loader, optimizer, gather_metric_period=gather_metric_period)
        self.precision = precision
        self.accumulation_steps = int(accumulation_steps)
        self.clipper = clipper
        self.grad_scaler = precision.make_grad_scaler()

    def _sync_context(self, micro_step: int) -> contextlib.AbstractContextManager:
        """DDP all-reduces gradients only on the last micro-batch of a step."""
        if isinstance(self.model, DistributedDataParallel) and micro_step < self.accumulation_steps - 1:
            return self.model.no_sync()
        return contextlib.nullcontext()

    def run_step(self) -> None:
        """One optimizer step over ``accumulation_steps`` micro-batches."""
        assert self.model.training, "[AccumulatingAMPTrainer] model was changed to eval mode!"
        self.optimizer.zero_grad(set_to_none=True)
        data_time = 0.0
        loss_sums: dict[str, torch.Tensor] = {}
        for micro_step in range(self.accumulation_steps):
            start = time.perf_counter()
            data = next(self._data_loader_iter)
            data_time += time.perf_counter() - start
            with self._sync_context(micro_step):
                with self.precision.autocast():
                    loss_dict = self.model(data)
                    if isinstance(loss_dict, torch.Tensor):
                        loss_dict = {"total_loss": loss_dict}
                    losses = sum(loss_dict.values())
                losses = losses / self.accumulation_steps
                if self.grad_scaler is not None:
                    losses = self.grad_scaler.scale(losses)
                losses.backward()
            for k, v in loss_dict.items():
                v = v.detach().float()
                loss_sums[k] = loss_sums[k] + v if k in loss_sums else v
        self.after_backward()

        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.optimizer)
        grad_norm = self.clipper() if self.clipper is not None else None

        mean_losses = {k: v / self.accumulation_steps for k, v in loss_sums.items()}
        self._write_metrics(mean_losses, data_time)
        self._write_optimizer_metrics(grad_norm)

        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def _write_optimizer_metrics(self, grad_norm: torch.Tensor | None) -> None:
        """Gradient norm (before clipping) and loss scale, on the same period as the losses."""
        if (self.iter + 1) % self.gather_metric_period != 0 or not comm.is_main_process():
            return
        storage = get_event_storage()
        if grad_norm is not None:
            storage.put_scalar("grad_norm", float(grad_norm))
        if self.grad_scaler is not None:
            storage.put_scalar("loss_scale", float(self.grad_scaler.get_scale()))

    def state_dict(self) -> dict[str, Any]:
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
