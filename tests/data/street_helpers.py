"""Helpers of the street-scene dataset tests: feed a registered dataset's ground truth through its evaluator."""

from __future__ import annotations

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from mgfusion.evaluation import build_evaluator, ground_truth_outputs


def ground_truth_scores(name: str, tasks: list[str], output_dir: str) -> dict:
    """The evaluator results of ``name`` when every image's prediction is its ground truth."""
    evaluator = build_evaluator(name, output_dir, tasks, distributed=False)
    evaluator.reset()
    meta = MetadataCatalog.get(name)
    for d in DatasetCatalog.get(name):
        evaluator.process([d], [ground_truth_outputs(d, meta, tasks)])
    return evaluator.evaluate()


def palette_indices(path) -> np.ndarray:
    """The indices of a palette PNG (what the file stores, not its colours)."""
    with Image.open(path) as image:
        assert image.mode == "P", (path, image.mode)
        return np.array(image)
