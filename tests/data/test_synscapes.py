"""Synscapes: RGB-encoded instance ids with classes from meta/*.json, train ids, registration."""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog

import mgfusion.data as mdata
from mgfusion.data.labelmaps import (
    CITYSCAPES_LABEL_TO_TRAIN_ID,
    lookup_table,
    read_label_png,
    rgb_to_id,
)
from mgfusion.data.synscapes import prepare_synscapes
from mgfusion.data.testing import write_tiny_synscapes

from .street_helpers import ground_truth_scores


def test_instances_come_from_the_rgb_ids_and_the_meta_classes(tmp_path):
    synscapes = write_tiny_synscapes(tmp_path, prepare=False)
    meta = json.loads((synscapes / "meta" / "2.json").read_text())
    dropped = next(iter(meta["instance"]["class"]))
    del meta["instance"]["class"][dropped]  # an instance id without a class: reported, not annotated
    (synscapes / "meta" / "2.json").write_text(json.dumps(meta))
    summary = prepare_synscapes(str(synscapes))
    assert summary["images"] == 2 and summary["unclassified"] == 1
    content = json.loads((synscapes / "synscapes_instance_train.json").read_text())
    for image in content["images"]:
        stem = image["file_name"][: -len(".png")]
        ids = rgb_to_id(read_label_png(str(synscapes / "img" / "instance" / image["file_name"])))
        classes = json.loads((synscapes / "meta" / f"{stem}.json").read_text())["instance"]["class"]
        anns = [a for a in content["annotations"] if a["image_id"] == image["id"]]
        assert len(anns) == len(classes)
        for ann in anns:
            mask = mask_util.decode(ann["segmentation"]).astype(bool)
            (instance,) = set(np.unique(ids[mask]).tolist())
            assert mask.sum() == (ids == instance).sum() and ann["category_id"] == classes[str(instance)]
        labels = read_label_png(str(synscapes / "img" / "class" / image["file_name"]))
        train = read_label_png(str(synscapes / "img" / "class" / f"{stem}_labelTrainIds.png"))
        assert (train == lookup_table(CITYSCAPES_LABEL_TO_TRAIN_ID)[labels]).all()


def test_registration_and_ground_truth_scores_perfectly(tmp_path):
    write_tiny_synscapes(tmp_path)
    mdata.register_all(tmp_path)
    assert [d["image_id"] for d in DatasetCatalog.get("mgf_synscapes_sem_seg_train")] == ["1", "2"]
    inst = ground_truth_scores("mgf_synscapes_instance_seg_train", ["instance"], str(tmp_path / "i"))
    assert inst["segm"]["AP"] == pytest.approx(100.0)
    sem = ground_truth_scores("mgf_synscapes_sem_seg_train", ["semantic"], str(tmp_path / "s"))
    assert sem["sem_seg"]["mIoU"] == pytest.approx(100.0)
