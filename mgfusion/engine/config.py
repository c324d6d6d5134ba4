"""Small helpers that turn config values into runtime objects, with clear errors for bad values."""

from __future__ import annotations

import random

from omegaconf import DictConfig

from mgfusion.utils.device import (  # one device rule for the whole library
    DEVICES,
    device_type_of,
    resolve_device,
)

__all__ = ["DEVICES", "device_type_of", "micro_batch_size", "require_keys", "resolve_device", "resolve_seed"]


def resolve_seed(seed: int | None) -> int:
    """The run's seed: ``seed`` itself, or a fresh random one when it is None or negative."""
    if seed is None or int(seed) < 0:
        return random.SystemRandom().randrange(2**31)
    return int(seed)


def micro_batch_size(*, ims_per_batch: int, grad_accum_steps: int, world_size: int) -> int:
    """Images per micro-batch over all processes: ``ims_per_batch / grad_accum_steps``.

    ``ims_per_batch`` is the effective batch of one optimizer step (the paper's 3); it must split evenly into
    ``grad_accum_steps`` micro-batches whose images split evenly over ``world_size`` processes.
    """
    if ims_per_batch < 1 or grad_accum_steps < 1:
        raise ValueError(f"solver.ims_per_batch ({ims_per_batch}) and solver.grad_accum_steps ({grad_accum_steps}) "
                         "must be >= 1")
    if ims_per_batch % (grad_accum_steps * world_size) != 0:
        raise ValueError(
            f"solver.ims_per_batch={ims_per_batch} must be divisible by solver.grad_accum_steps x processes = "
            f"{grad_accum_steps} x {world_size}: each optimizer step splits its images into {grad_accum_steps} "
            f"micro-batches shared by {world_size} processes"
        )
    return ims_per_batch // grad_accum_steps


def require_keys(cfg: DictConfig, keys: list[str], where: str) -> None:
    """Raise a KeyError naming the missing ``keys`` of config node ``where``."""
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise KeyError(f"config node {where!r} lacks {missing}; it has {sorted(cfg.keys())}")
