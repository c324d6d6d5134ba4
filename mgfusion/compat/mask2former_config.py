"""Compare an official Mask2Former YAML config with an mgfusion model config.

Both sides are reduced to the same flat settings (``num_queries``, ``dec_layers``, ``hidden_dim``, ...), each tagged
with what a difference means:

* ``architecture``: the official checkpoint cannot load, or computes something else (layer counts, widths, heads);
* ``inference``: same weights, different post-processing (thresholds, which outputs);
* ``training``: only matters when fine-tuning (loss weights, sampled points).

Official fields not set in the YAML chain (``_BASE_`` files included) take Mask2Former's defaults
(``add_maskformer2_config`` on top of detectron2's), which :data:`OFFICIAL_DEFAULTS` lists.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = [
    "OFFICIAL_DEFAULTS",
    "ConfigMismatch",
    "compare_head_settings",
    "mgfusion_head_settings",
    "official_head_settings",
    "override_for",
    "read_official_config",
]

#: setting -> (official config path, kind, official default). DEC_LAYERS counts the prediction from the initial
#: queries, so mgfusion's ``transformer_decoder.num_layers`` is DEC_LAYERS - 1. The official deformable encoder uses
#: MASK_FORMER.NHEADS and MASK_FORMER.DROPOUT, and fixes 4 sampling points and a 1024-wide FFN.
_OFFICIAL_FIELDS: dict[str, tuple[str | None, str, Any]] = {
    "num_classes": ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "architecture", 54),
    "num_queries": ("MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "architecture", 100),
    "hidden_dim": ("MODEL.MASK_FORMER.HIDDEN_DIM", "architecture", 256),
    "dec_layers": ("MODEL.MASK_FORMER.DEC_LAYERS", "architecture", 6),
    "dec_num_heads": ("MODEL.MASK_FORMER.NHEADS", "architecture", 8),
    "dec_dim_feedforward": ("MODEL.MASK_FORMER.DIM_FEEDFORWARD", "architecture", 2048),
    "pre_norm": ("MODEL.MASK_FORMER.PRE_NORM", "architecture", False),
    "enforce_input_project": ("MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ", "architecture", False),
    "conv_dim": ("MODEL.SEM_SEG_HEAD.CONVS_DIM", "architecture", 128),
    "mask_dim": ("MODEL.SEM_SEG_HEAD.MASK_DIM", "architecture", 256),
    "norm": ("MODEL.SEM_SEG_HEAD.NORM", "architecture", "GN"),
    "enc_layers": ("MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "architecture", 0),
    "enc_num_heads": ("MODEL.MASK_FORMER.NHEADS", "architecture", 8),
    "enc_num_points": (None, "architecture", 4),
    "enc_dim_feedforward": (None, "architecture", 1024),
    "in_features": ("MODEL.SEM_SEG_HEAD.IN_FEATURES", "architecture", ["p2", "p3", "p4", "p5"]),
    "transformer_in_features": ("MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", "architecture",
                                ["res3", "res4", "res5"]),
    "common_stride": ("MODEL.SEM_SEG_HEAD.COMMON_STRIDE", "architecture", 4),
    "pixel_decoder": ("MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "architecture", "BasePixelDecoder"),
    "transformer_decoder": ("MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME", "architecture",
                            "MultiScaleMaskedTransformerDecoder"),
    "dropout": ("MODEL.MASK_FORMER.DROPOUT", "training", 0.1),
    "size_divisibility": ("MODEL.MASK_FORMER.SIZE_DIVISIBILITY", "inference", 32),
    "semantic_on": ("MODEL.MASK_FORMER.TEST.SEMANTIC_ON", "inference", True),
    "instance_on": ("MODEL.MASK_FORMER.TEST.INSTANCE_ON", "inference", False),
    "panoptic_on": ("MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "inference", False),
    "object_mask_threshold": ("MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "inference", 0.0),
    "overlap_threshold": ("MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "inference", 0.0),
    "sem_seg_postprocess_before_inference": ("MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE",
                                             "inference", False),
    "test_topk_per_image": ("TEST.DETECTIONS_PER_IMAGE", "inference", 100),
    "class_weight": ("MODEL.MASK_FORMER.CLASS_WEIGHT", "training", 1.0),
    "mask_weight": ("MODEL.MASK_FORMER.MASK_WEIGHT", "training", 20.0),
    "dice_weight": ("MODEL.MASK_FORMER.DICE_WEIGHT", "training", 1.0),
    "no_object_weight": ("MODEL.MASK_FORMER.NO_OBJECT_WEIGHT", "training", 0.1),
    "deep_supervision": ("MODEL.MASK_FORMER.DEEP_SUPERVISION", "training", True),
    "train_num_points": ("MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "training", 112 * 112),
    "oversample_ratio": ("MODEL.MASK_FORMER.OVERSAMPLE_RATIO", "training", 3.0),
    "importance_sample_ratio": ("MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO", "training", 0.75),
}
OFFICIAL_DEFAULTS = {name: default for name, (_, _, default) in _OFFICIAL_FIELDS.items()}

#: setting -> key path in mgfusion's composed ``cfg.model`` (configs/model/mask2former.yaml). None = fixed by the
#: implementation (the pixel decoder and transformer decoder classes mgfusion has).
_MGFUSION_KEYS: dict[str, str | None] = {
    "num_classes": "num_classes",
    "num_queries": "num_queries",
    "hidden_dim": "transformer_decoder.hidden_dim",
    "dec_layers": "transformer_decoder.num_layers",
    "dec_num_heads": "transformer_decoder.num_heads",
    "dec_dim_feedforward": "transformer_decoder.dim_feedforward",
    "pre_norm": "transformer_decoder.pre_norm",
    "enforce_input_project": "transformer_decoder.enforce_input_project",
    "conv_dim": "pixel_decoder.conv_dim",
    "mask_dim": "pixel_decoder.mask_dim",
    "norm": "pixel_decoder.norm",
    "enc_layers": "pixel_decoder.num_layers",
    "enc_num_heads": "pixel_decoder.num_heads",
    "enc_num_points": "pixel_decoder.num_points",
    "enc_dim_feedforward": "pixel_decoder.dim_feedforward",
    "in_features": "pixel_decoder.in_features",
    "transformer_in_features": "pixel_decoder.transformer_in_features",
    "common_stride": "pixel_decoder.common_stride",
    "pixel_decoder": None,
    "transformer_decoder": None,
    "dropout": "transformer_decoder.dropout",
    "pixel_decoder_dropout": "pixel_decoder.dropout",
    "size_divisibility": "size_divisibility",
    "semantic_on": "semantic_on",
    "instance_on": "instance_on",
    "panoptic_on": "panoptic_on",
    "object_mask_threshold": "object_mask_threshold",
    "overlap_threshold": "overlap_threshold",
    "sem_seg_postprocess_before_inference": "sem_seg_postprocess_before_inference",
    "test_topk_per_image": "test_topk_per_image",
    "class_weight": "criterion.class_weight",
    "mask_weight": "criterion.mask_weight",
    "dice_weight": "criterion.dice_weight",
    "no_object_weight": "criterion.no_object_weight",
    "deep_supervision": "criterion.deep_supervision",
    "train_num_points": "criterion.num_points",
    "oversample_ratio": "criterion.oversample_ratio",
    "importance_sample_ratio": "criterion.importance_sample_ratio",
}
_MGFUSION_FIXED = {"pixel_decoder": "MSDeformAttnPixelDecoder", "transformer_decoder": "MultiScaleMaskedTransformerDecoder"}


@dataclass(frozen=True)
class ConfigMismatch:
    """One setting that differs: its name, kind (architecture | inference | training) and both values."""

    setting: str
    kind: str
    official: Any
    mgfusion: Any
    official_source: str

    @property
    def override(self) -> str | None:
        """The mgfusion override that adopts the official value (None when mgfusion fixes the setting)."""
        return override_for(self.setting, self.official)

    def __str__(self) -> str:
        hint = f"; to match: {self.override}" if self.override else ""
        return (f"[{self.kind}] {self.setting}: official {self.official!r} ({self.official_source}) vs mgfusion "
                f"{self.mgfusion!r}{hint}")


def override_for(setting: str, value: Any) -> str | None:
    """``model.<key>=<value>``: the override of mgfusion's composed config that sets ``setting`` to ``value``."""
    key = _MGFUSION_KEYS.get(setting)
    if key is None:
        return None
    text = "[" + ",".join(str(v) for v in value) + "]" if isinstance(value, (list, tuple)) else str(value).lower() \
        if isinstance(value, bool) else str(value)
    return f"model.{key}={text}"


