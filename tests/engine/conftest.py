"""Fixtures shared by the engine tests: one finished tiny training run, and copies of it to resume or re-run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mgfusion.engine import run
from tests.engine.helpers import compose_tiny


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A finished 20-iteration tiny run (checkpoints at iterations 9 and 19, evaluations at 9 and 20):
    ``(run folder, composed config, final results)``. Its data lives in ``<run folder>/../data``."""
    out = tmp_path_factory.mktemp("engine") / "run"
    cfg = compose_tiny(out, "solver.eval_period=10", "runtime.tensorboard=true")
    return out, cfg, run(cfg)


@pytest.fixture
def finished_copy(trained, request) -> Path:
    """A copy of the finished run next to it (same data folder, so the same command applies to it)."""
    out = trained[0].parent / f"copy_{request.node.name}"
    shutil.copytree(trained[0], out)
    yield out
    shutil.rmtree(out, ignore_errors=True)
