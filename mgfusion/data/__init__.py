"""Dataset registration, dataset mappers and the synthetic dataset.

Registration
------------
``register_all(root=None)`` (run once at import with the default root; idempotent, call it again with another
root) registers under ``root`` (default ``$DETECTRON2_DATASETS``, else ``./datasets``), in detectron2's layouts:

* COCO 2017: ``coco_2017_{train,val}``, ``coco_2017_{train,val}_panoptic``,
  ``coco_2017_{train,val}_panoptic_with_sem_seg`` (:mod:`.coco`)
* Cityscapes: ``cityscapes_fine_{instance_seg,sem_seg,panoptic}_{train,val}`` (:mod:`.cityscapes`)
* ADE20K: ``ade20k_{sem_seg,panoptic,instance}_{train,val}`` (:mod:`.ade20k`)
* synthetic: ``synthetic_{train,val}[_sem_seg|_panoptic]`` generated on first load (:mod:`.synthetic`)

Loading a name whose folder is missing raises :class:`DatasetNotFoundError` naming the expected path,
``$DETECTRON2_DATASETS`` and ``datasets/README.md``. Metadata carries ``evaluator_type`` for
:func:`mgfusion.evaluation.build_evaluator`.

Dataset config nodes (``configs/dataset/<name>.yaml``)
------------------------------------------------------
::

    name: cityscapes_instance          # the node's name
    task: instance                     # instance | semantic | panoptic
    train: [cityscapes_fine_instance_seg_train]   # registered detectron2 dataset names
    test: [cityscapes_fine_instance_seg_val]
    num_classes: 8                     # classes the model predicts (contiguous ids 0..num_classes-1)
    ignore_label: 255
    inference: {semantic_on: false, instance_on: true, panoptic_on: false}
    num_queries: 100                   # paper: 100 Cityscapes / ADE20K, 200 COCO
    size_divisibility: 32              # batch padding
    register: {_target_: mgfusion.data.register_all, root: null}
                                       # call instantiate(node.register) before using the names (idempotent)
    train_mapper: {_target_: mgfusion.data.InstanceTrainMapper, ...}   # instantiate -> callable(dict) -> dict
    test_mapper: {_target_: mgfusion.data.TestMapper, min_size: 1024, max_size: 2048}
    evaluator: {_target_: mgfusion.evaluation.build_evaluator, _partial_: true, tasks: [instance]}
                                       # call with dataset_name=..., output_dir=...

Mappers (:mod:`.mappers`): :class:`InstanceTrainMapper`, :class:`SemanticTrainMapper`,
:class:`PanopticTrainMapper`, :class:`TestMapper`; outputs are described there.
"""

from __future__ import annotations

import os

from .ade20k import register_ade20k
from .augmentation import AugmentationConfig, ColorJitter, build_train_augmentations
from .catalog import ENV_VAR, DatasetNotFoundError, datasets_root, register_dataset
from .cityscapes import register_cityscapes
from .coco import register_coco
from .mappers import TRAIN_MAPPERS, InstanceTrainMapper, PanopticTrainMapper, SemanticTrainMapper, TestMapper
from .synthetic import SPLITS, SyntheticConfig, register_synthetic, synthetic_dataset_names

__all__ = [
    "ENV_VAR",
    "AugmentationConfig",
    "ColorJitter",
    "DatasetNotFoundError",
    "InstanceTrainMapper",
    "PanopticTrainMapper",
    "SemanticTrainMapper",
    "SyntheticConfig",
    "TRAIN_MAPPERS",
    "TestMapper",
    "build_train_augmentations",
    "datasets_root",
    "register_ade20k",
    "register_all",
    "register_cityscapes",
    "register_coco",
    "register_dataset",
    "register_synthetic",
]


def register_all(root: str | os.PathLike | None = None) -> list[str]:
    """Register every dataset family under ``root`` (default ``$DETECTRON2_DATASETS``); returns the names.

    Idempotent: a second call replaces the registrations (e.g. with a new root). Nothing is read or generated
    until a dataset is loaded. The synthetic data goes to ``<root>/mgfusion_synthetic`` with default settings;
    call :func:`register_synthetic` for other sizes.
    """
    base = datasets_root(root)
    names = register_coco(base) + register_cityscapes(base) + register_ade20k(base)
    register_synthetic(base / "mgfusion_synthetic")
    for split in SPLITS:
        names += list(synthetic_dataset_names(split).values())
    return names


register_all()
