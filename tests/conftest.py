"""Suite-wide fixtures: the devices a test with a device dimension runs on.

A test that takes the ``device`` fixture runs once per device of :func:`available_devices`: always on the CPU and,
when torch sees a GPU, on CUDA. Without a GPU the CUDA case is reported as skipped (``-ra`` lists it) instead of
silently disappearing, so ``pytest`` on a GPU machine exercises the CUDA branches without edits::

    def test_something(device):                      # runs as test_something[cpu] and test_something[cuda]
        x = torch.randn(4, device=device)

    @pytest.mark.parametrize("device", available_devices())   # the same, combined with other parameters
    def test_other(device, dtype): ...

Random draws that must be reproducible on the device take ``torch.Generator(device=device)``: a CPU generator
cannot drive ``torch.rand(..., device="cuda")``.
"""

from __future__ import annotations

import pytest
import torch

__all__ = ["CUDA_SKIP_REASON", "available_devices"]

CUDA_SKIP_REASON = "no CUDA device visible to torch (the CUDA case runs on GPU machines)"


def available_devices() -> list:
    """``pytest.param`` ids ``cpu`` and ``cuda``; the CUDA one is skipped, visibly, where torch sees no GPU."""
    return [
        pytest.param("cpu", id="cpu"),
        pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason=CUDA_SKIP_REASON)),
    ]


@pytest.fixture(params=available_devices())
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device of this test case (``cpu``, or ``cuda`` on a GPU machine)."""
    return torch.device(request.param)
