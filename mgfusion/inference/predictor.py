"""``Predictor``: a trained run folder as a model you can call on your own images.

>>> from mgfusion.inference import Predictor
>>> predictor = Predictor("outputs/synthetic_panoptic/fusion_micro_d3s2/...")      # config.yaml + model_final.pth
>>> pred = predictor.predict("street.jpg")                                          # or an array, or a list of them
>>> pred.semantic_labels()        # (H, W) class ids;  pred.instances;  pred.panoptic_seg, pred.segments_info
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from detectron2.structures import Instances
from hydra.utils import instantiate
from torch import Tensor

from mgfusion.data import TestMapper
from mgfusion.engine.precision import resolve_precision
from mgfusion.utils.device import resolve_device

from .classes import ClassTable
from .loading import file_sha256, load_model, model_config_digest
from .sources import read_image
from .test_time import TestTimeConfig, apply_test_time, crop_size_of

__all__ = ["IGNORE_LABEL", "TASKS", "ImageInput", "Prediction", "Predictor"]

#: tasks in the order "richest first" (the default overlay).
TASKS = ("panoptic", "instance", "semantic")
#: semantic label of pixels without a class (panoptic void when the model has no semantic output).
IGNORE_LABEL = 255

#: a path, an (H, W, 3) uint8 RGB array, or a (3, H, W) uint8 RGB tensor.
ImageInput = str | os.PathLike | np.ndarray | Tensor


@dataclass
class Prediction:
    """The model's outputs for one image, on the CPU, at the image's original size (H, W).

    Attributes:
        source: the image's path, or ``<array i>`` for in-memory images.
        height, width: output size (the input image's size).
        sem_seg: (K, H, W) float32 semantic scores (argmax = class), or None when the model has no semantic output.
        instances: detectron2 ``Instances`` with ``pred_masks`` bool (N, H, W), ``pred_boxes`` (XYXY pixels),
            ``scores`` (N,), ``pred_classes`` (N,) contiguous ids; scores >= the threshold, at most top-k, sorted
            by decreasing score. None when the model has no instance output.
        panoptic_seg: (H, W) int32 segment ids (0 = void), None without panoptic output.
        segments_info: per segment ``{"id", "isthing", "category_id"}`` (contiguous category ids).
    """

    source: str
    height: int
    width: int
    sem_seg: Tensor | None = None
    instances: Instances | None = None
    panoptic_seg: Tensor | None = None
    segments_info: list[dict] | None = field(default=None)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this prediction has, richest first."""
        present = {"panoptic": self.panoptic_seg is not None, "instance": self.instances is not None,
                   "semantic": self.sem_seg is not None}
        return tuple(t for t in TASKS if present[t])

    def semantic_labels(self, ignore_label: int = IGNORE_LABEL) -> np.ndarray:
        """(H, W) int64 class ids: the argmax of ``sem_seg``; without it, the panoptic segments' classes with
        void pixels = ``ignore_label``."""
        if self.sem_seg is not None:
            return self.sem_seg.argmax(dim=0).numpy().astype(np.int64)
        if self.panoptic_seg is None:
            raise ValueError(f"{self.source}: the model predicts neither semantic nor panoptic segmentation")
        lut = np.full(max([s["id"] for s in self.segments_info or []] + [0]) + 1, ignore_label, dtype=np.int64)
        for s in self.segments_info or []:
            lut[s["id"]] = s["category_id"]
        return lut[self.panoptic_seg.numpy()]

    def to_detectron2(self) -> dict[str, Any]:
        """The detectron2 output dict (``sem_seg``, ``instances``, ``panoptic_seg`` = (seg, segments_info))."""
        out: dict[str, Any] = {}
        if self.sem_seg is not None:
            out["sem_seg"] = self.sem_seg
        if self.instances is not None:
            out["instances"] = self.instances
        if self.panoptic_seg is not None:
            out["panoptic_seg"] = (self.panoptic_seg, self.segments_info or [])
        return out


def filter_instances(instances: Instances, *, score_threshold: float, topk: int) -> Instances:
    """Instances with score >= ``score_threshold``, the ``topk`` best, sorted by decreasing score."""
    keep = (instances.scores >= score_threshold).nonzero().flatten()
    order = instances.scores[keep].argsort(descending=True, stable=True)[:topk]
    return instances[keep[order]]


def _model_tasks(model: torch.nn.Module) -> tuple[str, ...]:
    flags = {"panoptic": getattr(model, "panoptic_on", False), "instance": getattr(model, "instance_on", False),
             "semantic": getattr(model, "semantic_on", True)}
    return tuple(t for t in TASKS if flags[t])


class Predictor:
    """Run a trained model on images: reading, test-time resize, batching, test-time mode, AMP, post-filtering.

    Args:
        run_dir: a ``tools/train_net.py`` output folder (its ``config.yaml`` and ``model_final.pth``).
        config: instead of ``run_dir``'s config: a composed training config (path or DictConfig); needs ``weights``.
        checkpoint: another checkpoint of ``run_dir``: a file name (``model_0004999.pth``) or ``last``.
        weights: a checkpoint path (overrides ``checkpoint``).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        amp: ``auto`` (autocast on CUDA: fp16; off on CPU) | True | False.
        test_time: :class:`TestTimeConfig` or its mapping; None = the run's ``test_time`` (else whole image).
        score_threshold: instances scoring below it are dropped.
        topk: at most this many instances per image (after the model's own ``test_topk_per_image``).
        batch_size: images per network call (consecutive images of equal size are batched; images of other sizes
            are not padded together, so batching never changes a prediction beyond float rounding).

    Loading is strict: a checkpoint whose keys or shapes differ from the model raises
    :class:`~mgfusion.inference.loading.StrictLoadError` naming them.
    """

    def __init__(self, run_dir: str | os.PathLike | None = None, *, config: Any = None,
                 checkpoint: str | None = None, weights: str | os.PathLike | None = None, device: str = "auto",
                 amp: str | bool = "auto", test_time: TestTimeConfig | Mapping[str, Any] | None = None,
                 score_threshold: float = 0.5, topk: int = 100, batch_size: int = 1) -> None:
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise ValueError(f"score_threshold must lie in [0, 1], got {score_threshold}")
        if int(topk) < 1 or int(batch_size) < 1:
            raise ValueError(f"topk and batch_size must be >= 1, got {topk} and {batch_size}")
        self.device = resolve_device(device)
        loaded = load_model(run_dir, config=config, checkpoint=checkpoint, weights=weights, device=self.device)
        self.model, self.cfg, self.metadata = loaded.model, loaded.cfg, loaded.metadata
        self.weights, self.iteration = loaded.weights, loaded.iteration
        self.classes = ClassTable.from_metadata(self.metadata, int(self.cfg.dataset.num_classes))
        self.tasks = _model_tasks(self.model)
        chosen = test_time if test_time is not None else self.cfg.get("test_time")
        self.test_time = TestTimeConfig.from_any(chosen).with_defaults(crop_size_of(self.cfg.dataset))
        mapper = instantiate(self.cfg.dataset.test_mapper, _convert_="all")
        if not isinstance(mapper, TestMapper):
            raise TypeError(f"dataset.test_mapper is a {type(mapper).__name__}; Predictor reproduces "
                             "mgfusion.data.TestMapper's resize only")
        self._resize = mapper.resize
        if amp not in ("auto", True, False):
            raise ValueError(f"amp must be auto, true or false, got {amp!r}")
        enabled = self.device.type == "cuda" if amp == "auto" else bool(amp)
        self.precision = resolve_precision(enabled=enabled, dtype="auto", device=self.device)
        self.score_threshold, self.topk, self.batch_size = float(score_threshold), int(topk), int(batch_size)

    # ---- calling ----------------------------------------------------------------------------------------------
    def predict(self, image_or_batch: ImageInput | Sequence[ImageInput]) -> Prediction | list[Prediction]:
        """Predictions for one image (→ :class:`Prediction`) or a list of images (→ list, same order).

        An image is a path, an (H, W, 3) uint8 RGB numpy array or a (3, H, W) uint8 RGB tensor.
        Unreadable paths raise OSError naming the file.
        """
        single = not isinstance(image_or_batch, (list, tuple))
        items = [image_or_batch] if single else list(image_or_batch)
        images, sources = [], []
        for i, item in enumerate(items):
            if isinstance(item, (str, os.PathLike)):
                images.append(read_image(os.fspath(item)))
                sources.append(os.fspath(item))
            else:
                images.append(_as_rgb_array(item, i))
                sources.append(f"<array {i}>")
        predictions = self.predict_arrays(images, sources)
        return predictions[0] if single else predictions

    def predict_arrays(self, images: Sequence[np.ndarray], sources: Sequence[str]) -> list[Prediction]:
        """Predictions for (H, W, 3) uint8 RGB arrays, batched by ``batch_size`` among consecutive equal sizes."""
        records = [self._record(image) for image in images]
        predictions: list[Prediction] = []
        start = 0
        while start < len(records):
            stop = start + 1
            size = records[start]["image"].shape
            while stop < len(records) and stop - start < self.batch_size and records[stop]["image"].shape == size:
                stop += 1
            outputs = self._forward(records[start:stop])
            predictions += [self._to_prediction(out, rec, src)
                            for out, rec, src in zip(outputs, records[start:stop], sources[start:stop])]
            start = stop
        return predictions

    def _record(self, image: np.ndarray) -> dict[str, Any]:
        height, width = image.shape[:2]
        if self._resize is not None:
            image = self._resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    def _forward(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with torch.inference_mode(), self.precision.autocast():
            return apply_test_time(self.model, records, self.test_time)

    def _to_prediction(self, output: dict[str, Any], record: dict[str, Any], source: str) -> Prediction:
        pred = Prediction(source=source, height=int(record["height"]), width=int(record["width"]))
        if "sem_seg" in output:
            pred.sem_seg = output["sem_seg"].float().cpu()
        if "instances" in output:
            pred.instances = filter_instances(output["instances"].to("cpu"), score_threshold=self.score_threshold,
                                              topk=self.topk)
        if "panoptic_seg" in output:
            seg, info = output["panoptic_seg"]
            pred.panoptic_seg, pred.segments_info = seg.cpu(), [dict(s) for s in info]
        return pred

    # ---- identity ---------------------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What determines this predictor's outputs: the weights' SHA-256, a digest of the model config, the
        test-time mode, thresholds and precision (device and batch size excluded: they change only rounding)."""
        return {
            "weights_sha256": file_sha256(self.weights),
            "model_config": model_config_digest(self.cfg),
            "test_time": self.test_time.summary(),
            "score_threshold": self.score_threshold,
            "topk": self.topk,
            "precision": str(self.precision.dtype).replace("torch.", "") if self.precision.enabled else "float32",
        }

    def __repr__(self) -> str:
        return (f"Predictor({type(self.model).__name__}, weights={self.weights}, tasks={list(self.tasks)}, "
                f"device={self.device}, test_time={self.test_time.describe()!r})")


def _as_rgb_array(item: Any, index: int) -> np.ndarray:
    if isinstance(item, Tensor):
        if item.dim() != 3 or item.shape[0] != 3:
            raise ValueError(f"image {index}: a tensor must be (3, H, W) RGB, got shape {tuple(item.shape)}")
        item = item.permute(1, 2, 0).cpu().numpy()
    array = np.asarray(item)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image {index}: expected (H, W, 3) RGB, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"image {index}: expected uint8 RGB values 0-255, got dtype {array.dtype} (convert it "
                         "yourself; the predictor does not guess the value range)")
    return array
