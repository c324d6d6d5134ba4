"""Fixture ``tiny``: the tiny real-layout datasets of mgfusion.data.testing, registered for each test."""

import pytest

import mgfusion.data as mdata
from mgfusion.data.testing import write_tiny_datasets


@pytest.fixture(scope="session")
def tiny_eval_root(tmp_path_factory):
    return write_tiny_datasets(tmp_path_factory.mktemp("tiny_eval_datasets"))


@pytest.fixture(autouse=True)
def tiny(tiny_eval_root):
    """Every test starts with the mgfusion names registered under the tiny root (registration is explicit)."""
    mdata.register_all(tiny_eval_root)
    return tiny_eval_root
