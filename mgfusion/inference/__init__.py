"""Using a trained model: prediction on your own images and videos, sliding-window and test-time-augmented
inference, output files, and tensor-in/tensor-out views for export.

* :class:`Predictor` — ``Predictor(run_dir).predict(image_or_batch)`` → :class:`Prediction` (semantic scores and
  labels, instances, panoptic segments) at the image's size; strict weight loading; batching, AMP, test-time mode.
* :func:`predict_to_folder` — what ``tools/predict.py`` runs: images, folders, globs, lists and videos into overlay
  PNGs, semantic label PNGs, COCO-style instance JSON and COCO panoptic PNG + JSON, resumable, fingerprinted.
* :class:`TestTimeConfig`, :class:`TestTimeModel`, :func:`sliding_window_semantic`, :func:`augmented_semantic` —
  whole / sliding-window / multi-scale + flip inference (the ``test_time`` config group; also used by evaluation).
* :class:`MaskFormerLogits`, :class:`SemanticScores` — traceable modules: images → class and mask logits, or
  → semantic scores.
"""

from .classes import ClassTable
from .folder import FingerprintMismatchError, FolderReport, predict_to_folder
from .loading import (
    LoadedModel,
    StrictLoadError,
    load_model,
    load_state_dict_strict,
    resolve_checkpoint,
)
from .predictor import IGNORE_LABEL, Prediction, Predictor, filter_instances
from .sources import InputItem, expand_inputs, read_image
from .test_time import (
    TestTimeConfig,
    TestTimeModel,
    apply_test_time,
    augmented_semantic,
    crop_size_of,
    semantic_fn_of,
    sliding_window_semantic,
    window_grid,
)
from .traceable import MaskFormerLogits, SemanticScores

__all__ = [
    "IGNORE_LABEL",
    "ClassTable",
    "FingerprintMismatchError",
    "FolderReport",
    "InputItem",
    "LoadedModel",
    "MaskFormerLogits",
    "Prediction",
    "Predictor",
    "SemanticScores",
    "StrictLoadError",
    "TestTimeConfig",
    "TestTimeModel",
    "apply_test_time",
    "augmented_semantic",
    "crop_size_of",
    "expand_inputs",
    "filter_instances",
    "load_model",
    "load_state_dict_strict",
    "predict_to_folder",
    "read_image",
    "resolve_checkpoint",
    "semantic_fn_of",
    "sliding_window_semantic",
    "window_grid",
]  # fmt: skip
