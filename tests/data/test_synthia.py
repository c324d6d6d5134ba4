"""SYNTHIA-RAND-CITYSCAPES: the official class table, 16-bit label reading, instances, registration."""

import json

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import mgfusion.data as mdata
from mgfusion.data.labelmaps import SYNTHIA_TO_TRAIN_ID, lookup_table, read_label_png
from mgfusion.data.synthia import prepare_synthia, read_synthia_label
from mgfusion.data.testing import write_tiny_synthia

from .street_helpers import ground_truth_scores


def test_synthia_class_ids_map_to_the_official_train_ids():
    table = lookup_table(SYNTHIA_TO_TRAIN_ID)
    # SYNTHIA-RAND-CITYSCAPES README / DAFormer: 3 road, 4 sidewalk, 2 building, 21 wall, 1 sky, 10 pedestrian,
    # 17 rider, 8 car, 19 bus, 12 motorcycle, 11 bicycle, 15 traffic light, 9 traffic sign
    pairs = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11, 17: 12, 8: 13, 19: 15, 12: 17,
             11: 18}  # fmt: skip
    assert {k: int(table[k]) for k in pairs} == pairs
    assert (table[[0, 13, 14, 22]] == 255).all()  # void, parking-slot, road-work, lanemarking


def test_preparation_writes_train_ids_and_one_instance_per_class_and_instance_id(tmp_path):
    synthia = write_tiny_synthia(tmp_path, prepare=False)
    prepare_synthia(str(synthia))
    table = lookup_table(SYNTHIA_TO_TRAIN_ID)
    content = json.loads((synthia / "synthia_instance_train.json").read_text())
    assert [c["id"] for c in content["categories"]] == [24, 25, 26, 27, 28, 31, 32, 33]
    to_label = {10: 24, 17: 25, 8: 26, 11: 33}
    for image in content["images"]:
        classes, instances = read_synthia_label(str(synthia / "GT" / "LABELS" / image["file_name"]))
        train = read_label_png(str(synthia / "GT" / "LABELS" / image["file_name"]).replace(".png", "_labelTrainIds.png"))
        assert (train == table[classes]).all()
        anns = [a for a in content["annotations"] if a["image_id"] == image["id"]]
        things = np.isin(classes, list(to_label))
        expected = {(int(c), int(i)) for c, i in zip(classes[things], instances[things])}
        assert len(anns) == len(expected)
        for ann in anns:
            mask = mask_util.decode(ann["segmentation"]).astype(bool)
            (c, i), = {(int(c), int(i)) for c, i in zip(classes[mask], instances[mask])}
            assert mask.sum() == ((classes == c) & (instances == i)).sum()
            assert ann["category_id"] == to_label[c] and ann["iscrowd"] == int(i == 0)
    assert sum(a["iscrowd"] for a in content["annotations"]) == 1  # the crowd instance of image 0


def test_labels_that_are_not_16_bit_rgb_are_refused(tmp_path):
    path = tmp_path / "0000000.png"
    cv2.imwrite(str(path), np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="not a 3-channel SYNTHIA label PNG"):
        read_synthia_label(str(path))


def test_registration_in_cityscapes_classes_and_ground_truth_scores_perfectly(tmp_path):
    write_tiny_synthia(tmp_path)
    mdata.register_all(tmp_path)
    dicts = DatasetCatalog.get("mgf_synthia_instance_seg_train")
    assert {a["category_id"] for d in dicts for a in d["annotations"]} <= set(range(8))
    meta = MetadataCatalog.get("mgf_synthia_instance_seg_train")
    assert meta.thing_classes == MetadataCatalog.get("mgf_cityscapes_fine_instance_seg_val").thing_classes
    assert len(DatasetCatalog.get("mgf_synthia_sem_seg_train")) == 2
    assert ground_truth_scores("mgf_synthia_instance_seg_train", ["instance"], str(tmp_path / "i"))["segm"]["AP"] == 100
    sem = ground_truth_scores("mgf_synthia_sem_seg_train", ["semantic"], str(tmp_path / "s"))
    assert sem["sem_seg"]["mIoU"] == pytest.approx(100.0)
