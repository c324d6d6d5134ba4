"""Turning a ``device`` config value (``auto | cpu | cuda | cuda:N``) into a ``torch.device``: one rule everywhere
(training, evaluation, profiling, prediction)."""

from __future__ import annotations

import torch

__all__ = ["DEVICES", "resolve_device", "device_type_of"]

#: valid values of every ``device`` option (``cuda:N`` is accepted too).
DEVICES = ("auto", "cpu", "cuda")


def _local_rank() -> int:
    """This process's rank on its machine (0 outside a detectron2 process group)."""
    try:
        from detectron2.utils import comm
    except ImportError:  # the metrics/profiling side can run without detectron2
        return 0
    return comm.get_local_rank()


def resolve_device(name: str) -> torch.device:
    """``auto`` → this process's GPU if CUDA is available, else the CPU; ``cuda`` → ``cuda:<local rank>``;
    ``cuda:N`` → that GPU; ``cpu`` → the CPU.

    Raises:
        ValueError: unknown name (lists the valid ones), or a CUDA device requested where torch sees none / not
            that many.
    """
    text = str(name).lower()
    base, _, index = text.partition(":")
    if base not in DEVICES or (index and (base != "cuda" or not index.isdigit())):
        raise ValueError(f"device={name!r} is not one of {list(DEVICES)} (or cuda:N)")
    if base == "auto":
        base = "cuda" if torch.cuda.is_available() else "cpu"
    if base == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device={name} but torch sees no CUDA device; use device=cpu or device=auto")
    gpu = int(index) if index else _local_rank()
    if gpu >= torch.cuda.device_count():
        raise ValueError(f"device={name} but torch sees only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", gpu)


def device_type_of(name: str) -> str:
    """``cuda`` or ``cpu`` for a ``device`` config value, without touching a process group."""
    base = str(name).lower().partition(":")[0]
    if base == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return base
