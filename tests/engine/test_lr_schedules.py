"""LR schedules: Mask2Former's WarmupPolyLR (power 1.0 / 0.9), the COCO WarmupMultiStepLR quirk, warm-up, resume."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mgfusion.engine import build_lr_scheduler, warmup_cosine, warmup_multistep, warmup_poly
from mgfusion.utils.registry import RegistryError

from tests.engine.helpers import CONFIGS


def _lrs(multiplier, max_iter: int, base_lr: float = 1.0, steps: int | None = None) -> list[float]:
    """The lr the optimizer uses at iterations 0..steps-1 when driven by detectron2's LRMultiplier."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = build_lr_scheduler(opt, multiplier, max_iter=max_iter)
    out = []
    for _ in range(steps or max_iter):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("power", [1.0, 0.9])
def test_poly_matches_the_formula(power):
    lrs = _lrs(warmup_poly(max_iter=100, power=power), 100, base_lr=1e-4)
    expected = [1e-4 * (1 - it / 100) ** power for it in range(100)]
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_paper_poly_node_is_linear_decay_without_warmup():
    node = OmegaConf.load(CONFIGS / "solver" / "lr_scheduler" / "poly.yaml")
    lrs = _lrs(instantiate(node, max_iter=10), 10)
    assert lrs == pytest.approx([1.0 - it / 10 for it in range(10)])


def test_linear_warmup_multiplies_the_schedule():
    lrs = _lrs(warmup_poly(max_iter=100, power=1.0, warmup_iters=10, warmup_factor=0.1), 100)
    for it in (0, 5, 9, 10, 50):
        alpha = min(it / 10, 1.0)
        assert lrs[it] == pytest.approx((0.1 * (1 - alpha) + alpha) * (1 - it / 100)), it
    constant = _lrs(warmup_poly(max_iter=100, power=1.0, warmup_iters=10, warmup_factor=0.1,
                                warmup_method="constant"), 100)
    assert constant[5] == pytest.approx(0.1 * 0.95) and constant[10] == pytest.approx(0.9)


def test_constant_ending_floors_the_poly_decay():
    lrs = _lrs(warmup_poly(max_iter=10, power=1.0, constant_ending=0.25), 10)
    assert lrs == pytest.approx([max(1 - it / 10, 0.25) for it in range(10)])


def test_coco_multistep_quirk_node():
    """configs/solver/lr_scheduler/multistep.yaml: steps (327778, 355092), gamma 0.1, warm-up factor 1 over 10."""
    node = OmegaConf.load(CONFIGS / "solver" / "lr_scheduler" / "multistep.yaml")
    mult = instantiate(node, max_iter=368750)
    at = lambda it: mult(it / 368750)  # noqa: E731
    assert [at(it) for it in (0, 5, 10, 327777)] == pytest.approx([1.0] * 4)  # factor 1.0: the warm-up is a no-op
    assert at(327778) == pytest.approx(0.1) and at(355091) == pytest.approx(0.1)
    assert at(355092) == pytest.approx(0.01) and at(368749) == pytest.approx(0.01)


def test_multistep_warmup_and_steps_beyond_max_iter():
    mult = warmup_multistep(max_iter=100, steps=[50, 200], gamma=0.5, warmup_iters=10, warmup_factor=0.001)
    assert mult(0.0) == pytest.approx(0.001) and mult(0.05) == pytest.approx(0.001 * 0.5 + 0.5)
    assert mult(0.49) == pytest.approx(1.0) and mult(0.5) == pytest.approx(0.5) and mult(0.99) == pytest.approx(0.5)


def test_cosine_endpoints():
    mult = warmup_cosine(max_iter=10, end_factor=0.1)
    assert mult(0.0) == pytest.approx(1.0) and mult(0.5) == pytest.approx(0.55) and mult(1.0) == pytest.approx(0.1)


def test_scheduler_state_restores_the_same_schedule():
    """A scheduler rebuilt after a restart and loaded from the checkpointed state continues identically."""
    make = lambda: warmup_poly(max_iter=20, power=0.9)  # noqa: E731
    full = _lrs(make(), 20)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_lr_scheduler(opt, make(), max_iter=20)
    for _ in range(7):
        opt.step()
        sched.step()
    state, opt_state = sched.state_dict(), opt.state_dict()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = build_lr_scheduler(opt2, make(), max_iter=20)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(state)
    resumed = []
    for _ in range(7, 20):
        resumed.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert resumed == pytest.approx(full[7:])


def test_bad_schedule_arguments_are_named():
    with pytest.raises(RegistryError, match="warmup_method: unknown warm-up method 'cubic'. Registered warm-up "
                                            "methods: constant, linear"):
        warmup_poly(max_iter=10, warmup_method="cubic")
    with pytest.raises(ValueError, match="max_iter must be > 0"):
        warmup_poly(max_iter=0)
    with pytest.raises(ValueError, match="power must be > 0"):
        warmup_poly(max_iter=10, power=0.0)
