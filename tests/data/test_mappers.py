"""Mappers: output contract, augmentation geometry, masks consistent with labels, crowd/ignore handling."""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from PIL import Image

from mgfusion.data import (
    AugmentationConfig,
    InstanceTrainMapper,
    PanopticTrainMapper,
    SemanticTrainMapper,
    TestMapper,
    register_synthetic,
)
from mgfusion.data.augmentation import ColorJitterTransform, scale_jitter_short_sides
from mgfusion.data.labelmaps import read_label_png

IDENTITY = {"policy": "none", "color_jitter": False, "flip_prob": 0.0}


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)


def check_contract(out, dataset_dict, task):
    image = out["image"]
    assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
    h, w = image.shape[1:]
    assert out["file_name"] == dataset_dict["file_name"]
    with Image.open(dataset_dict["file_name"]) as original:
        assert (out["height"], out["width"]) == (original.height, original.width)
    if "image_id" in dataset_dict:
        assert out["image_id"] == dataset_dict["image_id"]
    instances = out["instances"]
    assert instances.image_size == (h, w)
    assert instances.gt_classes.dtype == torch.int64 and instances.gt_classes.ndim == 1
    assert instances.gt_masks.dtype == torch.bool and instances.gt_masks.shape == (len(instances), h, w)
    assert instances.gt_masks.flatten(1).any(1).all()  # no empty masks
    if task == "instance":
        assert "sem_seg" not in out
        return
    sem = out["sem_seg"]
    assert sem.dtype == torch.int64 and sem.shape == (h, w)
    for cls, mask in zip(instances.gt_classes, instances.gt_masks):
        assert (sem[mask] == cls).all()  # every mask lies inside its class region
        assert not (mask & (sem == 255)).any()
    if task == "semantic":  # one mask per present class, covering the class exactly
        present = sorted(set(sem.unique().tolist()) - {255})
        assert instances.gt_classes.tolist() == present
        for cls, mask in zip(instances.gt_classes, instances.gt_masks):
            assert torch.equal(mask, sem == cls)
    if task == "panoptic":
        assert instances.gt_masks.sum(0).max() <= 1  # segments do not overlap


@pytest.fixture
def synthetic_dicts(tmp_path):
    register_synthetic(tmp_path, image_size=64, num_train=2, num_val=2)
    return {
        "instance": DatasetCatalog.get("mgf_synthetic_train")[0],
        "semantic": DatasetCatalog.get("mgf_synthetic_train_sem_seg")[0],
        "panoptic": DatasetCatalog.get("mgf_synthetic_train_panoptic")[0],
    }


MAPPERS = {"instance": InstanceTrainMapper, "semantic": SemanticTrainMapper, "panoptic": PanopticTrainMapper}


@pytest.mark.parametrize("task", ["instance", "semantic", "panoptic"])
def test_scale_jitter_crop_gives_the_crop_size(synthetic_dicts, task):
    mapper = MAPPERS[task](base_size=64, min_scale=1.0, max_scale=2.0, scale_step=0.5, crop_size=[48, 40])
    out = mapper(synthetic_dicts[task])
    assert out["image"].shape[1:] == (48, 40)
    check_contract(out, synthetic_dicts[task], task)


@pytest.mark.parametrize("task", ["instance", "semantic", "panoptic"])
def test_lsj_gives_a_padded_square(synthetic_dicts, task):
    mapper = MAPPERS[task](policy="lsj", lsj_size=96, min_scale=0.3, max_scale=0.3)
    out = mapper(synthetic_dicts[task])
    assert out["image"].shape[1:] == (96, 96)
    check_contract(out, synthetic_dicts[task], task)
    masks = out["instances"].gt_masks
    assert not masks[:, 40:, :].any() and not masks[:, :, 40:].any()  # 64 * 0.3 * 1.5 < 40: padding is empty
    assert (out["image"][:, 40:, 40:] == 128).all()
    if task != "instance":
        assert (out["sem_seg"][40:, :] == 255).all()


@pytest.mark.parametrize("task", ["instance", "semantic", "panoptic"])
def test_identity_augmentation_reproduces_the_ground_truth(synthetic_dicts, task):
    d = synthetic_dicts[task]
    out = MAPPERS[task](**IDENTITY)(d)
    check_contract(out, d, task)
    semantic = torch.from_numpy(
        read_label_png(d["file_name"].replace("images/train", "semantic_train")).astype(np.int64)
    )
    if task != "instance":
        assert torch.equal(out["sem_seg"], semantic)
    things = (semantic < 4).sum()
    if task == "instance":
        assert out["instances"].gt_masks.sum() == things
    else:
        assert out["instances"].gt_masks.sum() == 64 * 64  # things and stuff cover every pixel


