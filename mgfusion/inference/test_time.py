"""Test-time modes: whole-image, sliding-window and test-time-augmented (multi-scale, flip) inference.

One :class:`TestTimeConfig` describes how a model is applied to an image; the same config drives evaluation
(``test_time`` in the training config, ``configs/test_time/{whole,slide,tta}.yaml``), :class:`~.Predictor` and
``tools/predict.py``.

* ``mode: whole`` — the network sees the whole (test-mapper-resized) image, padded to its size divisibility.
* ``mode: slide`` — the image is covered by windows of ``window`` = (h, w) pixels every ``stride`` = (h, w)
  pixels; the last window of a row/column is shifted back so that it ends at the image border (no padding inside
  the image), and where the image is smaller than the window the window shrinks to the image (then one window is
  exactly whole-image inference). Each window is padded to the model's size divisibility like a whole image. The
  per-pixel semantic scores of overlapping windows are averaged.
* ``scales`` / ``flip`` — test-time augmentation: for every scale s (the input resized by s, bilinear with
  antialiasing) and, with ``flip``, its horizontal mirror, the semantic scores are computed (whole or sliding),
  mirrored back, resized to the output size and averaged.

What is averaged are the semantic scores the semantic evaluator takes the argmax of (for Mask2Former
sum_q p_q(k) * sigmoid(m_q), :meth:`MaskFormer.semantic_scores`; for other detectron2 models their ``sem_seg``).

**Only semantic segmentation is slid and augmented.** Instance and panoptic outputs are sets of query masks with
per-image thresholds and a pixel-wise argmax between queries; there is no exact way to merge the sets of different
windows or augmented passes (queries are not matched across passes, and box/mask voting would change the scores the
evaluators rank by). A model that also predicts instances or panoptic segmentation therefore gets them from one
whole-image pass on the un-augmented input, exactly as in ``mode: whole``; only its ``sem_seg`` changes.

The whole-image and sliding paths agree exactly when one window covers the image; with output size = network input
size (no test-time resize) they also agree with the model's own ``sem_seg`` (to float rounding). When the test
mapper resizes the image, the blended scores are resized to the output size (bilinear), as in sliding-window
evaluation elsewhere; Mask2Former's whole-image path resizes mask logits before semantic inference when it also
predicts instances or panoptic segmentation, so the two differ by that interpolation order.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "TEST_TIME_MODES",
    "SemanticFn",
    "TestTimeConfig",
    "TestTimeModel",
    "apply_test_time",
    "augmented_semantic",
    "crop_size_of",
    "semantic_fn_of",
    "sliding_window_semantic",
    "window_grid",
]

logger = logging.getLogger(__name__)

#: ways one (scaled, flipped) image is processed.
TEST_TIME_MODES = ("whole", "slide")

#: images: RGB (3, h, w) tensors (0-255, float or uint8) -> semantic scores (K, h, w) per image, at the same size.
SemanticFn = Callable[[Sequence[Tensor]], list[Tensor]]


def _pair(value: Any, key: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    pair = tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or int(v) != v or int(v) < 1 for v in pair):
        raise ValueError(f"test_time.{key} must be a positive int or [height, width] of positive ints, got {value!r}")
    return int(pair[0]), int(pair[1])


@dataclass(frozen=True)
class TestTimeConfig:
    """How a model is applied at test time (see the module docstring).

    Attributes:
        mode: ``whole`` or ``slide``.
        window: (h, w) window in pixels at the network's input resolution (``slide``); None = the dataset's
            training crop size (filled in by :meth:`with_defaults`).
        stride: (h, w) step between windows in pixels; None = two thirds of the window (one third overlap).
        scales: input scale factors of test-time augmentation ((1.0,) = none).
        flip: also run each scale horizontally mirrored.
        window_batch: windows per network call (same-size windows are batched; memory vs speed).
    """

    __test__ = False  # not a pytest test class despite its name

    mode: str = "whole"
    window: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    window_batch: int = 1

    def __post_init__(self) -> None:
        if self.mode not in TEST_TIME_MODES:
            raise ValueError(f"test_time.mode={self.mode!r} is not one of {list(TEST_TIME_MODES)}")
        object.__setattr__(self, "window", _pair(self.window, "window"))
        object.__setattr__(self, "stride", _pair(self.stride, "stride"))
        scales = tuple(float(s) for s in self.scales)
        if not scales or any(not math.isfinite(s) or s <= 0 for s in scales):
            raise ValueError(f"test_time.scales must be a non-empty list of positive numbers, got {list(self.scales)}")
        object.__setattr__(self, "scales", scales)
        if not isinstance(self.flip, bool):
            raise TypeError(f"test_time.flip must be true or false, got {self.flip!r}")
        if int(self.window_batch) < 1:
            raise ValueError(f"test_time.window_batch must be >= 1, got {self.window_batch}")
        if self.window is not None and self.stride is not None and any(
            s > w for s, w in zip(self.stride, self.window)
        ):
            raise ValueError(f"test_time.stride {list(self.stride)} is larger than the window {list(self.window)}: "
                             "pixels between windows would get no prediction")

    @classmethod
    def from_any(cls, value: TestTimeConfig | Mapping[str, Any] | None) -> TestTimeConfig:
        """A config from a mapping (e.g. the ``test_time`` config node), an instance, or None (= whole image)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"test_time must be a mapping or TestTimeConfig, got {type(value).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - fields)
        if unknown:
            raise ValueError(f"unknown test_time keys {unknown}; valid keys: {sorted(fields)}")
        items = dict(value)
        if items.get("scales") is not None:
            items["scales"] = tuple(items["scales"])
        return cls(**{k: v for k, v in items.items() if v is not None or k in ("window", "stride")})

    @property
    def is_plain(self) -> bool:
        """Whole-image inference without augmentation: the model's own forward."""
        return self.mode == "whole" and self.scales == (1.0,) and not self.flip

    def with_defaults(self, crop_size: Sequence[int] | None) -> TestTimeConfig:
        """``window`` (None → ``crop_size``, the dataset's training crop) and ``stride`` (None → 2/3 window) set."""
        if self.mode != "slide":
            return self
        window = self.window or _pair(crop_size, "window (from dataset.train_mapper.crop_size)")
        if window is None:
            raise ValueError("test_time.mode=slide needs test_time.window=[H,W] (the dataset config has no "
                             "train_mapper.crop_size to default to)")
        stride = self.stride or (max(1, 2 * window[0] // 3), max(1, 2 * window[1] // 3))
        return dataclasses.replace(self, window=window, stride=stride)

    def summary(self) -> dict[str, Any]:
        """Plain dict for JSON files (metrics, prediction manifests)."""
        out = dataclasses.asdict(self)
        out["window"] = list(self.window) if self.window else None
        out["stride"] = list(self.stride) if self.stride else None
        out["scales"] = list(self.scales)
        return out

    def describe(self) -> str:
        """One line for logs."""
        text = "whole image" if self.mode == "whole" else (
            f"sliding window {self.window[0]}x{self.window[1]} stride {self.stride[0]}x{self.stride[1]}"
            if self.window and self.stride else "sliding window")
        if self.scales != (1.0,) or self.flip:
            text += f", TTA scales {list(self.scales)}" + (" + flip" if self.flip else "")
        return text


def window_grid(size: Sequence[int], window: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """Windows (y0, x0, y1, x1) covering an image of ``size`` = (H, W) pixels.

    Starts every ``stride`` pixels; the last start of each axis is moved back to ``H - window`` so that the last
    window ends at the border; a window larger than the image shrinks to it. Every pixel is covered.
    """
    axes = []
    for length, win, step in zip(size, window, stride):
        win = min(win, length)
        count = max(-(-(length - win) // step), 0) + 1
        axes.append([(min(i * step, length - win), min(i * step, length - win) + win) for i in range(count)])
    return [(y0, x0, y1, x1) for (y0, y1) in axes[0] for (x0, x1) in axes[1]]


def sliding_window_semantic(semantic_fn: SemanticFn, image: Tensor, *, window: Sequence[int],
                            stride: Sequence[int], window_batch: int = 1) -> Tensor:
    """Semantic scores of ``image`` (3, H, W) averaged over overlapping windows: (K, H, W) float32.

    Args:
        semantic_fn: images (3, h, w) -> scores (K, h, w) (:func:`semantic_fn_of`).
        window, stride: (h, w) in pixels; see :func:`window_grid`.
        window_batch: windows per ``semantic_fn`` call.
    """
    height, width = image.shape[-2:]
    boxes = window_grid((height, width), window, stride)
    total: Tensor | None = None
    count = torch.zeros((1, height, width), dtype=torch.float32, device=image.device)
    for start in range(0, len(boxes), window_batch):
        chunk = boxes[start:start + window_batch]
        scores = semantic_fn([image[:, y0:y1, x0:x1] for (y0, x0, y1, x1) in chunk])
        for (y0, x0, y1, x1), score in zip(chunk, scores):
            if tuple(score.shape[-2:]) != (y1 - y0, x1 - x0):
                raise ValueError(f"semantic_fn returned scores of size {tuple(score.shape[-2:])} for a "
                                 f"{y1 - y0}x{x1 - x0} window; it must return them at the window's size")
            if total is None:
                total = torch.zeros((score.shape[0], height, width), dtype=torch.float32, device=image.device)
            total[:, y0:y1, x0:x1] += score.float()
            count[:, y0:y1, x0:x1] += 1
    assert total is not None  # window_grid returns at least one window
    return total / count


def _resize(maps: Tensor, size: Sequence[int], *, antialias: bool = False) -> Tensor:
    """Bilinear resize of (C, h, w) to ``size`` (no-op when equal)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[None].float(), size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=antialias)[0]


def augmented_semantic(semantic_fn: SemanticFn, image: Tensor, output_size: Sequence[int],
                       config: TestTimeConfig) -> Tensor:
    """Semantic scores (K, H_out, W_out) of ``image`` (3, h, w) under ``config`` (sliding and/or TTA).

    For each scale s the image is resized to round(s*h) x round(s*w) (bilinear, antialiased), for each flip
    mirrored; scores are mirrored back, resized to ``output_size`` and averaged over all passes.
    """
    height, width = image.shape[-2:]
    total: Tensor | None = None
    passes = 0
    for scale in config.scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = image if size == (height, width) else _resize(image.float(), size, antialias=True)
        for flipped in (False, True) if config.flip else (False,):
            x = scaled.flip(-1) if flipped else scaled
            if config.mode == "slide":
                scores = sliding_window_semantic(semantic_fn, x, window=config.window, stride=config.stride,
                                                 window_batch=config.window_batch)
            else:
                scores = semantic_fn([x])[0].float()
            if flipped:
                scores = scores.flip(-1)
            scores = _resize(scores, output_size)
            total = scores if total is None else total + scores
            passes += 1
    assert total is not None
    return total / passes


def semantic_fn_of(model: nn.Module) -> SemanticFn:
    """The semantic-score function of ``model``: its ``semantic_scores`` method when it has one (MaskFormer), else
    the ``sem_seg`` output of its detectron2 forward on ``{"image", "height", "width"}`` inputs."""
    method = getattr(model, "semantic_scores", None)
    if callable(method):
        return method

    def via_forward(images: Sequence[Tensor]) -> list[Tensor]:
        outputs = model([{"image": im, "height": im.shape[-2], "width": im.shape[-1]} for im in images])
        missing = [i for i, out in enumerate(outputs) if "sem_seg" not in out]
        if missing:
            raise ValueError(f"{type(model).__name__} returned no 'sem_seg' output; sliding-window and TTA "
                             "inference need a model that predicts semantic segmentation")
        return [out["sem_seg"] for out in outputs]

    return via_forward


def _predicts_semantic(model: nn.Module) -> bool:
    return bool(getattr(model, "semantic_on", True))


def _needs_whole_pass(model: nn.Module) -> bool:
    """Whether ``model`` predicts instance or panoptic outputs (taken from one plain whole-image pass)."""
    return bool(getattr(model, "instance_on", False) or getattr(model, "panoptic_on", False))


def apply_test_time(model: nn.Module, batched_inputs: list[dict], config: TestTimeConfig) -> list[dict]:
    """detectron2 outputs of ``model`` (eval mode) for ``batched_inputs`` under ``config``.

    ``batched_inputs``: dicts with ``image`` (3, h, w) RGB and optional ``height``/``width`` (output size). Plain
    configs call the model's forward; otherwise ``sem_seg`` comes from :func:`augmented_semantic` and the other
    outputs (instances, panoptic) from one plain pass when the model predicts them.
    """
    if config.is_plain:
        return model(batched_inputs)
    if config.mode == "slide" and (config.window is None or config.stride is None):
        raise ValueError("test_time.mode=slide needs window and stride; call TestTimeConfig.with_defaults first")
    if not _predicts_semantic(model):
        raise ValueError(f"test_time {config.describe()!r} slides/augments semantic segmentation, but this "
                         f"{type(model).__name__} has semantic_on=false; use test_time=whole")
    outputs = model(batched_inputs) if _needs_whole_pass(model) else [{} for _ in batched_inputs]
    semantic_fn = semantic_fn_of(model)
    for out, inp in zip(outputs, batched_inputs):
        image = inp["image"]
        size = (int(inp.get("height", image.shape[-2])), int(inp.get("width", image.shape[-1])))
        out["sem_seg"] = augmented_semantic(semantic_fn, image.to(_device_of(model)), size, config)
    return outputs


def _device_of(model: nn.Module) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(iter(model.parameters())).device


class TestTimeModel(nn.Module):
    """``model`` under a test-time config, with the detectron2 eval interface (``list[dict]`` → ``list[dict]``).

    Args:
        model: a detectron2-convention model in eval mode (MaskFormer or any model with a ``sem_seg`` output).
        config: the test-time config (mapping, :class:`TestTimeConfig` or None = whole image).
        crop_size: default window for ``slide`` (the dataset's training crop size).
    """

    __test__ = False

    def __init__(self, model: nn.Module, config: TestTimeConfig | Mapping[str, Any] | None,
                 crop_size: Sequence[int] | None = None) -> None:
        super().__init__()
        self.model = model
        self.config = TestTimeConfig.from_any(config).with_defaults(crop_size)

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        return apply_test_time(self.model, batched_inputs, self.config)


def crop_size_of(dataset_cfg: Mapping[str, Any] | None) -> list[int] | None:
    """The dataset config's training crop size ``train_mapper.crop_size`` as [H, W], if it has one."""
    mapper = (dataset_cfg or {}).get("train_mapper") or {}
    crop = mapper.get("crop_size") if isinstance(mapper, Mapping) else None
    if crop is None:
        return None
    return [int(c) for c in (crop if isinstance(crop, Iterable) and not isinstance(crop, str) else [crop, crop])]
