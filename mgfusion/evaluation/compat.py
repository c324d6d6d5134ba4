"""Workarounds for detectron2's / cityscapesscripts' evaluators on numpy 2.4 (see docs/install.md).

Nothing here edits installed files: :func:`load_label_png` is passed to ``SemSegEvaluator`` and
:func:`cityscapes_numpy2_patches` patches the cityscapes modules only while an evaluation runs.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["cityscapes_numpy2_patches", "load_label_png", "to_json_compatible"]


def load_label_png(filename: str, copy: bool = False, dtype: Any = None) -> np.ndarray:
    """``sem_seg_loading_fn`` for ``SemSegEvaluator``: a writable array of the label PNG.

    detectron2's default calls ``np.array(image, copy=False, dtype=int)``, which numpy 2 rejects
    ("Unable to avoid copy"). ``copy`` is accepted for signature compatibility; the result is always a copy.
    """
    with Image.open(filename) as img:
        return np.array(img, dtype=dtype)


def _in1d(ar1: Any, ar2: Any, assume_unique: bool = False, invert: bool = False) -> np.ndarray:
    """numpy < 2.4's ``np.in1d``: membership of the flattened ``ar1`` in ``ar2``."""
    return np.isin(np.asarray(ar1).ravel(), ar2, assume_unique=assume_unique, invert=invert)


def to_json_compatible(value: Any) -> Any:
    """Recursively convert numpy scalars/arrays (and objects with ``__dict__``) into JSON types."""
    if isinstance(value, dict):
        return {str(k): to_json_compatible(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_compatible(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__dict__"):
        return to_json_compatible(vars(value))
    return value


def _json_writer(work_dir: str):
    def write_dict_to_json(content: Any, file_name: str) -> None:
        # cityscapesscripts writes e.g. "matches.json" relative to the cwd; keep such files in work_dir.
        path = file_name if os.path.isabs(file_name) else os.path.join(work_dir, file_name)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(to_json_compatible(content), f, sort_keys=True)

    return write_dict_to_json


@contextlib.contextmanager
def cityscapes_numpy2_patches(work_dir: str) -> Iterator[None]:
    """While active: ``np.in1d`` exists (numpy 2.4 removed it) and cityscapesscripts' ``writeDict2JSON`` handles
    numpy scalars and writes relative paths into ``work_dir``. Everything is restored on exit."""
    import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as instance_eval
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as pixel_eval
    import cityscapesscripts.helpers.csHelpers as cs_helpers

    modules = [m for m in (cs_helpers, instance_eval, pixel_eval) if hasattr(m, "writeDict2JSON")]
    saved = {m: m.writeDict2JSON for m in modules}
    added_in1d = not hasattr(np, "in1d")
    writer = _json_writer(work_dir)
    try:
        if added_in1d:
            np.in1d = _in1d
        for module in modules:
            module.writeDict2JSON = writer
        yield
    finally:
        for module, original in saved.items():
            module.writeDict2JSON = original
        if added_in1d:
            del np.in1d
