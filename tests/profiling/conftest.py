"""Shared helpers for the profiler tests: tiny real photos on disk and a runner for tools/profile_encoders.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "profile_encoders.py"


def photo(name: str, h: int = 48, w: int = 64) -> np.ndarray:
    """A scikit-image CC0 photo resized to ``h x w`` (uint8 RGB)."""
    from skimage import data

    return np.asarray(Image.fromarray(getattr(data, name)()).resize((w, h), Image.BILINEAR))


@pytest.fixture
def tiny_images(tmp_path) -> Path:
    """Two 48x64 photos in a folder."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(photo("astronaut")).save(folder / "astronaut.png")
    Image.fromarray(photo("coffee")).save(folder / "coffee.png")
    return folder


@pytest.fixture
def profile_cli() -> Callable[..., subprocess.CompletedProcess]:
    """``profile_cli(args, cwd=REPO, env=None, timeout=300)``: run the tool as a user does; stdout+stderr in .stdout."""

    def run(args: Sequence[str], *, cwd: Path = REPO, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env or {}))
        return subprocess.run([sys.executable, str(TOOL), *args], cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)

    return run


DEMO_TRAIN = ["backbone=fusion_micro_d3s2", "model=mask2former_tiny", "dataset=synthetic_instance", "solver=smoke_cpu",
              "runtime=smoke", "solver.max_iter=2", "device=cpu", "runtime.tensorboard=false"]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """A demo-size fusion model (micro DINOv3 master + micro SAM2 auxiliary, tiny Mask2Former) trained for 2
    iterations by tools/train_net.py, as a user runs it; returns the run folder (config.yaml, model_final.pth)."""
    root = tmp_path_factory.mktemp("demo")
    out = root / "run"
    cmd = [sys.executable, str(REPO / "tools" / "train_net.py"), *DEMO_TRAIN, f"output_dir={out}",
           f"dataset.register.root={root / 'data'}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "model_final.pth").is_file() and (out / "config.yaml").is_file()
    return out
