"""Encoder profiling with the label-free SC/EF metrics: stream images through encoders, aggregate per stride,
recommend a master/auxiliary pair and injection stride, report costs (``tools/profile_encoders.py``)."""

from .recommend import Recommendation, fusion_config, recommend_pair, write_fusion_config
from .runner import Profiler, ProfileSettings, run_profile
from .sources import ImageRecord, SourceError, images_from_coco_json, images_from_detectron2, images_from_folder

__all__ = [
    "Recommendation", "fusion_config", "recommend_pair", "write_fusion_config",
    "Profiler", "ProfileSettings", "run_profile",
    "ImageRecord", "SourceError", "images_from_coco_json", "images_from_detectron2", "images_from_folder",
]
