"""The real model through the engine: Mask2Former (model=mask2former_tiny) on a fusion backbone
(backbone=fusion_micro_d3s2) on the synthetic panoptic dataset, composed from configs/train.yaml as
tools/train_net.py does, in one process and in 2 gloo processes."""

from __future__ import annotations

import json
import math

import pytest

from mgfusion.engine import read_checkpoint, run
from tests.engine.helpers import compose_train, read_json_lines

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def _overrides(out, data, *extra: str) -> list[str]:
    return ["backbone=fusion_micro_d3s2", "model=mask2former_tiny", "dataset=synthetic_panoptic", "solver=smoke_cpu",
            "runtime=smoke", "device=cpu", "runtime.tensorboard=false", "runtime.log_period=1",
            f"dataset.register.root={data}", "dataset.register.image_size=64", "dataset.register.num_train=8",
            "dataset.register.num_val=4", "model.criterion.num_points=256", "solver.max_iter=4",
            "solver.checkpoint_period=2", "solver.ims_per_batch=2", f"output_dir={out}", *extra]


def _check_run(out, *, processes: int) -> dict:
    losses = [r["total_loss"] for r in read_json_lines(out / "metrics.json") if "total_loss" in r]
    assert len(losses) == 4 and all(math.isfinite(v) and v > 0 for v in losses)
    assert {p.name for p in out.glob("*.pth")} == {"model_0000001.pth", "model_0000003.pth", "model_final.pth"}
    assert read_checkpoint(str(out / "model_final.pth"))["iteration"] == 3
    final = json.loads((out / "final_metrics.json").read_text())
    assert set(final["results"]) == {"panoptic_seg", "segm", "sem_seg"}  # PQ, mask AP, mIoU
    assert all(math.isfinite(v) for v in final["results"]["panoptic_seg"].values() if v is not None)
    assert final["random_init"] == ["backbone.master (dinov3_micro16)", "backbone.auxiliary (sam2_hiera_micro)"]
    cost = json.loads((out / "model_cost.json").read_text())  # the whole model's size at 1024x2048 (Table 11)
    model = read_checkpoint(str(out / "model_final.pth"))["model"]
    assert cost["input"] == "1024x2048" and cost["GFLOPs"] > 0
    assert cost["params_M"] * 1e6 == pytest.approx(sum(t.numel() for t in model.values() if t.is_floating_point()),
                                                   rel=0.02)
    log = (out / "log.txt").read_text()
    assert f"over {processes} process(es)" in log and "RANDOM INITIALISATION: backbone.master (dinov3_micro16)" in log
    return final["results"]


def test_mask2former_on_fusion_backbone_trains_and_evaluates(tmp_path):
    out = tmp_path / "run"
    results = run(compose_train(*_overrides(out, tmp_path / "data")))
    saved = _check_run(out, processes=1)
    assert saved["panoptic_seg"] == pytest.approx(dict(results["panoptic_seg"]))  # (segm AP has NaN -> null)
    model = read_checkpoint(str(out / "model_final.pth"))["model"]
    assert any(k.startswith("backbone.encoder.auxiliary.") for k in model)  # the fused backbone was trained/saved


@pytest.mark.slow
def test_mask2former_on_fusion_backbone_in_two_gloo_processes(tmp_path):
    out = tmp_path / "ddp"
    run(compose_train(*_overrides(out, tmp_path / "data", "runtime.num_gpus=2")))
    _check_run(out, processes=2)
    assert "Rank 1/2" in (out / "log.txt.rank1").read_text()
