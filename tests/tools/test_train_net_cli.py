"""tools/train_net.py as a user runs it, on the paths that used to crash, lose a run or give wrong numbers:
missing data, long command lines (run-folder names), re-running a finished command, a checkpoint of another
model, and the paper command without encoder weights."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.helpers import TEST_CONFIGS, TINY, TRAIN_NET, cli_env

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def _cli(cwd: Path, *args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python tools/train_net.py --config-dir <test configs> ARGS`` run from ``cwd`` (Hydra's folders are relative
    to it)."""
    return subprocess.run([sys.executable, str(TRAIN_NET), "--config-dir", str(TEST_CONFIGS), *args], cwd=cwd,
                          env=env or cli_env(), capture_output=True, text=True, timeout=timeout, check=False)


def _refused(done: subprocess.CompletedProcess, message: str) -> None:
    assert done.returncode == 2, done.stderr[-3000:]
    assert re.search(message, done.stderr, re.DOTALL), done.stderr[-3000:]
    assert "Traceback" not in done.stderr


def test_missing_dataset_is_reported_before_the_model_is_built(tmp_path):
    """No Cityscapes under $DETECTRON2_DATASETS: the not-found message (exit 2), not a model-building error."""
    root = tmp_path / "datasets"
    root.mkdir()
    env = dict(cli_env(), DETECTRON2_DATASETS=str(root))
    out = tmp_path / "run"
    done = _cli(tmp_path, "backbone=fusion_micro_d3s2", "model=mask2former_tiny", "dataset=cityscapes_instance",
                "solver=smoke_cpu", "runtime=smoke", "device=cpu", f"output_dir={out}", env=env)
    _refused(done, rf"error: Dataset 'mgf_cityscapes_fine_instance_seg_train' expects .*'{re.escape(str(root))}.*"
                   r"DETECTRON2_DATASETS")
    assert "thing_dataset_id_to_contiguous_id" not in done.stderr
    assert not (out / "config.yaml").exists() and not (out / "log.txt").exists()  # nothing of the run was written


def test_paper_command_without_encoder_weights_is_refused(tmp_path):
    done = _cli(tmp_path, f"output_dir={tmp_path / 'run'}")  # the README's paper recipe, no weights given
    _refused(done, r"error: backbone.master.weights is not set, so the foundation encoder 'dinov3_vitb16' would be "
                   r"trained from random initialisation.*backbone.master.weights=random")
    assert not (tmp_path / "run" / "config.yaml").exists()


# ~340 characters of overrides: more than a file name may hold (255 bytes)
LONG = ["solver.max_iter=3", "solver.checkpoint_period=2", "solver.eval_period=0",
        "runtime.aspect_ratio_grouping=false",
        ("solver.param_groups.no_weight_decay_keys=[position_embedding_table,class_token_embedding,"
         "register_token_embeddings,relative_position_bias_table,learnable_query_embeddings]"),
        "solver.lr_scheduler.power=0.9", "solver.clip_gradients.value=0.05"]


@pytest.mark.slow
def test_long_command_lines_get_bounded_stable_run_folders(tmp_path):
    data = f"dataset.register.root={tmp_path / 'data'}"
    command = [*TINY, data, *LONG]
    assert len(",".join(command)) > 300
    first = _cli(tmp_path, *command)
    assert first.returncode == 0, first.stderr[-3000:]
    [run] = (tmp_path / "outputs" / "tiny_shapes" / "tiny_conv").iterdir()
    assert re.fullmatch(r"[A-Za-z0-9._+@-]{1,80}-[0-9a-f]{10}", run.name), run.name
    recorded = (run / "overrides.txt").read_text().strip()
    assert all(o in recorded for o in [data, *LONG]) and "resume" not in recorded and "device" not in recorded
    assert (run / "model_final.pth").exists()
    final = (run / "model_final.pth").read_bytes()

    # the same command again: refused (it would overwrite the finished run)
    _refused(_cli(tmp_path, *command), rf"error: output_dir {re.escape(str(run))} already holds a training run.*"
                                       r"Pass resume=true .* or overwrite=true")
    # the same command + resume=true finds the very same folder (and only re-evaluates the finished run)
    again = _cli(tmp_path, *command, "resume=true")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [p.name for p in run.parent.iterdir()] == [run.name] and (run / "model_final.pth").read_bytes() == final

    # a checkpoint of another model (another backbone width) is refused, not evaluated as a half-random model;
    # output_dir= replaces Hydra's folder entirely (nothing new under outputs/), whatever the command's length
    mismatch = _cli(tmp_path, *command, "eval_only=true", f"weights={run / 'model_final.pth'}", "backbone.width=4",
                    f"output_dir={tmp_path / 'eval'}")
    _refused(mismatch, r"error: checkpoint .*model_final.pth does not match the model \(strict loading\)\n"
                       r"  missing keys .*shape mismatches .*weights_strict=false")
    assert not (tmp_path / "eval" / "eval_metrics.json").exists() and (tmp_path / "eval" / "eval_config.yaml").exists()
    assert [p.name for p in run.parent.iterdir()] == [run.name]


@pytest.mark.slow
def test_multirun_jobs_get_their_own_bounded_folders(tmp_path):
    done = _cli(tmp_path, "-m", *TINY, f"dataset.register.root={tmp_path / 'data'}", *LONG, "seed=1,2")
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted((tmp_path / "outputs" / "multirun" / "tiny_shapes" / "tiny_conv").iterdir())
    assert len(jobs) == 2 and all(len(j.name) <= 91 for j in jobs)
    recorded = [(j / "overrides.txt").read_text() for j in jobs]
    assert sorted("seed=1" in r for r in recorded) == [False, True] and all(len(r) > 300 for r in recorded)
    assert all((j / "model_final.pth").exists() for j in jobs)
    assert os.path.commonpath([str(j) for j in jobs]) == str(jobs[0].parent)
