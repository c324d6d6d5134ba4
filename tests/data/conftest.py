"""Fixtures: tiny COCO / Cityscapes / ADE20K folders in their real layouts, registered under their root."""

from pathlib import Path

import pytest

import mgfusion.data as mdata
from mgfusion.data.testing import write_tiny_datasets


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return write_tiny_datasets(tmp_path_factory.mktemp("tiny_datasets"))


@pytest.fixture
def tiny(tiny_root) -> Path:
    """Register every dataset name under the tiny root (other tests may register other roots)."""
    mdata.register_all(tiny_root)
    return tiny_root
