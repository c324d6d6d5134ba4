"""configs/dataset/*.yaml: composition from the family and task parts, the paper's protocol, agreement with the
registered datasets' metadata, and instantiation of every node."""

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mgfusion.data import TRAIN_MAPPERS
from mgfusion.data.augmentation import scale_jitter_short_sides
from mgfusion.evaluation import TASKS

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"
CONFIGS = sorted(p.stem for p in (CONFIG_ROOT / "dataset").glob("*.yaml"))
REQUIRED = {"name", "task", "train", "test", "num_classes", "ignore_label", "inference", "num_queries",
            "register", "train_mapper", "test_mapper", "evaluator"}  # fmt: skip
EXPECTED = {
    "coco_instance", "coco_panoptic", "cityscapes_instance", "cityscapes_semantic", "cityscapes_panoptic",
    "ade20k_semantic", "ade20k_instance", "ade20k_panoptic", "synthetic_instance", "synthetic_semantic",
    "synthetic_panoptic",
}  # fmt: skip
FLAG = {"instance": "instance_on", "semantic": "semantic_on", "panoptic": "panoptic_on"}

# The paper's training protocol per family (docs/training.md): augmentation, test resize (short, long side), queries.
PROTOCOL = {
    "coco": {"policy": "lsj", "lsj_size": 1024, "min_scale": 0.1, "max_scale": 2.0, "color_jitter": False,
             "flip_prob": 0.5, "test": (800, 1333), "num_queries": 200},
    "cityscapes": {"policy": "scale_jitter", "base_size": 1024, "min_scale": 0.5, "max_scale": 2.0, "scale_step": 0.1,
                   "max_size": 4096, "crop_size": (512, 1024), "color_jitter": True, "flip_prob": 0.5,
                   "test": (1024, 2048), "num_queries": 100},
    "ade20k": {"policy": "scale_jitter", "base_size": 512, "min_scale": 0.5, "max_scale": 2.0, "scale_step": 0.1,
               "max_size": 2048, "crop_size": (512, 512), "color_jitter": True, "flip_prob": 0.5,
               "test": (512, 2048), "num_queries": 100},
    "synthetic": {"policy": "scale_jitter", "base_size": 128, "min_scale": 0.75, "max_scale": 1.5, "scale_step": 0.25,
                  "crop_size": (128, 128), "color_jitter": True, "flip_prob": 0.5, "test": (0, 0), "num_queries": 16},
    # the authors' KITTI-360 runs (1408x376 frames)
    "kitti360": {"policy": "scale_jitter", "base_size": 376, "min_scale": 1.1, "max_scale": 2.0, "scale_step": 0.1,
                 "max_size": 1504, "crop_size": (384, 672), "color_jitter": True, "flip_prob": 0.5,
                 "test": (384, 752), "num_queries": 100},
}  # fmt: skip
# Configs that train on one dataset and test on others (synthetic to real, domain generalisation): the protocol
# family they train with, their task, and the dataset prefixes of their train and test names.
CROSS_DATASET = {
    "synthia_to_cs_instance": ("cityscapes", "instance", "synthia", ("cityscapes",)),
    "synscapes_to_cs_instance": ("cityscapes", "instance", "synscapes", ("cityscapes",)),
    "urbansyn_to_cs_instance": ("cityscapes", "instance", "urbansyn", ("cityscapes",)),
    "gta5_to_cs_bdd_map": ("cityscapes", "semantic", "gta5", ("cityscapes", "bdd100k", "mapillary")),
    "synthia_to_cs_bdd_map": ("cityscapes", "semantic", "synthia", ("cityscapes", "bdd100k", "mapillary")),
    "cs_to_bdd_map_acdc": ("cityscapes", "semantic", "cityscapes", ("bdd100k", "mapillary", "acdc")),
    "cs_to_acdc": ("cityscapes", "semantic", "cityscapes", ("acdc",)),
}
# the model outputs each task switches on, and the evaluator tasks of each node's task
INFERENCE = {"instance": {"instance_on"}, "semantic": {"semantic_on"},
             "panoptic": {"instance_on", "semantic_on", "panoptic_on"}}  # fmt: skip
EVAL_TASKS = {"instance": ["instance"], "semantic": ["semantic"], "panoptic": ["panoptic", "instance", "semantic"]}


def compose_train(*overrides):
    with initialize_config_dir(config_dir=str(CONFIG_ROOT), version_base=None):
        return compose("train", overrides=list(overrides))


def load(name):
    return compose_train(f"dataset={name}", "output_dir=unused").dataset


