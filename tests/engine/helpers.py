"""Shared helpers of the engine tests: compose the real train config with the tiny test nodes, run the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
TEST_CONFIGS = Path(__file__).resolve().parent / "configs"
TRAIN_NET = ROOT / "tools" / "train_net.py"

#: the tiny setup: real train.yaml/solver/runtime nodes, test backbone/model/dataset nodes.
TINY = ["backbone=tiny_conv", "model=tiny_seg", "dataset=tiny_shapes", "solver=smoke_cpu", "runtime=smoke",
        "device=cpu", "solver.base_lr=0.01", "runtime.tensorboard=false"]


def tiny_overrides(out: Path, *extra: str) -> list[str]:
    """Overrides of a tiny run writing to ``out`` (data under ``out/../data``, shared by the runs of a test)."""
    return [*TINY, f"output_dir={out}", f"dataset.register.root={out.parent / 'data'}", *extra]


def compose_train(*overrides: str) -> DictConfig:
    """configs/train.yaml composed with ``overrides`` (test nodes on the search path), as tools/train_net.py would."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose("train", overrides=[f"hydra.searchpath=[file://{TEST_CONFIGS}]", *overrides])


def compose_tiny(out: Path, *extra: str) -> DictConfig:
    """The composed train config of a tiny run writing to ``out``."""
    return compose_train(*tiny_overrides(out, *extra))


def cli_command(out: Path, *extra: str) -> list[str]:
    """``python tools/train_net.py --config-dir <test configs> <tiny overrides>``."""
    return [sys.executable, str(TRAIN_NET), "--config-dir", str(TEST_CONFIGS), *tiny_overrides(out, *extra)]


def cli_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def run_cli(out: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run tools/train_net.py to completion; returns the completed process (stdout/stderr captured as text)."""
    return subprocess.run(cli_command(out, *extra), cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """detectron2's metrics.json: one JSON object per line."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())["results"]


def micro_fusion_overrides(out: Path, *extra: str) -> list[str]:
    """The tiny Mask2Former on the micro fusion backbone, overfitting one batch of 2 synthetic 64x64 images (LoRA
    rank 4 and 2 last blocks for the tuning modes that use them)."""
    return ["backbone=fusion_micro_d3s2", "model=mask2former_tiny", "dataset=synthetic_semantic", "solver=demo_cpu",
            "runtime=smoke", "device=cpu", f"output_dir={out}", "runtime.tensorboard=false",
            f"dataset.register.root={out.parent / 'data'}", "dataset.register.image_size=64",
            "dataset.register.num_train=2", "dataset.register.num_val=1", "solver.ims_per_batch=2",
            "solver.max_iter=10", "runtime.log_period=1", "solver.checkpoint_period=100",
            "dataset.train_mapper.color_jitter=false", "dataset.train_mapper.flip_prob=0.0",
            "dataset.train_mapper.min_scale=1.0", "dataset.train_mapper.max_scale=1.0",
            "backbone.master.last_n_blocks=2", "backbone.master.lora.r=4", *extra]
