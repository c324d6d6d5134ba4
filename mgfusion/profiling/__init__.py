"""Encoder profiling with the label-free SC/EF metrics (``tools/profile_encoders.py``).

The profile runs as a chain of stages, one job each::

    ProfileEntry (entries.py)      the rows: registered encoders, encoders out of training checkpoints
                                   (finetuned.py) with their initial weights, and the controls
    ImageStream (loader.py)        decode, check, resize and batch images; report unreadable / skipped ones
      -> FeatureMetrics (features.py)   one frozen encoder: features -> per-image SC/EF (+ SC_gt, EF_gt) records
         ControlFeatures (controls.py)  noise / pixel control features, scored by the same MetricScorer
      -> ResultStore (store.py)    the run folder's per-image JSONL, fingerprint (fingerprint.py) and lock (lock.py);
                                   per-rank shards of a sharded run (shards.py) merged into it
      -> PCAMaps (pca.py)          PCA first-component maps of a few images (paper Fig. 2)
      -> ProfileReport (outputs.py) tables and plots (report.py), Recommendation (selection.py / recommend.py),
                                   control verdicts (verdict.py), before/after table (before_after.py), supervised
                                   report (supervised.py), CostTable / model_cost (cost.py), summary.json / .md

``Profiler`` (runner.py) wires them together (the streaming loop: stream.py); ``run_profile(mapping)`` is the
entry point of the tool.

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
    "CostTable": "cost", "cost_row": "cost", "model_cost": "cost", "write_model_cost": "cost",
    "ProfileEntry": "entries", "resolve_entries": "entries", "ControlFeatures": "controls",
    "MetricScorer": "features", "paired_comparison": "verdict", "compare_with_controls": "verdict",
    "ImageRecord": "sources", "SourceError": "sources", "images_from_coco_json": "sources",
    "images_from_detectron2": "sources", "images_from_folder": "sources",
}

__all__ = [
    "ControlFeatures", "CostTable", "FeatureMetrics", "FingerprintMismatchError", "ImageRecord", "ImageStream",
    "MetricScorer", "PCAMaps", "ProfileConfigError", "ProfileEntry", "ProfileError", "ProfileReport",
    "ProfileSettings", "Profiler", "Recommendation", "ResultStore", "RunLock", "RunLockedError", "SourceError",
    "argmax_stride", "compare_with_controls", "cost_row", "fusion_config", "images_from_coco_json",
    "images_from_detectron2", "images_from_folder", "model_cost", "paired_comparison", "read_profile_ef",
    "recommend_pair", "resolve_entries", "run_profile", "write_fusion_config", "write_model_cost",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mgfusion.profiling' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
