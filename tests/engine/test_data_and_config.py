"""Resumable sample stream, dataset registration checks, and config value errors."""

from __future__ import annotations

import itertools

import pytest
import torch
from omegaconf import OmegaConf

from mgfusion.engine import ResumableTrainingSampler, micro_batch_size, register_datasets, resolve_device
from mgfusion.engine import resolve_seed


def test_resumed_sampler_continues_the_uninterrupted_stream():
    full = list(itertools.islice(iter(ResumableTrainingSampler(7, seed=3)), 40))
    resumed = list(itertools.islice(iter(ResumableTrainingSampler(7, seed=3, start_index=17)), 23))
    assert resumed == full[17:]
    assert sorted(full[:7]) == list(range(7)) and sorted(full[7:14]) == list(range(7))  # shuffled passes
    assert full[:7] != list(range(7))
    with pytest.raises(ValueError, match="start_index must be >= 0"):
        ResumableTrainingSampler(7, seed=3, start_index=-1)


def test_unregistered_dataset_names_are_listed():
    node = OmegaConf.create({"name": "nope", "train": ["nope_train"], "test": []})
    with pytest.raises(KeyError, match=r"dataset 'nope': \['nope_train'\] not registered .* registered: \["):
        register_datasets(node)


def test_batch_split_rules():
    assert micro_batch_size(ims_per_batch=12, grad_accum_steps=3, world_size=2) == 4
    with pytest.raises(ValueError, match="ims_per_batch=3 must be divisible by solver.grad_accum_steps x processes"):
        micro_batch_size(ims_per_batch=3, grad_accum_steps=1, world_size=2)
    with pytest.raises(ValueError, match="must be >= 1"):
        micro_batch_size(ims_per_batch=0, grad_accum_steps=1, world_size=1)


def test_device_and_seed_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match=r"device='tpu' is not one of \['auto', 'cpu', 'cuda'\]"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device=cuda but torch sees no CUDA device"):
            resolve_device("cuda")
    assert resolve_seed(5) == 5
    drawn = [resolve_seed(None), resolve_seed(-1), resolve_seed(None)]
    assert all(0 <= s < 2**31 for s in drawn) and len(set(drawn)) == 3  # fresh random seeds


def test_instance_training_drops_images_without_a_non_crowd_instance():
    from hydra import compose, initialize_config_dir

    from mgfusion.engine.data import drop_images_without_instances
    from tests.engine.helpers import ROOT

    dicts = [
        {"file_name": "a.png", "annotations": [{"iscrowd": 0}]},
        {"file_name": "b.png", "annotations": []},
        {"file_name": "c.png", "annotations": [{"iscrowd": 1}]},
        {"file_name": "d.png", "annotations": [{"iscrowd": 1}, {"iscrowd": 0}]},
        {"file_name": "e.png"},
    ]
    kept = drop_images_without_instances(dicts, ["toy_train"])
    assert [d["file_name"] for d in kept] == ["a.png", "d.png"]
    with pytest.raises(ValueError, match="no training image of toy_train .*dataset.filter_empty_annotations=false"):
        drop_images_without_instances(dicts[1:3], ["toy_train"])
    # on by default for instance datasets (the reference's setting), off where dicts carry no instance annotations
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        for dataset, expected in [("cityscapes_instance", True), ("coco_instance", True),
                                  ("cityscapes_semantic", False), ("coco_panoptic", False)]:
            cfg = compose("train", overrides=[f"dataset={dataset}"])
            assert cfg.dataset.filter_empty_annotations is expected, dataset
