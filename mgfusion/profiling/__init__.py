"""Encoder profiling with the label-free SC/EF metrics (``tools/profile_encoders.py``).

The profile runs as a chain of stages, one job each::

    ImageStream (loader.py)        decode, check, resize and batch images; report unreadable / skipped ones
      -> FeatureMetrics (features.py)   one frozen encoder: features -> per-image SC/EF (+ SC_gt) records
      -> ResultStore (store.py)    the run folder's per-image JSONL, fingerprint (fingerprint.py) and lock (lock.py)
      -> PCAMaps (pca.py)          PCA first-component maps of a few images (paper Fig. 2)
      -> ProfileReport (outputs.py) tables and plots (report.py), Recommendation (selection.py / recommend.py),
                                   supervised RQ4 report (supervised.py), CostTable (cost.py), summary.json

``Profiler`` (runner.py) wires them together; ``run_profile(mapping)`` is the entry point of the tool.

Names are imported lazily (PEP 562), so ``import mgfusion.profiling.selection`` (used by the fusion backbone) does not
pull in torch, the encoders or the metrics.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Recommendation": "selection", "argmax_stride": "selection", "recommend_pair": "selection",
    "read_profile_ef": "selection",
    "fusion_config": "recommend", "write_fusion_config": "recommend",
    "ProfileSettings": "settings", "ProfileConfigError": "settings",
    "Profiler": "runner", "run_profile": "runner", "ProfileError": "runner",
    "ResultStore": "store", "FingerprintMismatchError": "fingerprint", "RunLock": "lock", "RunLockedError": "lock",
    "ImageStream": "loader", "FeatureMetrics": "features", "PCAMaps": "pca", "ProfileReport": "outputs",
    "CostTable": "cost", "cost_row": "cost",
    "ImageRecord": "sources", "SourceError": "sources", "images_from_coco_json": "sources",
    "images_from_detectron2": "sources", "images_from_folder": "sources",
}

__all__ = [
    "CostTable", "FeatureMetrics", "FingerprintMismatchError", "ImageRecord", "ImageStream", "PCAMaps",
    "ProfileConfigError", "ProfileError", "ProfileReport", "ProfileSettings", "Profiler", "Recommendation",
    "ResultStore", "RunLock", "RunLockedError", "SourceError", "argmax_stride", "cost_row", "fusion_config",
    "images_from_coco_json", "images_from_detectron2", "images_from_folder", "read_profile_ef", "recommend_pair",
    "run_profile", "write_fusion_config",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mgfusion.profiling' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