def test_all_expected_nodes_exist():
    assert EXPECTED <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_composed_node_follows_the_protocol(name):
    cfg = compose_train(f"dataset={name}", "output_dir=unused")
    node = cfg.dataset
    if name in CROSS_DATASET:
        family, task, source, targets = CROSS_DATASET[name]
    else:
        family, task = name.rsplit("_", 1)
        source, targets = family, (family,)
    assert REQUIRED <= set(node) and node.name == name and node.task == task
    assert "size_divisibility" not in node  # batch padding is the model's (model.size_divisibility)
    assert {k for k, v in node.inference.items() if v} == INFERENCE[task]
    assert list(node.evaluator.tasks) == EVAL_TASKS[task] and set(EVAL_TASKS[task]) <= set(TASKS)
    assert all(n.startswith(f"mgf_{source}") for n in node.train)
    assert all(n.startswith(tuple(f"mgf_{t}" for t in targets)) for n in node.test)
    assert all("train" in n for n in node.train) and all("val" in n for n in node.test)
    # the dataset decides what the model predicts (configs/train.yaml copies it)
    assert (cfg.model.num_classes, cfg.model.num_queries) == (node.num_classes, node.num_queries)
    assert [cfg.model[k] for k in FLAG.values()] == [node.inference[k] for k in FLAG.values()]

    expected = dict(PROTOCOL[family])
    assert node.num_queries == expected.pop("num_queries")
    assert (node.test_mapper.min_size, node.test_mapper.max_size) == expected.pop("test")
    mapper = instantiate(node.train_mapper)
    assert isinstance(mapper, TRAIN_MAPPERS.get(task)) and mapper.ignore_label == node.ignore_label == 255
    for key, value in expected.items():
        assert getattr(mapper.augmentation, key) == value, (key, getattr(mapper.augmentation, key))
    if family in ("cityscapes", "ade20k"):  # short sides 0.5..2.0 x base in steps of 0.1, as the reference
        aug = mapper.augmentation
        sides = scale_jitter_short_sides(aug.base_size, aug.min_scale, aug.max_scale, aug.scale_step)
        assert sides == [int(x * 0.1 * expected["base_size"]) for x in range(5, 21)]


@pytest.mark.parametrize("name", CONFIGS)
def test_node_instantiates_and_matches_the_registered_metadata(name, tmp_path):
    node = load(name)
    register = OmegaConf.to_container(node.register)
    register["root"] = str(tmp_path)
    instantiate(register)
    assert callable(instantiate(node.test_mapper)) and callable(instantiate(node.evaluator))
    for dataset in [*node.train, *node.test]:
        assert dataset in DatasetCatalog.list()
        meta = MetadataCatalog.get(dataset)
        classes = meta.thing_classes if node.task == "instance" else meta.stuff_classes
        assert len(classes) == node.num_classes
        assert meta.ignore_label == node.ignore_label and meta.evaluator_type
        if node.inference.instance_on or node.inference.panoptic_on:  # the model needs to know the things
            things = meta.thing_dataset_id_to_contiguous_id
            assert things and all(0 <= i < node.num_classes for i in things.values())
        if node.task == "panoptic":
            assert meta.label_divisor == 1000
            assert set(meta.stuff_dataset_id_to_contiguous_id.values()) | set(things.values()) == set(
                range(node.num_classes)
            )


@pytest.mark.parametrize("name", ["synthetic_instance", "synthetic_semantic", "synthetic_panoptic"])
def test_synthetic_node_end_to_end(name, tmp_path):
    node = load(name)
    register = OmegaConf.to_container(node.register)
    instantiate({**register, "root": str(tmp_path), "image_size": 64, "num_train": 2, "num_val": 2})
    node.register.image_size = 64  # the augmentation follows the image size
    mapper = instantiate(node.train_mapper)
    record = DatasetCatalog.get(node.train[0])[0]
    np.random.seed(0)  # detectron2's augmentations draw from numpy's global RNG
    # a random crop can miss every instance; among a few draws at least one must keep some
    outs = [mapper(record) for _ in range(8)]
    assert all(48 <= side <= 64 for out in outs for side in out["image"].shape[1:])  # scale 0.75-1.5, crop 64
    kept = [out["instances"].gt_classes for out in outs if len(out["instances"])]
    assert kept, "no augmented sample kept an instance"
    assert all(int(classes.max()) < node.num_classes and int(classes.min()) >= 0 for classes in kept)
    test_input = instantiate(node.test_mapper)(DatasetCatalog.get(node.test[0])[0])
    assert test_input["image"].dtype == torch.uint8
    evaluator = instantiate(node.evaluator)(dataset_name=node.test[0], output_dir=str(tmp_path / "eval"))
    assert len(evaluator._evaluators) == len(node.evaluator.tasks)
