"""benchmarks/gpu_check.py: its ``--dry-run`` through the command line (every section on the CPU at tiny sizes), the
JSON it writes, and the verdict logic (a wrong implementation or a non-finite fp16 run fails)."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))

import gpu_check
from gpu_checks import correctness, speed, study
from gpu_checks.common import DRY_RUN, Context

from mgfusion.modeling.deform_attn import DEFORM_ATTN_IMPLS, ms_deform_attn_reference

EXPECTED_CHECKS = [
    *(f"deform_attn[{impl},{dtype}]" for impl in ("embedding_bag", "grid_sample") for dtype in ("float64", "float32")),
    *(f"deform_attn[{impl},autocast {dtype}]" for impl in ("embedding_bag", "grid_sample")
      for dtype in ("float16", "bfloat16")),
    "train_step[fp32]", "train_step[fp16]", "train_step[fp16 checkpoint round trip]", "train_step[bf16]",
    "inference[cpu fp32 vs cpu fp32]", "inference[cpu fp32 vs cpu fp64]", "distributed[gloo, 1 process, DDP step]",
    "precision_study[fp16, pixel decoder fp32]", "precision_study[fp16, pixel decoder autocast]",
]  # fmt: skip


@pytest.mark.slow
def test_dry_run_passes_every_check_and_writes_the_documented_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PASS: 17 passed, 0 failed" in proc.stdout and "| deform_attn[grid_sample,float64]" in proc.stdout
    report = json.loads(out.read_text())
    assert set(report) == {"benchmark", "mode", "command", "machine", "environment", "correctness", "speed",
                           "precision_study", "summary"}
    assert (report["benchmark"], report["mode"], report["environment"]["device"]) == ("gpu_check", "dry_run", "cpu")

    checks = {row["name"]: row for row in report["correctness"]}
    assert list(checks) == EXPECTED_CHECKS
    assert {row["verdict"] for row in checks.values()} == {"pass"}, [r for r in checks.values() if r["verdict"] != "pass"]
    for row in checks.values():
        assert set(row) == {"name", "verdict", "measured", "tolerance", "detail", "seconds"} and row["detail"]
        if row["tolerance"] is not None:
            assert 0 <= row["measured"] <= row["tolerance"], row
    assert checks["deform_attn[embedding_bag,float64]"]["measured"] < 1e-12
    assert 0 < checks["inference[cpu fp32 vs cpu fp64]"]["measured"] < 1e-4, "float32 vs float64 differ a little"
    assert "all_reduce True" in checks["distributed[gloo, 1 process, DDP step]"]["detail"]
    assert "restored equal: True" in checks["train_step[fp16 checkpoint round trip]"]["detail"]
    assert report["summary"] == {**report["summary"], "verdict": "pass", "pass": 17, "fail": 0, "skip": 0}

    rows = {row["name"]: row for row in report["speed"]}
    assert "error" not in {row["status"] for row in rows.values()}, rows
    model = rows["micro_d3s2 (dry-run stand-in)"]
    assert model["status"] == "ok" and (model["crop"], model["batch"], model["infer_size"]) == ("64x128", 3, "64x128")
    assert model["s_per_iter"] > 0 and model["peak_mem_MB"] > 0 and model["infer_fp32_images_per_s"] > 0
    assert model["sliding_window"].startswith("skipped") or model["infer_slide_fp32_images_per_s"] > 0
    metrics = rows["metrics (compute_pyramid_metrics, reference variant)"]
    assert metrics["s_per_image"] > 0 and set(metrics["max_abs_diff_vs_cpu"]) >= {"SC", "EF"}
    assert rows.get("tuning modes", {"status": "skipped"})["status"] == "skipped" or any(
        name.startswith("tuning=") for name in rows)

    outcome = report["precision_study"]
    assert outcome["status"] == "ok" and outcome["iterations"] == DRY_RUN.study_iters
    assert [run["setting"] for run in outcome["runs"]] == [s[0] for s in study.SETTINGS]
    for run in outcome["runs"]:
        assert len(run["losses"]) == len(run["grad_norms"]) == len(run["skipped"]) == DRY_RUN.study_iters
        assert all(math.isfinite(x) and x > 0 for x in run["losses"])
    assert [row["setting"] for row in outcome["comparison"]] == outcome["settings"]
    assert outcome["comparison"][0]["loss_rel_diff_median"] == 0.0
    assert (out.parent / outcome["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def dry_context(tmp_path) -> Context:
    return Context(device=torch.device("cpu"), sizes=DRY_RUN, mode="dry_run", scratch=tmp_path,
                   args=gpu_check.parse_args(["--dry-run"]))


def test_deform_attn_check_fails_a_wrong_implementation(tmp_path):
    def off_by_one_percent(value, shapes, locations, weights):
        return ms_deform_attn_reference(value, shapes, locations, weights) * 1.01

    DEFORM_ATTN_IMPLS.register("off_by_one_percent", off_by_one_percent)
    try:
        rows = {row["name"]: row for row in correctness.check_deform_attn(dry_context(tmp_path))}
    finally:
        DEFORM_ATTN_IMPLS.unregister("off_by_one_percent")
    assert rows["deform_attn[off_by_one_percent,float64]"]["verdict"] == "fail"
    assert rows["deform_attn[off_by_one_percent,float64]"]["measured"] > 1e-3
    assert rows["deform_attn[embedding_bag,float64]"]["verdict"] == "pass"


def test_study_verdicts_and_comparison():
    def run(setting, losses, skipped, grad_norms=None):
        return {"setting": setting, "losses": losses, "skipped": skipped, "grad_norms": grad_norms or [1.0] * 4,
                "pixel_decoder_grad_norms": [0.5] * 4, "parameters_finite": True, "error": None, "seconds": 1.0}

    runs = [run("fp32", [4.0, 3.0, 2.0, 1.0], [False] * 4),
            run("fp16 good", [4.4, 3.3, 2.2, 1.1], [True, False, False, False], [9.0, 2.0, 2.0, 2.0]),
            run("fp16 diverged", [4.0, 3.0, math.nan, math.nan], [False] * 4)]
    outcome = {"iterations": 4, "runs": runs}
    verdicts = {row["name"]: row["verdict"] for row in study.study_checks(outcome)}
    assert verdicts == {"precision_study[fp16 good]": "pass", "precision_study[fp16 diverged]": "fail"}
    rows = study.compare_runs(runs)
    assert rows[1]["loss_rel_diff_median"] == pytest.approx(0.1)
    assert rows[1]["grad_norm_ratio_median"] == pytest.approx(2.0), "the skipped step's norm is left out"
    assert (rows[1]["skipped_steps"], rows[2]["nonfinite_losses"]) == (1, 2)
    assert rows[1]["final_loss"] == pytest.approx(1.1)


def test_config_helpers():
    cfg = {"backbone": {"master": {"allow_random_init": False, "weights": None}, "fusion": {"stride": 16}},
           "random_init_note": "a string is not an opt-in"}
    assert speed.random_init_keys(cfg) == ["backbone.master.allow_random_init"]
    assert correctness.child_visible_devices(torch.device("cuda", 1), "4,5,6") == "5"
    assert correctness.child_visible_devices(torch.device("cuda", 1), None) == "1"
    assert correctness.child_visible_devices(torch.device("cpu"), "0") == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_full_run_without_a_gpu_exits_2_and_points_to_the_dry_run(capsys):
    level = logging.getLogger("mgfusion").level
    assert gpu_check.main([]) == 2
    assert "--dry-run" in capsys.readouterr().err
    assert logging.getLogger("mgfusion").level == level, "refusing must not change the process's logging"
