"""Shared command-line pieces of the dataset preparation scripts in this folder."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Run from a checkout without installing: make the repository's `mgfusion` importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--root`` (default ``$DETECTRON2_DATASETS`` or ``./datasets``) and ``--workers``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--root",
        default=os.environ.get("DETECTRON2_DATASETS", "datasets"),
        help="datasets root holding coco/, cityscapes/, ADEChallengeData2016/ (default: $DETECTRON2_DATASETS or ./datasets)",
    )
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="parallel processes")
    return p


def require_dir(path: str, what: str) -> str:
    """``path`` if it is a folder, else exit with a message naming it."""
    if not os.path.isdir(path):
        sys.exit(f"error: {what} not found at '{path}'. Set --root or $DETECTRON2_DATASETS; see datasets/README.md.")
    return path
