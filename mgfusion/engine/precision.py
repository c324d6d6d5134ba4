"""Mixed-precision policy: which autocast context a training step runs under, and whether it needs a GradScaler.

* CUDA: fp16 autocast with a ``torch.amp.GradScaler`` (what detectron2's ``AMPTrainer`` does), or bf16 without one.
* CPU: bf16 autocast (``torch.autocast("cpu", dtype=torch.bfloat16)``); fp16 is refused (no CPU loss scaling here).
  ``auto`` picks bf16 only when the CPU computes bf16 natively (AVX512-BF16 / AMX, as oneDNN reports it) and fp32
  otherwise: on an AVX2-only CPU, bf16 matmuls and convolutions are emulated and measured 150-600x slower than fp32.
  An explicit ``bfloat16`` on such a CPU is honoured with a warning.
* ``enabled: false`` (or an unsupported device type): plain fp32.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass

import torch

__all__ = ["AMP_DTYPES", "Precision", "cpu_has_native_bf16", "resolve_precision"]

logger = logging.getLogger(__name__)

#: accepted spellings of ``solver.amp.dtype`` → dtype (``auto``: fp16 on CUDA; on CPU bf16 if native, else fp32).
AMP_DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}

_AUTO_DTYPE = {"cuda": torch.float16, "cpu": torch.bfloat16}
_SUPPORTED = {"cuda": (torch.float16, torch.bfloat16), "cpu": (torch.bfloat16,)}


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls/convolutions natively (oneDNN's check: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: assume emulated
        return False


@dataclass(frozen=True)
class Precision:
    """Autocast settings of a training step.

    Attributes:
        device_type: ``"cuda"`` or ``"cpu"`` (the model's device type).
        dtype: autocast dtype, or None for fp32 (autocast off).
    """

    device_type: str
    dtype: torch.dtype | None = None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 needs loss scaling to keep small gradients representable; bf16 and fp32 do not."""
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the forward pass (and loss) runs under."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def make_grad_scaler(self) -> torch.amp.GradScaler | None:
        """A fresh GradScaler for fp16, else None."""
        return torch.amp.GradScaler(self.device_type) if self.needs_grad_scaler else None

    def __str__(self) -> str:
        return f"{self.device_type}/{str(self.dtype).replace('torch.', '') if self.enabled else 'float32'}"


def resolve_precision(*, enabled: bool, dtype: str, device: torch.device | str) -> Precision:
    """Turn the ``solver.amp`` config into a :class:`Precision` for ``device``.

    Args:
        enabled: autocast on/off.
        dtype: one of :data:`AMP_DTYPES` (``auto`` = fp16 on CUDA; bf16 on a CPU with native bf16, else fp32).
        device: the model's device.

    Raises:
        ValueError: unknown ``dtype`` (lists the valid names) or a dtype the device cannot autocast to.
    """
    device_type = torch.device(device).type
    key = str(dtype).lower()
    if key not in AMP_DTYPES:
        raise ValueError(f"solver.amp.dtype={dtype!r} is not one of {sorted(AMP_DTYPES)}")
    if not enabled:
        return Precision(device_type, None)
    if device_type not in _SUPPORTED:
        raise ValueError(f"mixed precision is supported on {sorted(_SUPPORTED)}, not on device type {device_type!r}; "
                         "set solver.amp.enabled=false")
    resolved = AMP_DTYPES[key] or _AUTO_DTYPE[device_type]
    if device_type == "cpu" and resolved == torch.bfloat16 and not cpu_has_native_bf16():
        if key == "auto":
            logger.warning("solver.amp.dtype=auto on a CPU without native bf16 (no AVX512-BF16/AMX): training in fp32 "
                           "(emulated bf16 is orders of magnitude slower); set solver.amp.dtype=bfloat16 to force it")
            return Precision(device_type, None)
        logger.warning("solver.amp.dtype=%s on a CPU without native bf16 (no AVX512-BF16/AMX): bf16 is emulated and "
                       "much slower than fp32 here; set solver.amp.enabled=false for speed", dtype)
    if resolved not in _SUPPORTED[device_type]:
        valid = [str(d).replace("torch.", "") for d in _SUPPORTED[device_type]]
        raise ValueError(f"solver.amp.dtype={dtype!r} is not supported on {device_type}; use one of {valid} "
                         "(or solver.amp.enabled=false)")
    return Precision(device_type, resolved)
