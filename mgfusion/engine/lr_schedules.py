"""Learning-rate schedules as fvcore ``ParamScheduler`` multipliers, driven per optimizer step by detectron2's
``LRMultiplier`` (whose state — ``base_lrs``, ``last_epoch`` — is checkpointed, so a resumed run continues the same
schedule).

Factories (``solver.lr_scheduler._target_``), all keyword-only and called with ``max_iter`` at build time:

* :func:`warmup_poly` — Mask2Former's ``WarmupPolyLR``: ``lr = base * w(it) * max((1 - it/max_iter)^power, c)``
  with ``c = constant_ending``. The paper's runs use ``power=1.0`` (authors' vendored detectron2; upstream
  Mask2Former/DeepLab default 0.9), no warmup, ``c = 0`` (docs/training.md).
* :func:`warmup_multistep` — detectron2's default ``WarmupMultiStepLR``: ``lr = base * w(it) * gamma^k`` after the
  k-th step; the authors' COCO configs ended up with this one (docs/training.md).
* :func:`warmup_cosine` — half-cosine decay to ``end_factor``.

``w(it)`` is the reference warm-up factor: linear from ``warmup_factor`` to 1 over ``warmup_iters`` (``linear``),
or ``warmup_factor`` throughout the warm-up (``constant``), multiplying the main schedule (old detectron2 /
Mask2Former semantics).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence

import torch
from detectron2.solver import LRMultiplier
from fvcore.common.param_scheduler import ParamScheduler

from mgfusion.utils.registry import Registry, RegistryError

__all__ = [
    "WARMUP_METHODS",
    "CosineScheduler",
    "PolyScheduler",
    "StepScheduler",
    "WarmupScheduler",
    "build_lr_scheduler",
    "warmup_cosine",
    "warmup_multistep",
    "warmup_poly",
]

#: warm-up shapes: ``alpha`` in [0, 1] (fraction of the warm-up done) and ``factor`` -> multiplier.
WARMUP_METHODS: Registry[Callable[[float, float], float]] = Registry("warm-up method")
WARMUP_METHODS.register("linear", lambda alpha, factor: factor * (1.0 - alpha) + alpha)
WARMUP_METHODS.register("constant", lambda alpha, factor: factor)


class PolyScheduler(ParamScheduler):
    """``max((1 - where)^power, constant_ending)`` for ``where`` = fraction of training done."""

    def __init__(self, *, power: float, constant_ending: float = 0.0) -> None:
        if power <= 0:
            raise ValueError(f"poly power must be > 0, got {power}")
        self.power = float(power)
        self.constant_ending = float(constant_ending)

    def __call__(self, where: float) -> float:
        return max((1.0 - where) ** self.power, self.constant_ending)


class StepScheduler(ParamScheduler):
    """``gamma^k`` where k = number of ``milestones`` (fractions of training) already reached."""

    def __init__(self, *, milestones: Sequence[float], gamma: float) -> None:
        if list(milestones) != sorted(milestones):
            raise ValueError(f"lr steps must be increasing, got {list(milestones)}")
        self.milestones = list(milestones)
        self.gamma = float(gamma)

    def __call__(self, where: float) -> float:
        return self.gamma ** bisect_right(self.milestones, where)


class CosineScheduler(ParamScheduler):
    """``end + (1 - end) * (1 + cos(pi * where)) / 2``."""

    def __init__(self, *, end_factor: float = 0.0) -> None:
        self.end_factor = float(end_factor)

    def __call__(self, where: float) -> float:
        return self.end_factor + (1.0 - self.end_factor) * 0.5 * (1.0 + math.cos(math.pi * where))


class WarmupScheduler(ParamScheduler):
    """``scheduler(where) * w(where)``, ``w`` rising from ``warmup_factor`` to 1 over ``warmup_length``."""

    def __init__(self, scheduler: ParamScheduler, *, warmup_factor: float, warmup_length: float,
                 warmup_method: str = "linear") -> None:
        if warmup_method not in WARMUP_METHODS:
            raise RegistryError(f"solver.lr_scheduler.warmup_method: {WARMUP_METHODS.unknown_message(warmup_method)}")
        self.scheduler = scheduler
        self.warmup_factor = float(warmup_factor)
        self.warmup_length = float(warmup_length)
        self._warmup = WARMUP_METHODS.get(warmup_method)

    def __call__(self, where: float) -> float:
        value = self.scheduler(where)
        if where < self.warmup_length:
            value *= self._warmup(where / self.warmup_length, self.warmup_factor)
        return value


def _with_warmup(scheduler: ParamScheduler, *, max_iter: int, warmup_iters: int, warmup_factor: float,
                 warmup_method: str) -> ParamScheduler:
    if max_iter <= 0:
        raise ValueError(f"solver.max_iter must be > 0, got {max_iter}")
    if warmup_iters < 0:
        raise ValueError(f"warmup_iters must be >= 0, got {warmup_iters}")
    return WarmupScheduler(scheduler, warmup_factor=warmup_factor, warmup_length=min(warmup_iters / max_iter, 1.0),
                           warmup_method=warmup_method)


def warmup_poly(*, max_iter: int, power: float = 0.9, constant_ending: float = 0.0, warmup_iters: int = 0,
                warmup_factor: float = 1.0, warmup_method: str = "linear") -> ParamScheduler:
    """Mask2Former's WarmupPolyLR as an LR multiplier of iteration ``it``: ``w(it) * max((1-it/max_iter)^power, c)``."""
    return _with_warmup(PolyScheduler(power=power, constant_ending=constant_ending), max_iter=max_iter,
                        warmup_iters=warmup_iters, warmup_factor=warmup_factor, warmup_method=warmup_method)


def warmup_multistep(*, max_iter: int, steps: Sequence[int], gamma: float = 0.1, warmup_iters: int = 1000,
                     warmup_factor: float = 0.001, warmup_method: str = "linear") -> ParamScheduler:
    """detectron2's WarmupMultiStepLR: ``w(it) * gamma^k`` after ``k`` of ``steps`` (iterations); steps past
    ``max_iter`` are ignored (as in detectron2)."""
    milestones = [s / max_iter for s in steps if s <= max_iter]
    return _with_warmup(StepScheduler(milestones=milestones, gamma=gamma), max_iter=max_iter,
                        warmup_iters=warmup_iters, warmup_factor=warmup_factor, warmup_method=warmup_method)


def warmup_cosine(*, max_iter: int, end_factor: float = 0.0, warmup_iters: int = 0, warmup_factor: float = 1.0,
                  warmup_method: str = "linear") -> ParamScheduler:
    """Half-cosine decay from 1 to ``end_factor`` with the same warm-up options."""
    return _with_warmup(CosineScheduler(end_factor=end_factor), max_iter=max_iter, warmup_iters=warmup_iters,
                        warmup_factor=warmup_factor, warmup_method=warmup_method)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, multiplier: ParamScheduler, *, max_iter: int) -> LRMultiplier:
    """detectron2 ``LRMultiplier``: every group's lr = its initial lr x ``multiplier(it / max_iter)``."""
    return LRMultiplier(optimizer, multiplier=multiplier, max_iter=max_iter)
