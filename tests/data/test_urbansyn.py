"""UrbanSyn: ss grey values as train ids (others ignored), instances from the panoptic colours, registration."""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

import mgfusion.data as mdata
from mgfusion.data.labelmaps import read_label_png, rgb_to_id
from mgfusion.data.testing import write_tiny_urbansyn
from mgfusion.data.urbansyn import prepare_urbansyn, read_urbansyn_semantic

from .street_helpers import ground_truth_scores


def test_values_above_18_are_ignored_and_grey_rgb_is_accepted(tmp_path):
    grey = np.array([[0, 18, 19, 255]], dtype=np.uint8)
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(tmp_path / "ss_0001.png")
    assert read_urbansyn_semantic(str(tmp_path / "ss_0001.png")).tolist() == [[0, 18, 255, 255]]
    Image.fromarray(np.array([[[0, 1, 0]]], dtype=np.uint8)).save(tmp_path / "ss_0002.png")
    with pytest.raises(ValueError, match="differing colour channels"):
        read_urbansyn_semantic(str(tmp_path / "ss_0002.png"))


def test_an_instance_is_a_colour_region_with_its_majority_class_and_stuff_regions_are_skipped(tmp_path):
    urbansyn = write_tiny_urbansyn(tmp_path, prepare=False)
    colours = read_label_png(str(urbansyn / "panoptic" / "panoptic_0001.png"))
    ss = read_label_png(str(urbansyn / "ss" / "ss_0001.png"))
    stuff = np.isin(ss, [0, 10]) & (colours.sum(axis=2) == 0)
    assert stuff.any()
    colours[stuff] = (7, 7, 7)  # a road / sky region with a colour of its own: not a thing
    Image.fromarray(colours).save(urbansyn / "panoptic" / "panoptic_0001.png")
    prepare_urbansyn(str(urbansyn))
    content = json.loads((urbansyn / "urbansyn_instance_train.json").read_text())
    train_to_label = {11: 24, 12: 25, 13: 26, 18: 33}
    for image in content["images"]:
        number = image["file_name"][len("rgb_"):-len(".png")]
        ids = rgb_to_id(read_label_png(str(urbansyn / "panoptic" / f"panoptic_{number}.png")))
        raw = read_label_png(str(urbansyn / "ss" / f"ss_{number}.png"))
        train = read_label_png(str(urbansyn / "ss" / f"ss_{number}_labelTrainIds.png"))
        assert (raw == 19).any() and (train == np.where(raw == 19, 255, raw)).all()
        anns = [a for a in content["annotations"] if a["image_id"] == image["id"]]
        # one annotation per coloured region over thing pixels: the coloured stuff region gets none
        assert len(anns) == len(set(np.unique(ids[np.isin(train, list(train_to_label))]).tolist()) - {0})
        assert (number != "0001") or 7 * (1 + 256 + 65536) in set(np.unique(ids).tolist())
        for ann in anns:
            mask = mask_util.decode(ann["segmentation"]).astype(bool)
            (segment,) = set(np.unique(ids[mask]).tolist())
            assert mask.sum() == (ids == segment).sum()
            assert ann["category_id"] == train_to_label[int(np.bincount(train[mask]).argmax())]


def test_registration_and_ground_truth_scores_perfectly(tmp_path):
    write_tiny_urbansyn(tmp_path)
    mdata.register_all(tmp_path)
    inst = ground_truth_scores("mgf_urbansyn_instance_seg_train", ["instance"], str(tmp_path / "i"))
    assert inst["segm"]["AP"] == pytest.approx(100.0)
    sem = ground_truth_scores("mgf_urbansyn_sem_seg_train", ["semantic"], str(tmp_path / "s"))
    assert sem["sem_seg"]["mIoU"] == pytest.approx(100.0)
