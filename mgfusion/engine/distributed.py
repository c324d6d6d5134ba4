"""Multi-process training through detectron2's ``launch`` (torch DDP): NCCL on GPUs, gloo on CPU.

detectron2's ``create_ddp_model`` passes ``device_ids=[local_rank]``, which DDP rejects for CPU modules; the
wrapper here passes ``device_ids=None`` for CPU models (docs/install.md). ``launch`` picks NCCL when CUDA is visible,
so a CPU run (``device=cpu``) on a GPU host hides the GPUs from its worker processes to get gloo.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
from detectron2.engine import create_ddp_model as _d2_create_ddp_model
from detectron2.engine import launch
from detectron2.utils import comm
from torch import nn

__all__ = ["create_ddp_model", "launch_workers"]

logger = logging.getLogger(__name__)


def create_ddp_model(model: nn.Module, **kwargs: Any) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` when there is more than one process (else return it).

    CPU models get ``device_ids=None`` (gloo); CUDA models ``[local_rank]``. ``kwargs`` go to DDP
    (e.g. ``broadcast_buffers``, ``find_unused_parameters``).
    """
    if comm.get_world_size() == 1:
        return model
    device = next(model.parameters()).device
    kwargs.setdefault("device_ids", [comm.get_local_rank()] if device.type == "cuda" else None)
    return _d2_create_ddp_model(model, **kwargs)


def launch_workers(
    main_func: Callable[..., Any],
    *,
    num_processes: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    timeout_minutes: float = 30.0,
    device_type: str = "cuda",
    args: tuple = (),
) -> None:
    """Run ``main_func(*args)`` in ``num_processes`` processes on this machine (``num_machines`` in total).

    Args:
        num_processes: processes per machine (GPUs per machine on CUDA; any number on CPU).
        dist_url: ``tcp://HOST:PORT`` of machine 0, or ``auto`` (single machine: a free local port).
        device_type: ``cuda`` or ``cpu``; ``cpu`` hides GPUs from the workers so gloo is used.

    Raises:
        ValueError: more CUDA processes than visible GPUs, or a non-positive count.
    """
    if num_processes < 1 or num_machines < 1:
        raise ValueError(f"runtime.num_gpus and runtime.num_machines must be >= 1, got {num_processes}, {num_machines}")
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"runtime.machine_rank={machine_rank} must be in [0, {num_machines})")
    if device_type == "cuda" and num_processes > torch.cuda.device_count():
        raise ValueError(f"runtime.num_gpus={num_processes} but only {torch.cuda.device_count()} CUDA devices are "
                         "visible; lower runtime.num_gpus or use device=cpu")
    if device_type != "cuda" and num_processes * num_machines > 1 and torch.cuda.is_available():
        logger.info("device=%s: hiding CUDA devices from the worker processes so they use gloo", device_type)
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    launch(main_func, num_processes, num_machines=num_machines, machine_rank=machine_rank, dist_url=dist_url,
           args=args, timeout=timedelta(minutes=timeout_minutes))