def _merge(base: dict, update: Mapping) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def read_official_config(path: str | os.PathLike, _seen: tuple[str, ...] = ()) -> dict:
    """An official (detectron2-style) YAML config as a nested dict, with its ``_BASE_`` chain merged in."""
    path = os.path.abspath(os.fspath(path))
    if path in _seen:
        raise ValueError(f"_BASE_ cycle: {' -> '.join(_seen + (path,))}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config {path} does not exist" + (f" (a _BASE_ of {_seen[-1]})" if _seen else ""))
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise TypeError(f"{path} is not a YAML mapping")
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
    return _merge(read_official_config(base_path, _seen + (path,)), data)


def official_head_settings(config: Mapping) -> dict[str, tuple[Any, str]]:
    """setting -> (value, source): the config path it came from, or "Mask2Former default"/"fixed in Mask2Former"."""
    out = {}
    for name, (key_path, _, default) in _OFFICIAL_FIELDS.items():
        node: Any = config
        for part in (key_path or "").split(".") if key_path else []:
            node = node.get(part) if isinstance(node, Mapping) else None
        if key_path is None:
            out[name] = (default, "fixed in Mask2Former")
        elif node is None:
            out[name] = (default, "Mask2Former default")
        else:
            out[name] = (node, key_path)
    dec, source = out["dec_layers"]
    out["dec_layers"] = (int(dec) - 1, f"{source} - 1 (it counts the initial prediction)")
    return out


