"""Dataset registration, dataset mappers and the synthetic dataset.

Importing this package has no side effects: nothing is registered until :func:`register_all` (or one family's
``register_*``) is called; the engine and the tools call it through the dataset config's ``register`` node.

Registration
------------
``register_all(root=None, *, replace_builtin=False) -> list[str]`` registers every family under ``root`` (default
``$DETECTRON2_DATASETS``, else ``./datasets``) in detectron2's layouts and returns the names. Every name starts
with ``mgf_`` (:data:`PREFIX`) followed by the name detectron2 / Mask2Former use for the same data, so
detectron2's built-in registrations (``coco_2017_val``, ``cityscapes_fine_*``, ``ade20k_sem_seg_*``, ...) and their
metadata stay intact:

* COCO 2017: ``mgf_coco_2017_{train,val}``, ``mgf_coco_2017_{train,val}_panoptic``,
  ``mgf_coco_2017_{train,val}_panoptic_with_sem_seg`` (:mod:`.coco`)
* Cityscapes: ``mgf_cityscapes_fine_{instance_seg,sem_seg,panoptic}_{train,val}`` (:mod:`.cityscapes`)
* ADE20K: ``mgf_ade20k_{sem_seg,panoptic,instance}_{train,val}`` (:mod:`.ade20k`)
* synthetic: ``mgf_synthetic_{train,val}[_sem_seg|_panoptic]``, generated on first load (:mod:`.synthetic`)

Street-scene datasets in Cityscapes' 19 classes / 8 thing classes (shared conventions: :mod:`.street`; semantic
names are evaluated with detectron2's ``SemSegEvaluator``, instance names with COCO mask AP):

* KITTI-360: ``mgf_kitti360_instance_seg_{train,val}`` (:mod:`.kitti360`)
* synthetic-to-real sources: ``mgf_{synthia,synscapes,urbansyn}_{sem_seg,instance_seg}_train``
  (:mod:`.synthia`, :mod:`.synscapes`, :mod:`.urbansyn`)
* domain-generalisation benchmarks: ``mgf_gta5_sem_seg_train`` (:mod:`.gta5`), ``mgf_bdd100k_sem_seg_{train,val}``
  (:mod:`.bdd100k`), ``mgf_mapillary_sem_seg_{train,val}`` (:mod:`.mapillary`), ``mgf_acdc_sem_seg_{train,val}`` and
  ``mgf_acdc_{fog,night,rain,snow}_sem_seg_{train,val}`` (:mod:`.acdc`)

``replace_builtin=True`` also registers each of them under its unprefixed name, replacing detectron2's (or
Mask2Former's) registration of that name. Loading a name whose folder is missing raises
:class:`DatasetNotFoundError` naming the expected path, ``$DETECTRON2_DATASETS`` and ``datasets/README.md``.
Metadata follows detectron2's conventions (``thing_classes``, ``stuff_classes``, colours,
``thing_dataset_id_to_contiguous_id``, ``stuff_dataset_id_to_contiguous_id``, ``ignore_label``, ``label_divisor``
for panoptic data) and carries ``evaluator_type`` for :func:`mgfusion.evaluation.build_evaluator`.

Dataset config nodes (``configs/dataset/<name>.yaml``)
------------------------------------------------------
Each node composes a family base (``configs/dataset/base/<family>.yaml``: registration, augmentation, test
size, ``num_queries``) and a task part (``configs/dataset/task/<task>.yaml``: task, mapper class, inference
switches, evaluator tasks), then sets what is its own::

    name: cityscapes_instance          # the node's name
    task: instance                     # instance | semantic | panoptic
    train: [mgf_cityscapes_fine_instance_seg_train]   # registered detectron2 dataset names
    test: [mgf_cityscapes_fine_instance_seg_val]
    num_classes: 8                     # classes the model predicts (contiguous ids 0..num_classes-1)
    ignore_label: 255
    inference: {semantic_on: false, instance_on: true, panoptic_on: false}
    num_queries: 100                   # paper: 100 Cityscapes / ADE20K, 200 COCO
    filter_empty_annotations: true     # instance: drop training images without a non-crowd instance
    register: {_target_: mgfusion.data.register_all, root: null}
                                       # call instantiate(node.register) before using the names (idempotent)
    train_mapper: {_target_: mgfusion.data.InstanceTrainMapper, ...}   # instantiate -> callable(dict) -> dict
    test_mapper: {_target_: mgfusion.data.TestMapper, min_size: 1024, max_size: 2048}
    evaluator: {_target_: mgfusion.evaluation.build_evaluator, _partial_: true, tasks: [instance]}
                                       # call with dataset_name=..., output_dir=...

The dataset decides what the model predicts: ``num_classes``, ``num_queries`` and the ``inference`` switches live
in this node, and ``configs/train.yaml`` copies them into ``model`` (``model.num_queries: ${dataset.num_queries}``,
...). Batch padding is the model's (``model.size_divisibility``); the dataset node has no such key.

Mappers (:mod:`.mappers`): :class:`InstanceTrainMapper`, :class:`SemanticTrainMapper`,
:class:`PanopticTrainMapper`, :class:`TestMapper` (registry :data:`TRAIN_MAPPERS` by task); outputs are
described there. Tiny datasets in the real layouts for tests: :mod:`mgfusion.data.testing`.
"""

