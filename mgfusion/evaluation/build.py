"""``build_evaluator``: the detectron2 evaluators a dataset's ``evaluator_type`` and the requested tasks need."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOPanopticEvaluator, DatasetEvaluator, DatasetEvaluators, SemSegEvaluator

import mgfusion.data  # noqa: F401  (registers the dataset names this module evaluates)

from .cityscapes import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator
from .compat import load_label_png
from .instance import InstanceSegEvaluator

__all__ = ["TASKS", "EVALUATORS", "DEFAULT_TASKS", "build_evaluator"]

TASKS = ("instance", "semantic", "panoptic")

EvaluatorFactory = Callable[[str, "str | None", bool, list], DatasetEvaluator]


def _instance(name: str, output_dir: str | None, distributed: bool, dicts: list) -> DatasetEvaluator:
    json_file = MetadataCatalog.get(name).get("json_file")
    if json_file is None or not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"Instance evaluation of '{name}' needs its COCO instance json (metadata json_file = {json_file!r}), "
            f"which does not exist. See datasets/README.md for how to create it."
        )
    return InstanceSegEvaluator(name, output_dir, distributed=distributed)


def _semantic(name: str, output_dir: str | None, distributed: bool, dicts: list) -> DatasetEvaluator:
    if "sem_seg_file_name" not in dicts[0]:
        raise ValueError(
            f"Semantic evaluation of '{name}' needs 'sem_seg_file_name' in its dataset dicts; this dataset has none "
            f"(for COCO panoptic use coco_2017_val_panoptic_with_sem_seg)."
        )
    return SemSegEvaluator(name, distributed=distributed, output_dir=output_dir, sem_seg_loading_fn=load_label_png)


def _panoptic(name: str, output_dir: str | None, distributed: bool, dicts: list) -> DatasetEvaluator:
    return COCOPanopticEvaluator(name, output_dir)


def _cityscapes_instance(name: str, output_dir: str | None, distributed: bool, dicts: list) -> DatasetEvaluator:
    return CityscapesInstanceEvaluator(name)


def _cityscapes_semantic(name: str, output_dir: str | None, distributed: bool, dicts: list) -> DatasetEvaluator:
    return CityscapesSemSegEvaluator(name)


# evaluator_type -> task -> factory
EVALUATORS: dict[str, dict[str, EvaluatorFactory]] = {
    "coco": {"instance": _instance},
    "sem_seg": {"semantic": _semantic},
    "coco_panoptic_seg": {"panoptic": _panoptic, "instance": _instance, "semantic": _semantic},
    "cityscapes_instance": {"instance": _cityscapes_instance},
    "cityscapes_sem_seg": {"semantic": _cityscapes_semantic},
    "cityscapes_panoptic_seg": {
        "panoptic": _panoptic,
        "instance": _cityscapes_instance,
        "semantic": _cityscapes_semantic,
    },
}

DEFAULT_TASKS: dict[str, tuple[str, ...]] = {
    "coco": ("instance",),
    "sem_seg": ("semantic",),
    "coco_panoptic_seg": ("panoptic",),
    "cityscapes_instance": ("instance",),
    "cityscapes_sem_seg": ("semantic",),
    "cityscapes_panoptic_seg": ("panoptic",),
}


def build_evaluator(
    dataset_name: str,
    output_dir: str | None = None,
    tasks: Sequence[str] | None = None,
    *,
    distributed: bool = True,
) -> DatasetEvaluators:
    """Evaluators for ``dataset_name``, one per task, combined in a ``DatasetEvaluators``.

    Args:
        dataset_name: a registered dataset whose metadata has ``evaluator_type`` (a key of :data:`EVALUATORS`).
        output_dir: where evaluators may write predictions/results (``None``: nowhere).
        tasks: subset of ``instance``/``semantic``/``panoptic`` the evaluator type supports (default: its main
            task, :data:`DEFAULT_TASKS`). Result keys: ``segm`` (instance AP), ``sem_seg`` (mIoU, ...),
            ``panoptic_seg`` (PQ, SQ, RQ, ``*_th``, ``*_st``).
        distributed: gather predictions from all ranks (detectron2 semantics).
    """
    dicts = DatasetCatalog.get(dataset_name)  # raises the named missing-folder error; generates synthetic data
    if not dicts:
        raise ValueError(f"Dataset '{dataset_name}' is empty; nothing to evaluate.")
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if evaluator_type not in EVALUATORS:
        raise ValueError(
            f"Dataset '{dataset_name}' has evaluator_type={evaluator_type!r}; supported: {sorted(EVALUATORS)}"
        )
    supported = EVALUATORS[evaluator_type]
    tasks = DEFAULT_TASKS[evaluator_type] if tasks is None else tuple(tasks)
    unknown = [t for t in tasks if t not in supported]
    if unknown or not tasks:
        raise ValueError(
            f"Tasks {list(tasks)} are not all supported for '{dataset_name}' (evaluator_type {evaluator_type!r}); "
            f"valid tasks: {sorted(supported)}"
        )
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
    return DatasetEvaluators([supported[t](dataset_name, output_dir, distributed, dicts) for t in dict.fromkeys(tasks)])
