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
