"""The engine's config nodes, composed with configs/train.yaml, build optimizers and schedules that behave as the
paper's recipe says (docs/training.md): what is checked is the built objects, not the YAML values."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from mgfusion.engine import build_gradient_clipper, build_lr_scheduler, build_optimizer, resolve_precision

from tests.engine.helpers import compose_tiny, compose_train


def _multiplier(solver):
    return instantiate(solver.lr_scheduler, max_iter=solver.max_iter, _convert_="all")


@pytest.mark.parametrize("solver", ["adamw_poly", "multistep", "smoke_cpu", "demo_cpu"])
@pytest.mark.parametrize("runtime", ["default", "smoke"])
def test_every_solver_and_runtime_node_builds_a_training_step(tmp_path, solver, runtime):
    cfg = compose_tiny(tmp_path, f"solver={solver}", f"runtime={runtime}")
    s = cfg.solver
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = build_optimizer(model, optimizer=instantiate(s.optimizer, _convert_="all"), base_lr=s.base_lr,
                          param_groups=s.param_groups)
    sched = build_lr_scheduler(opt, _multiplier(s), max_iter=s.max_iter)
    clipper = build_gradient_clipper(model.parameters(), **s.clip_gradients)
    before = model.weight.detach().clone()
    model(torch.randn(8, 4)).pow(2).sum().mul(1e3).backward()
    norm = clipper()
    assert float(norm) > s.clip_gradients.value  # the huge gradient was measured before clipping ...
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert float(total) == pytest.approx(s.clip_gradients.value, rel=1e-4)  # ... and clipped to the full-model norm
    opt.step()
    sched.step()
    assert not torch.equal(model.weight, before) and sched.get_last_lr()[0] <= s.base_lr
    assert resolve_precision(enabled=s.amp.enabled, dtype=s.amp.dtype, device=torch.device("cpu")) is not None
    assert cfg.model.num_classes == cfg.dataset.num_classes  # the dataset decides what the model predicts
    assert cfg.runtime.num_workers >= 0 and cfg.runtime.log_period >= 1


def test_paper_poly_schedule_decays_linearly_to_zero():
    s = compose_train("backbone=tiny_conv", "model=tiny_seg", "dataset=tiny_shapes").solver  # train.yaml default
    f = _multiplier(s)
    n = s.max_iter
    for it in (0, 1, n // 3, n // 2, n - 1):
        assert f(it / n) == pytest.approx(1 - it / n, abs=1e-9)  # power 1.0 (the authors' code), no warm-up


def test_coco_schedule_is_the_authors_multistep():
    s = compose_train("backbone=tiny_conv", "model=tiny_seg", "dataset=tiny_shapes", "solver=multistep").solver
    f, n = _multiplier(s), s.max_iter
    drops = [it for it in range(1, n) if f(it / n) < f((it - 1) / n) - 1e-12]
    assert drops == [327778, 355092] and f((n - 1) / n) == pytest.approx(0.01)
    assert f(0.0) == pytest.approx(1.0) and f(5 / n) == pytest.approx(1.0)  # warm-up factor 1: no ramp
