"""The engine's config nodes compose with configs/train.yaml and carry the paper's settings (SPEC 6)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from mgfusion.engine import build_lr_scheduler, build_optimizer

from tests.engine.helpers import compose_tiny, compose_train


@pytest.mark.parametrize("solver", ["adamw_poly", "multistep", "smoke_cpu"])
@pytest.mark.parametrize("runtime", ["default", "smoke"])
def test_solver_and_runtime_nodes_compose_and_build(tmp_path, solver, runtime):
    cfg = compose_tiny(tmp_path, f"solver={solver}", f"runtime={runtime}")
    s = cfg.solver
    assert (s.base_lr, s.param_groups.weight_decay, s.param_groups.backbone_multiplier) == (1e-2, 0.05, 0.1)
    assert (s.clip_gradients.type, s.clip_gradients.value, s.clip_gradients.enabled) == ("full_model", 0.01, True)
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, optimizer=instantiate(s.optimizer, _convert_="all"), base_lr=s.base_lr,
                          param_groups=s.param_groups)
    sched = build_lr_scheduler(opt, instantiate(s.lr_scheduler, max_iter=s.max_iter), max_iter=s.max_iter)
    assert isinstance(opt, torch.optim.AdamW) and sched.get_last_lr()[0] == pytest.approx(1e-2)
    assert cfg.runtime.num_gpus == 1 and cfg.runtime.num_workers == (0 if runtime == "smoke" else 4)
    assert cfg.model.num_classes == cfg.dataset.num_classes == 3  # the dataset decides what the model predicts


def test_paper_defaults_and_the_coco_quirk():
    s = compose_train("backbone=tiny_conv", "model=tiny_seg", "dataset=tiny_shapes").solver  # train.yaml defaults
    assert (s.base_lr, s.max_iter, s.ims_per_batch, s.grad_accum_steps, s.amp.enabled) == (1e-4, 180000, 3, 1, True)
    assert s.lr_scheduler._target_.endswith("warmup_poly") and s.lr_scheduler.power == 1.0
    assert s.lr_scheduler.warmup_iters == 0 and s.param_groups.weight_decay_norm == 0.0
    assert s.param_groups.weight_decay_embed == 0.0 and s.amp.dtype == "auto"
    coco = compose_train("backbone=tiny_conv", "model=tiny_seg", "dataset=tiny_shapes", "solver=multistep").solver
    assert coco.max_iter == 368750 and coco.lr_scheduler._target_.endswith("warmup_multistep")
    assert list(coco.lr_scheduler.steps) == [327778, 355092] and coco.lr_scheduler.warmup_factor == 1.0
    assert (coco.lr_scheduler.warmup_iters, coco.lr_scheduler.gamma, coco.base_lr) == (10, 0.1, 1e-4)