def mgfusion_head_settings(model_cfg: Mapping) -> dict[str, Any]:
    """The same settings read from mgfusion's composed ``cfg.model`` (absent keys are left out)."""
    out = dict(_MGFUSION_FIXED)
    for name, key_path in _MGFUSION_KEYS.items():
        if key_path is None:
            continue
        node: Any = model_cfg
        for part in key_path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is not None:
            out[name] = node
    if "pixel_decoder" in model_cfg and isinstance(model_cfg["pixel_decoder"], Mapping):
        target = str(model_cfg["pixel_decoder"].get("_target_", ""))
        out["pixel_decoder"] = target.rsplit(".", 1)[-1] or out["pixel_decoder"]
    if "transformer_decoder" in model_cfg and isinstance(model_cfg["transformer_decoder"], Mapping):
        target = str(model_cfg["transformer_decoder"].get("_target_", ""))
        out["transformer_decoder"] = target.rsplit(".", 1)[-1] or out["transformer_decoder"]
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b) and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return str(a) == str(b)


def compare_head_settings(official: Mapping, model_cfg: Mapping) -> list[ConfigMismatch]:
    """Mismatches between an official config (from :func:`read_official_config`) and mgfusion's ``cfg.model``.

    ``dropout`` is compared with the transformer decoder's and the pixel decoder's dropout (the official model
    uses one value for both). Settings absent from ``model_cfg`` are skipped.
    """
    theirs = official_head_settings(official)
    ours = mgfusion_head_settings(model_cfg)
    pixel_dropout = (model_cfg.get("pixel_decoder") or {}).get("dropout") if isinstance(model_cfg, Mapping) else None
    mismatches = []
    for name, (value, source) in theirs.items():
        kind = _OFFICIAL_FIELDS[name][1]
        if name in ours and not _same(value, ours[name]):
            mismatches.append(ConfigMismatch(name, kind, value, ours[name], source))
        if name == "dropout" and pixel_dropout is not None and not _same(value, pixel_dropout):
            mismatches.append(ConfigMismatch("pixel_decoder_dropout", kind, value, pixel_dropout, source))
    return mismatches
