"""tools/train_net.py as a user runs it: SIGKILL mid-training then resume, a clear error for a truncated
checkpoint, and 2-process DDP on CPU (gloo) matching a single process with the same total batch."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import torch

from mgfusion.engine import read_checkpoint, run

from tests.engine.helpers import ROOT, cli_command, cli_env, compose_tiny, read_json_lines, read_results, run_cli

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def _wait_for(path, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"train_net.py exited ({proc.returncode}) before {path.name} appeared:\n"
                                 f"{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.02)


def test_sigkill_during_training_then_resume_reaches_max_iter(tmp_path):
    out = tmp_path / "run"
    args = ["solver.max_iter=20", "solver.checkpoint_period=5", "model.train_step_delay_s=0.1"]
    proc = subprocess.Popen(cli_command(out, *args), cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(out / "model_0000004.pth", proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (out / "model_final.pth").exists()  # killed mid-training
    for ckpt in out.glob("*.pth"):  # atomic writes: whatever exists is complete
        read_checkpoint(str(ckpt))
    saved = [read_checkpoint(str(p))["iteration"] for p in out.glob("model_*.pth")]
    last = max(saved)  # the newest complete checkpoint (the pointer may lag it if the kill fell in between)
    assert 4 in saved and last in (4, 9, 14)

    done = run_cli(out, *args, "resume=true")  # the same command (the config must match the saved one)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert f"Resuming at iteration {last + 1} of 20" in log
    assert f"Starting training from iteration {last + 1}" in log
    assert read_checkpoint(str(out / "model_final.pth"))["iteration"] == 19
    iterations = [r["iteration"] for r in read_json_lines(out / "metrics.json") if "total_loss" in r]
    assert iterations[-1] == 19 and iterations == sorted(iterations)
    assert "sem_seg" in read_results(out / "final_metrics.json")


def test_truncated_checkpoint_gives_a_clear_error_not_a_torch_traceback(tmp_path):
    broken = tmp_path / "model_final.pth"
    torch.save({"model": {"w": torch.zeros(1000)}, "iteration": 3}, broken)
    broken.write_bytes(broken.read_bytes()[:-100])
    done = run_cli(tmp_path / "eval", "eval_only=true", f"weights={broken}")
    assert done.returncode == 2
    assert f"error: checkpoint {broken} is truncated or corrupt" in done.stderr
    assert "Traceback" not in done.stderr


def test_two_process_gloo_ddp_trains_and_evaluates_like_one_process(tmp_path):
    """2 processes x 1 image per step == 1 process x 2 images (DDP averages the gradients; the sampler gives rank r
    the r-th image of each step), so both runs end with the same weights and the same metrics."""
    args = ["solver.max_iter=6", "solver.checkpoint_period=3", "solver.eval_period=3", "solver.ims_per_batch=2"]
    ddp = tmp_path / "ddp"
    done = run_cli(ddp, *args, "runtime.num_gpus=2", timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (ddp / "log.txt.rank1").exists() and "Rank 1/2" in (ddp / "log.txt.rank1").read_text()
    assert "2 image(s) in 1 micro-batch(es) of 2 over 2 process(es)" in (ddp / "log.txt").read_text()
    evals = [r for r in read_json_lines(ddp / "metrics.json") if "sem_seg/mIoU" in r]
    assert [r["iteration"] for r in evals] == [2, 6]  # periodic (iteration 3) and final evaluation

    single = tmp_path / "single"
    single_results = run(compose_tiny(single, *args))
    a, b = read_checkpoint(str(ddp / "model_final.pth")), read_checkpoint(str(single / "model_final.pth"))
    for key, value in b["model"].items():
        torch.testing.assert_close(a["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    ddp_results = read_results(ddp / "final_metrics.json")
    assert ddp_results["sem_seg"]["mIoU"] == pytest.approx(single_results["sem_seg"]["mIoU"], abs=0.5)
    # distributed evaluation (images split over ranks, gathered) == single-process evaluation of the same weights
    again = run(compose_tiny(tmp_path / "eval", "eval_only=true", f"weights={ddp / 'model_final.pth'}"))
    assert json.loads(json.dumps(again)) == ddp_results
