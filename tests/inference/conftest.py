from __future__ import annotations

from pathlib import Path

import pytest

from tests.inference.helpers import trained_tiny_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny panoptic Mask2Former trained for 2 iterations (config.yaml, model_final.pth, synthetic data)."""
    return trained_tiny_run(tmp_path_factory.getbasetemp())
