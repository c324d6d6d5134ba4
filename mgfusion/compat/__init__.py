"""Compatibility with the original Mask2Former: checkpoint conversion and config comparison.

* :mod:`.mask2former_checkpoint`: read an official Mask2Former checkpoint (detectron2 ``.pkl`` or ``.pth``) and map its
  head (``sem_seg_head.pixel_decoder.*``, ``sem_seg_head.predictor.*``) onto mgfusion's ``pixel_decoder.*`` /
  ``transformer_decoder.*`` parameter names, failing on any key that has no counterpart;
* :mod:`.mask2former_config`: read the head settings of an official Mask2Former YAML config (``_BASE_`` chains
  included) and list where they differ from an mgfusion model config.

``tools/convert_checkpoint.py`` is the command-line front end of both.
"""

from .mask2former_checkpoint import (
    ConversionReport,
    UnmappedKeysError,
    check_against_model,
    convert_mask2former_state_dict,
    infer_head_settings,
    read_official_checkpoint,
)
from .mask2former_config import (
    ConfigMismatch,
    compare_head_settings,
    mgfusion_head_settings,
    override_for,
    read_official_config,
)

__all__ = [
    "ConfigMismatch",
    "ConversionReport",
    "UnmappedKeysError",
    "check_against_model",
    "compare_head_settings",
    "convert_mask2former_state_dict",
    "infer_head_settings",
    "mgfusion_head_settings",
    "override_for",
    "read_official_checkpoint",
    "read_official_config",
]
