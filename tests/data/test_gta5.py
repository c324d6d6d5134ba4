"""GTA5: the Cityscapes label-id table, the train-id preparation (including labels of another size), registration."""

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

import mgfusion.data as mdata
from mgfusion.data.gta5 import prepare_gta5
from mgfusion.data.labelmaps import (
    CITYSCAPES_LABEL_TO_TRAIN_ID,
    lookup_table,
    read_label_png,
)
from mgfusion.data.testing import write_tiny_gta5

from .street_helpers import ground_truth_scores, palette_indices


def test_cityscapes_label_ids_map_to_the_official_train_ids():
    table = lookup_table(CITYSCAPES_LABEL_TO_TRAIN_ID)
    # cityscapesscripts labels.py: road 7 -> 0, building 11 -> 2, sky 23 -> 10, person 24 -> 11, car 26 -> 13,
    # train 31 -> 16, bicycle 33 -> 18
    assert {k: int(table[k]) for k in (7, 11, 23, 24, 26, 31, 33)} == {7: 0, 11: 2, 23: 10, 24: 11, 26: 13, 31: 16,
                                                                      33: 18}  # fmt: skip
    # unlabeled, ego vehicle, ground, parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer
    assert (table[[0, 1, 6, 9, 10, 14, 15, 16, 18, 29, 30]] == 255).all()
    assert sorted(CITYSCAPES_LABEL_TO_TRAIN_ID.values()) == list(range(19))


def test_prepared_labels_are_the_train_ids_of_the_raw_label_ids(tmp_path):
    gta = write_tiny_gta5(tmp_path, prepare=False)
    assert prepare_gta5(str(gta)) == {"written": 2, "resized": []}
    seen = set()
    for raw_file in sorted((gta / "labels").glob("?????.png")):
        raw = palette_indices(raw_file)
        train = read_label_png(str(raw_file).replace(".png", "_labelTrainIds.png"))
        seen |= set(np.unique(raw).tolist())
        for label_id, train_id in ((0, 255), (7, 0), (23, 10), (24, 11), (25, 12), (26, 13), (33, 18)):
            assert (train[raw == label_id] == train_id).all(), label_id
        assert (train == lookup_table(CITYSCAPES_LABEL_TO_TRAIN_ID)[raw]).all()
    assert seen == {0, 7, 23, 24, 25, 26, 33}  # every pair above was exercised


def test_a_label_of_another_size_is_resized_to_its_image_and_reported(tmp_path):
    gta = write_tiny_gta5(tmp_path, prepare=False)
    label = gta / "labels" / "00002.png"
    with Image.open(label) as image:
        bigger = image.resize((image.width * 2, image.height * 2), Image.NEAREST)
    bigger.save(label)
    assert prepare_gta5(str(gta)) == {"written": 2, "resized": ["00002"]}
    with Image.open(gta / "images" / "00002.png") as image:
        assert read_label_png(str(gta / "labels" / "00002_labelTrainIds.png")).shape == (image.height, image.width)


def test_registration_reads_the_train_ids_and_ground_truth_scores_perfectly(tmp_path):
    write_tiny_gta5(tmp_path, prepare=False)
    mdata.register_all(tmp_path)
    with pytest.raises(FileNotFoundError, match="prepare_gta5.py"):  # raw tree: the train ids are missing
        DatasetCatalog.get("mgf_gta5_sem_seg_train")
    write_tiny_gta5(tmp_path)
    dicts = DatasetCatalog.get("mgf_gta5_sem_seg_train")
    assert [d["image_id"] for d in dicts] == ["00001", "00002"]
    assert all(d["sem_seg_file_name"].endswith("_labelTrainIds.png") for d in dicts)
    meta = MetadataCatalog.get("mgf_gta5_sem_seg_train")
    assert meta.stuff_classes == MetadataCatalog.get("mgf_cityscapes_fine_sem_seg_val").stuff_classes
    assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
    results = ground_truth_scores("mgf_gta5_sem_seg_train", ["semantic"], str(tmp_path / "eval"))
    assert results["sem_seg"]["mIoU"] == pytest.approx(100.0)