from __future__ import annotations

import os

from .acdc import register_acdc
from .ade20k import register_ade20k
from .augmentation import (
    AUGMENTATION_POLICIES,
    AugmentationConfig,
    ColorJitter,
    build_train_augmentations,
)
from .bdd100k import register_bdd100k
from .catalog import (
    ENV_VAR,
    PREFIX,
    DatasetNotFoundError,
    DatasetRegistrationError,
    alias_dataset,
    datasets_root,
    is_mgfusion_dataset,
    mgf_name,
    register_dataset,
)
from .cityscapes import register_cityscapes
from .coco import register_coco
from .gta5 import register_gta5
from .kitti360 import register_kitti360
from .mapillary import register_mapillary
from .mappers import (
    TRAIN_MAPPERS,
    InstanceTrainMapper,
    PanopticTrainMapper,
    SemanticTrainMapper,
    TestMapper,
)
from .synscapes import register_synscapes
from .synthetic import (
    SPLITS,
    SyntheticConfig,
    register_synthetic,
    synthetic_dataset_names,
)
from .synthia import register_synthia
from .urbansyn import register_urbansyn

__all__ = [
    "AUGMENTATION_POLICIES",
    "ENV_VAR",
    "PREFIX",
    "TRAIN_MAPPERS",
    "AugmentationConfig",
    "ColorJitter",
    "DatasetNotFoundError",
    "DatasetRegistrationError",
    "InstanceTrainMapper",
    "PanopticTrainMapper",
    "SemanticTrainMapper",
    "SyntheticConfig",
    "TestMapper",
    "alias_dataset",
    "build_train_augmentations",
    "datasets_root",
    "is_mgfusion_dataset",
    "mgf_name",
    "register_acdc",
    "register_ade20k",
    "register_all",
    "register_bdd100k",
    "register_cityscapes",
    "register_coco",
    "register_dataset",
    "register_gta5",
    "register_kitti360",
    "register_mapillary",
    "register_synscapes",
    "register_synthetic",
    "register_synthia",
    "register_urbansyn",
]

#: the street-scene families in Cityscapes' classes, registered by :func:`register_all` after COCO/Cityscapes/ADE20K
STREET_FAMILIES = (
    register_kitti360, register_synthia, register_synscapes, register_urbansyn,
    register_gta5, register_bdd100k, register_mapillary, register_acdc,
)  # fmt: skip


def register_all(root: str | os.PathLike | None = None, *, replace_builtin: bool = False) -> list[str]:
    """Register every dataset family under ``root`` (default ``$DETECTRON2_DATASETS``); returns the names.

    Idempotent: a second call replaces mgfusion's registrations (e.g. with a new root). Nothing is read or
    generated until a dataset is loaded. The synthetic data goes to ``<root>/mgfusion_synthetic`` with default
    settings; call :func:`register_synthetic` for other sizes.

    Args:
        root: the datasets root (see :func:`datasets_root`).
        replace_builtin: also register every dataset under its unprefixed name (``mgf_coco_2017_val`` as
            ``coco_2017_val``), replacing detectron2's built-in registration of that name. Off by default:
            detectron2's names and metadata are left as they are.
    Returns:
        The ``mgf_`` names (the unprefixed aliases are not listed).
    """
    base = datasets_root(root)
    names = register_coco(base) + register_cityscapes(base) + register_ade20k(base)
    for register_family in STREET_FAMILIES:
        names += register_family(base)
    register_synthetic(base / "mgfusion_synthetic")
    for split in SPLITS:
        names += list(synthetic_dataset_names(split).values())
    if replace_builtin:
        for name in names:
            alias_dataset(name, name[len(PREFIX) :], replace=True)
    return names
