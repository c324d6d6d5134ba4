"""Ship a trained model: ONNX export with an onnxruntime parity check (``tools/export_model.py``).

* :mod:`.model_source`: a model's config and weights from a run folder, a config file or configs/train.yaml;
* :mod:`.onnx_export`: the exportable forward (images in 0-255 -> semantic scores + raw query predictions),
  the export itself (dynamic batch/height/width, opset 18) and the parity check.

``onnx``/``onnxruntime``/``onnxscript`` are the optional ``onnx`` extra (``pip install -e '.[onnx]'``); they are
imported only when exporting.
"""

from .model_source import CONFIG_DIR, build_trained_model, default_weights, load_config
from .onnx_export import (
    DEFAULT_OPSET,
    OUTPUT_NAMES,
    ParityResult,
    SegmentationOnnxModel,
    check_parity,
    describe_metadata,
    export_onnx,
    input_size_multiple,
    parity_images,
    use_deform_attn_impl,
)

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_OPSET",
    "OUTPUT_NAMES",
    "ParityResult",
    "SegmentationOnnxModel",
    "build_trained_model",
    "check_parity",
    "default_weights",
    "describe_metadata",
    "export_onnx",
    "input_size_multiple",
    "load_config",
    "parity_images",
    "use_deform_attn_impl",
]