def test_flip_and_colour_jitter(synthetic_dicts):
    d = synthetic_dicts["semantic"]
    base = SemanticTrainMapper(**IDENTITY)(d)
    flipped = SemanticTrainMapper(policy="none", color_jitter=False, flip_prob=1.0)(d)
    assert torch.equal(flipped["image"], base["image"].flip(-1))
    assert torch.equal(flipped["sem_seg"], base["sem_seg"].flip(-1))
    jittered = [SemanticTrainMapper(policy="none", color_jitter=True, flip_prob=0.0)(d) for _ in range(4)]
    assert any(not torch.equal(j["image"], base["image"]) for j in jittered)
    assert all(torch.equal(j["sem_seg"], base["sem_seg"]) for j in jittered)
    image = base["image"].permute(1, 2, 0).numpy()
    assert (ColorJitterTransform(0.0, 1.0, 1.0, 0.0, True).apply_image(image) == image).all()
    brighter = ColorJitterTransform(20.0, 1.0, 1.0, 0.0, True).apply_image(image).astype(int)
    assert (brighter >= image).all() and brighter.mean() > image.mean() + 10


def test_cityscapes_instances_exclude_crowd_and_keep_exact_masks(tiny):
    d = DatasetCatalog.get("mgf_cityscapes_fine_instance_seg_val")[0]
    out = InstanceTrainMapper(**IDENTITY)(d)
    check_contract(out, d, "instance")
    non_crowd = [a for a in d["annotations"] if not a["iscrowd"]]
    assert len(out["instances"]) == len(non_crowd) < len(d["annotations"])
    gt_file = d["file_name"].replace("leftImg8bit", "gtFine", 1).replace("_leftImg8bit.png", "_gtFine_instanceIds.png")
    ids = read_label_png(gt_file)
    assert out["instances"].gt_masks.sum() == (ids >= 1000).sum()


def test_cityscapes_panoptic_ignores_void_and_crowd(tiny):
    d = DatasetCatalog.get("mgf_cityscapes_fine_panoptic_val")[0]
    out = PanopticTrainMapper(base_size=96, min_scale=1.0, max_scale=1.0, crop_size=[64, 80])(d)
    check_contract(out, d, "panoptic")
    assert out["image"].shape[1:] == (64, 80)
    identity = PanopticTrainMapper(**IDENTITY)(d)
    assert (identity["sem_seg"][:3] == 255).all()  # the unlabeled band is ignored
    assert any(s["iscrowd"] for s in d["segments_info"])
    assert len(identity["instances"]) == sum(not s["iscrowd"] for s in d["segments_info"])
    covered = identity["instances"].gt_masks.any(0)
    assert not covered[:3].any() and (~covered & (identity["sem_seg"] != 255)).any()  # crowd: class, no mask


def test_coco_polygons_with_lsj(tiny_root, tmp_path):
    from mgfusion.data import register_all
    from mgfusion.data.testing import write_tiny_coco

    write_tiny_coco(tmp_path, polygons=True)
    register_all(tmp_path)
    d = DatasetCatalog.get("mgf_coco_2017_val")[0]
    assert isinstance(d["annotations"][0]["segmentation"], list)
    out = InstanceTrainMapper(policy="lsj", lsj_size=128, min_scale=1.0, max_scale=1.0, color_jitter=False)(d)
    assert out["image"].shape[1:] == (128, 128)
    check_contract(out, d, "instance")
    assert len(out["instances"]) == sum(1 for a in d["annotations"] if not a["iscrowd"])


def test_ade20k_semantic_ignore_label(tiny):
    d = DatasetCatalog.get("mgf_ade20k_sem_seg_val")[0]
    out = SemanticTrainMapper(base_size=64, min_scale=0.5, max_scale=2.0, crop_size=[32, 32])(d)
    check_contract(out, d, "semantic")
    full = SemanticTrainMapper(**IDENTITY)(d)
    assert (full["sem_seg"][:3] == 255).all() and not full["instances"].gt_masks[:, :3].any()


def test_test_mapper_resizes_and_keeps_original_size(synthetic_dicts):
    d = synthetic_dicts["instance"]
    out = TestMapper(min_size=96, max_size=1000)(d)
    assert out["image"].shape == (3, 96, 96) and (out["height"], out["width"]) == (64, 64)
    assert set(out) == {"file_name", "image_id", "height", "width", "image"}
    assert TestMapper()(d)["image"].shape == (3, 64, 64)


def test_errors_name_the_problem(synthetic_dicts, tmp_path):
    with pytest.raises(ValueError, match="unknown augmentation policy .jitter.*lsj"):
        InstanceTrainMapper(policy="jitter")
    with pytest.raises(ValueError, match="crop_size"):
        AugmentationConfig(crop_size=(512,))
    with pytest.raises(ValueError, match="semantic mapper only"):
        PanopticTrainMapper(single_category_max_area=0.5)
    with pytest.raises(KeyError, match="sem_seg_file_name"):
        SemanticTrainMapper()(synthetic_dicts["instance"])
    broken = dict(synthetic_dicts["instance"], file_name=str(tmp_path / "broken.png"))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(OSError, match="broken.png"):
        TestMapper()(broken)


def test_scale_jitter_sizes_match_the_reference():
    assert scale_jitter_short_sides(1024, 0.5, 2.0, 0.1) == [int(x * 0.1 * 1024) for x in range(5, 21)]
    assert scale_jitter_short_sides(512, 0.5, 2.0, 0.1) == [int(x * 0.1 * 512) for x in range(5, 21)]
