"""configs/dataset/*.yaml: schema, instantiation, and agreement with the registered datasets."""

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from hydra.utils import instantiate
from omegaconf import OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "dataset"
CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
REQUIRED = {"name", "task", "train", "test", "num_classes", "ignore_label", "inference", "num_queries",
            "size_divisibility", "register", "train_mapper", "test_mapper", "evaluator"}  # fmt: skip
EXPECTED = {
    "coco_instance", "coco_panoptic", "cityscapes_instance", "cityscapes_semantic", "cityscapes_panoptic",
    "ade20k_semantic", "ade20k_instance", "ade20k_panoptic", "synthetic_instance", "synthetic_semantic",
    "synthetic_panoptic",
}  # fmt: skip
FLAG = {"instance": "instance_on", "semantic": "semantic_on", "panoptic": "panoptic_on"}


def load(name):
    return OmegaConf.create({"dataset": OmegaConf.load(CONFIG_DIR / f"{name}.yaml")}).dataset


def test_all_expected_nodes_exist():
    assert EXPECTED <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_node_schema_and_instantiation(name, tmp_path):
    node = load(name)
    assert REQUIRED <= set(node) and node.name == name
    assert node.task in FLAG and node.inference[FLAG[node.task]]
    tasks = list(node.evaluator.tasks)
    assert tasks[0] == node.task and all(node.inference[FLAG[t]] for t in tasks)
    assert node.num_queries == (200 if name.startswith("coco") else 100 if not name.startswith("synthetic") else 16)
    mapper = instantiate(node.train_mapper)
    assert mapper.task == node.task and mapper.ignore_label == node.ignore_label
    assert callable(instantiate(node.test_mapper)) and callable(instantiate(node.evaluator))
    register = OmegaConf.to_container(node.register)
    register["root"] = str(tmp_path)
    instantiate(register)
    for dataset in [*node.train, *node.test]:
        assert dataset in DatasetCatalog.list()
        meta = MetadataCatalog.get(dataset)
        classes = meta.thing_classes if node.task == "instance" else meta.stuff_classes
        assert len(classes) == node.num_classes


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
