"""KITTI-360: official split files, the instance encoding (label * 1000 + k, crowd below 1000), registration."""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import mgfusion.data as mdata
from mgfusion.data.kitti360 import (
    KITTI360_SPLIT_FILES,
    prepare_kitti360,
    read_split_file,
)
from mgfusion.data.labelmaps import read_label_png
from mgfusion.data.testing import write_tiny_kitti360

from .street_helpers import ground_truth_scores


def test_split_files_give_the_instance_label_next_to_the_semantic_one(tmp_path):
    kitti = write_tiny_kitti360(tmp_path, prepare=False)
    pairs = read_split_file(str(kitti), "val")
    assert pairs[0] == ("data_2d_raw/2013_05_28_drive_0010_sync/image_00/data_rect/0000000250.png",
                        "data_2d_semantics/train/2013_05_28_drive_0010_sync/image_00/instance/0000000250.png")  # fmt: skip
    (kitti / KITTI360_SPLIT_FILES["val"]).write_text("a.png b/labels/0.png\n")
    with pytest.raises(ValueError, match="not in a 'semantic' folder"):
        read_split_file(str(kitti), "val")


def test_instances_follow_the_kitti360_encoding(tmp_path):
    kitti = write_tiny_kitti360(tmp_path, prepare=False)
    prepare_kitti360(str(kitti))
    content = json.loads((kitti / "kitti360_instance_train.json").read_text())
    pairs = dict(read_split_file(str(kitti), "train"))
    for image in content["images"]:
        ids = read_label_png(str(kitti / pairs[image["file_name"]])).astype(np.int64)
        anns = [a for a in content["annotations"] if a["image_id"] == image["id"]]
        for ann in anns:
            mask = mask_util.decode(ann["segmentation"]).astype(bool)
            (value,) = set(np.unique(ids[mask]).tolist())
            assert mask.sum() == (ids == value).sum()
            assert ann["category_id"] == (value // 1000 if value >= 1000 else value)
            assert ann["iscrowd"] == int(value < 1000)
        things = [v for v in np.unique(ids).tolist() if (v // 1000 if v >= 1000 else v) in (24, 25, 26, 33)]
        assert len(anns) == len(things)
    assert sum(a["iscrowd"] for a in content["annotations"]) == 1  # the bare-label-id thing region of image 0


def test_registration_and_ground_truth_scores_perfectly(tmp_path):
    write_tiny_kitti360(tmp_path)
    mdata.register_all(tmp_path)
    dicts = DatasetCatalog.get("mgf_kitti360_instance_seg_val")
    assert len(dicts) == 2 and dicts[0]["file_name"].endswith("image_00/data_rect/0000000250.png")
    assert MetadataCatalog.get("mgf_kitti360_instance_seg_val").evaluator_type == "coco"
    results = ground_truth_scores("mgf_kitti360_instance_seg_val", ["instance"], str(tmp_path / "eval"))
    assert results["segm"]["AP"] == pytest.approx(100.0)
