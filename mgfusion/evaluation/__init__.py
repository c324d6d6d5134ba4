"""Evaluation: detectron2 evaluators with numpy-2 workarounds, chosen per dataset and task.

The evaluators are chosen by the dataset metadata's ``evaluator_type`` (registry :data:`EVALUATORS`; add one with
:func:`register_evaluator_type`). This package registers no datasets: call :func:`mgfusion.data.register_all`.

* :func:`build_evaluator` (``dataset_name, output_dir, tasks``) -> ``DatasetEvaluators`` of COCO mask AP
  (``segm``: AP, AP50, AP75, APs/m/l, per-class), semantic mIoU (``sem_seg``), COCO PQ/SQ/RQ with things/stuff
  (``panoptic_seg``), Cityscapes instance AP and semantic IoU (official scripts, per class).
* :func:`grouped_class_rows` / :func:`grouped_class_markdown`: per-class AP grouped as in the paper's Table 4.
"""

from .build import (
    EVALUATORS,
    TASKS,
    EvaluatorType,
    build_evaluator,
    default_tasks,
    register_evaluator_type,
)
from .cityscapes import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator
from .compat import cityscapes_numpy2_patches, load_label_png
from .instance import InstanceSegEvaluator
from .oracle import ground_truth_outputs
from .tables import (
    CLASS_GROUPS,
    grouped_class_markdown,
    grouped_class_rows,
    matching_groupings,
)

__all__ = [
    "CLASS_GROUPS",
    "EVALUATORS",
    "TASKS",
    "CityscapesInstanceEvaluator",
    "CityscapesSemSegEvaluator",
    "EvaluatorType",
    "InstanceSegEvaluator",
    "build_evaluator",
    "cityscapes_numpy2_patches",
    "default_tasks",
    "ground_truth_outputs",
    "grouped_class_markdown",
    "grouped_class_rows",
    "load_label_png",
    "matching_groupings",
    "register_evaluator_type",
]
