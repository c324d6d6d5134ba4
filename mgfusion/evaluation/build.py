"""``build_evaluator``: the detectron2 evaluators a dataset's ``evaluator_type`` and the requested tasks need."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import (
    COCOPanopticEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

from mgfusion.utils.registry import Registry

from .cityscapes import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator
from .compat import load_label_png
from .instance import InstanceSegEvaluator

__all__ = ["EVALUATORS", "TASKS", "EvaluatorType", "build_evaluator", "default_tasks", "register_evaluator_type"]

TASKS = ("instance", "semantic", "panoptic")

#: ``factory(dataset_name, output_dir, distributed, dataset_dicts) -> DatasetEvaluator``
EvaluatorFactory = Callable[[str, "str | None", bool, list], DatasetEvaluator]


@dataclass(frozen=True)
class EvaluatorType:
    """The evaluators of one metadata ``evaluator_type``: a factory per supported task, and the default tasks."""

    factories: Mapping[str, EvaluatorFactory]
    default_tasks: tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = [t for t in (*self.factories, *self.default_tasks) if t not in TASKS]
        missing = [t for t in self.default_tasks if t not in self.factories]
        if unknown or missing or not self.default_tasks:
            raise ValueError(f"bad evaluator type: unknown tasks {unknown}, default tasks without factory {missing}")


#: metadata ``evaluator_type`` -> :class:`EvaluatorType`
EVALUATORS: Registry[EvaluatorType] = Registry("evaluator type")


def register_evaluator_type(
    name: str, factories: Mapping[str, EvaluatorFactory], default_tasks: Sequence[str]
) -> EvaluatorType:
    """Register the evaluators of datasets whose metadata has ``evaluator_type=name`` (duplicates are errors)."""
    return EVALUATORS.register(name, EvaluatorType(dict(factories), tuple(default_tasks)))


def default_tasks(evaluator_type: str) -> tuple[str, ...]:
    """The tasks evaluated when none are requested (the main task of the evaluator type)."""
    return EVALUATORS.get(evaluator_type).default_tasks


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
            f"(for COCO panoptic use mgf_coco_2017_val_panoptic_with_sem_seg)."
        )
    return SemSegEvaluator(name, distributed=distributed, output_dir=output_dir, sem_seg_loading_fn=load_label_png)


def _panoptic(name: str, output_dir: str | None, distributed: bool, dicts: list) -> DatasetEvaluator:
    return COCOPanopticEvaluator(name, output_dir)


def _cityscapes_instance(name: str, output_dir: str | None, distributed: bool, dicts: list) -> DatasetEvaluator:
    return CityscapesInstanceEvaluator(name)


def _cityscapes_semantic(name: str, output_dir: str | None, distributed: bool, dicts: list) -> DatasetEvaluator:
    return CityscapesSemSegEvaluator(name)


register_evaluator_type("coco", {"instance": _instance}, ["instance"])
register_evaluator_type("sem_seg", {"semantic": _semantic}, ["semantic"])
register_evaluator_type(
    "coco_panoptic_seg", {"panoptic": _panoptic, "instance": _instance, "semantic": _semantic}, ["panoptic"]
)
register_evaluator_type("cityscapes_instance", {"instance": _cityscapes_instance}, ["instance"])
register_evaluator_type("cityscapes_sem_seg", {"semantic": _cityscapes_semantic}, ["semantic"])
register_evaluator_type(
    "cityscapes_panoptic_seg",
    {"panoptic": _panoptic, "instance": _cityscapes_instance, "semantic": _cityscapes_semantic},
    ["panoptic"],
)


def build_evaluator(
    dataset_name: str,
    output_dir: str | None = None,
    tasks: Sequence[str] | None = None,
    *,
    distributed: bool = True,
) -> DatasetEvaluators:
    """Evaluators for ``dataset_name``, one per task, combined in a ``DatasetEvaluators``.

    Args:
        dataset_name: a registered dataset whose metadata has ``evaluator_type`` (a name in :data:`EVALUATORS`).
        output_dir: where evaluators may write predictions/results (``None``: nowhere).
        tasks: subset of ``instance``/``semantic``/``panoptic`` the evaluator type supports (default: its main
            task, :func:`default_tasks`). Result keys: ``segm`` (instance AP), ``sem_seg`` (mIoU, ...),
            ``panoptic_seg`` (PQ, SQ, RQ, ``*_th``, ``*_st``).
        distributed: gather predictions from all ranks (detectron2 semantics).
    """
    dicts = DatasetCatalog.get(dataset_name)  # raises the named missing-folder error; generates synthetic data
    if not dicts:
        raise ValueError(f"Dataset '{dataset_name}' is empty; nothing to evaluate.")
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if evaluator_type not in EVALUATORS:
        raise ValueError(
            f"Dataset '{dataset_name}' has evaluator_type={evaluator_type!r} in its metadata; supported: "
            f"{EVALUATORS.names()} (register others with mgfusion.evaluation.register_evaluator_type)"
        )
    spec = EVALUATORS.get(evaluator_type)
    supported = spec.factories
    tasks = spec.default_tasks if tasks is None else tuple(tasks)
    unknown = [t for t in tasks if t not in supported]
    if unknown or not tasks:
        raise ValueError(
            f"Tasks {list(tasks)} are not all supported for '{dataset_name}' (evaluator_type {evaluator_type!r}); "
            f"valid tasks: {sorted(supported)}"
        )
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
    return DatasetEvaluators([supported[t](dataset_name, output_dir, distributed, dicts) for t in dict.fromkeys(tasks)])
