"""The optimizer step: precision policy, gradient clipping, gradient accumulation, CPU bf16 autocast."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from detectron2.utils.events import EventStorage
from torch import nn

from mgfusion.engine import AccumulatingAMPTrainer, GradientClipper, Precision, build_gradient_clipper
import mgfusion.engine.precision as precision_module
from mgfusion.engine import resolve_precision
from mgfusion.utils.registry import RegistryError


class Regressor(nn.Module):
    """detectron2-style model: ``model(list[dict])`` -> ``{"loss_mse": mean over images}``; records its dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))
        self.seen_dtypes: list[torch.dtype] = []

    def forward(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        x = torch.stack([d["x"] for d in batch])
        y = torch.stack([d["y"] for d in batch])
        pred = self.net(x)
        self.seen_dtypes.append(pred.dtype)
        return {"loss_mse": ((pred.float() - y) ** 2).mean()}


def _samples(n: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return [{"x": x[i], "y": x[i, :1] * 2 - x[i, 1:2]} for i in range(n)]


def _train(model: nn.Module, batches: list[list[dict]], *, steps: int, accumulation_steps: int = 1,
           precision: Precision = Precision("cpu"), clip: float | None = None, lr: float = 1e-2) -> AccumulatingAMPTrainer:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    clipper = GradientClipper(model.parameters(), clip_type="full_model", value=clip) if clip else None
    trainer = AccumulatingAMPTrainer(model, batches, opt, precision=precision, accumulation_steps=accumulation_steps,
                                     clipper=clipper)
    with EventStorage(0) as storage:
        for it in range(steps):
            storage.iter = trainer.iter = it
            trainer.run_step()
    return trainer


def test_precision_policy_resolution_and_errors():
    native = precision_module.cpu_has_native_bf16()
    assert resolve_precision(enabled=True, dtype="auto", device="cpu") == Precision("cpu", torch.bfloat16 if native else None)
    assert resolve_precision(enabled=False, dtype="auto", device="cpu") == Precision("cpu", None)
    assert resolve_precision(enabled=True, dtype="bf16", device="cuda:0") == Precision("cuda", torch.bfloat16)
    fp16 = resolve_precision(enabled=True, dtype="auto", device="cuda")
    assert fp16.dtype == torch.float16 and fp16.needs_grad_scaler
    assert not Precision("cpu", torch.bfloat16).needs_grad_scaler
    with pytest.raises(ValueError, match="not supported on cpu; use one of \\['bfloat16'\\]"):
        resolve_precision(enabled=True, dtype="float16", device="cpu")
    with pytest.raises(ValueError, match="dtype='fp8' is not one of"):
        resolve_precision(enabled=True, dtype="fp8", device="cpu")


def test_full_model_clipping_bounds_the_global_norm_and_keeps_direction():
    params = [nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2, 2))]
    params[0].grad = torch.tensor([3.0, 0.0, 4.0])
    params[1].grad = torch.full((2, 2), 6.0)
    before = torch.cat([p.grad.flatten() for p in params]).clone()
    total = GradientClipper(params, clip_type="full_model", value=0.01)()
    after = torch.cat([p.grad.flatten() for p in params])
    assert float(total) == pytest.approx(13.0)  # sqrt(9 + 16 + 4 * 36)
    assert float(after.norm()) == pytest.approx(0.01, rel=1e-4)
    assert torch.allclose(after / after.norm(), before / before.norm(), atol=1e-6)


def test_per_tensor_and_value_clipping():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.3, 0.4])
    assert GradientClipper([a, b], clip_type="norm", value=1.0)() is None
    assert float(a.grad.norm()) == pytest.approx(1.0) and torch.allclose(b.grad, torch.tensor([0.3, 0.4]))
    GradientClipper([a, b], clip_type="value", value=0.35)()
    assert torch.allclose(b.grad, torch.tensor([0.3, 0.35]))
    assert build_gradient_clipper([a], enabled=False) is None
    with pytest.raises(RegistryError, match="clip_gradients.type: unknown gradient clipper 'l1'. Registered gradient "
                                            "clippers: full_model, norm, value"):
        build_gradient_clipper([a], enabled=True, type="l1")


@pytest.mark.parametrize("clip", [None, 0.01])
def test_two_micro_batches_equal_one_batch_of_two(clip):
    """Accumulating N micro-batches (loss / N) is the same optimizer step as one batch of N images."""
    torch.manual_seed(0)
    base = Regressor()
    data = _samples(6)
    one = _train(copy.deepcopy(base), [data[0:2], data[2:4], data[4:6]], steps=3, clip=clip)
    acc = _train(copy.deepcopy(base), [[d] for d in data], steps=3, accumulation_steps=2, clip=clip)
    for p, q in zip(one.model.parameters(), acc.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert not torch.equal(next(base.parameters()), next(one.model.parameters()))  # the step did something


def test_logged_loss_is_the_mean_over_micro_batches():
    torch.manual_seed(0)
    model = Regressor()
    data = _samples(2)
    with torch.no_grad():
        expected = 0.5 * sum(float(model([d])["loss_mse"]) for d in data)
    trainer = AccumulatingAMPTrainer(model, [[data[0]], [data[1]]], torch.optim.SGD(model.parameters(), lr=0.0),
                                     precision=Precision("cpu"), accumulation_steps=2)
    with EventStorage(0) as storage:
        trainer.run_step()
        assert storage.history("total_loss").latest() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("native", [True, False])
def test_cpu_auto_precision_follows_native_bf16_support(native, monkeypatch, caplog):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level(logging.WARNING, logger=precision_module.__name__):
        auto = resolve_precision(enabled=True, dtype="auto", device="cpu")
        forced = resolve_precision(enabled=True, dtype="bfloat16", device="cpu")
    assert auto == Precision("cpu", torch.bfloat16 if native else None)
    assert forced == Precision("cpu", torch.bfloat16)  # an explicit choice is honoured either way
    if native:
        assert not caplog.records
    else:
        assert "training in fp32" in caplog.records[0].getMessage()
        assert "emulated" in caplog.records[1].getMessage()
    assert resolve_precision(enabled=True, dtype="auto", device="cuda") == Precision("cuda", torch.float16)


def test_cpu_bf16_autocast_trains():
    torch.manual_seed(0)
    model = Regressor()
    data = _samples(64, seed=1)
    batches = [data[i:i + 8] for i in range(0, 64, 8)] * 8
    with torch.no_grad():
        before = float(model(data)["loss_mse"])
    trainer = _train(model, batches, steps=64, precision=Precision("cpu", torch.bfloat16), lr=3e-2)
    assert set(model.seen_dtypes[1:]) == {torch.bfloat16}  # forward ran under bf16 autocast
    assert trainer.grad_scaler is None
    with torch.no_grad():
        after = float(model(data)["loss_mse"])
    assert after < 0.25 * before
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32


def test_accumulation_steps_must_be_positive():
    with pytest.raises(ValueError, match="grad_accum_steps must be >= 1"):
        AccumulatingAMPTrainer(Regressor(), [], torch.optim.SGD(Regressor().parameters(), lr=0.1),
                               precision=Precision("cpu"), accumulation_steps=0)
