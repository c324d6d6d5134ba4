"""BDD100K semantic segmentation: the released masks (train ids) register as they are and score perfectly."""

import numpy as np
import pytest
from detectron2.data import DatasetCatalog

import mgfusion.data as mdata
from mgfusion.data.labelmaps import read_label_png
from mgfusion.data.testing import write_tiny_bdd100k

from .street_helpers import ground_truth_scores


def test_registration_pairs_each_jpg_with_its_train_id_mask_and_scores_perfectly(tmp_path):
    bdd = write_tiny_bdd100k(tmp_path)
    mdata.register_all(tmp_path)
    for split in ("train", "val"):
        dicts = DatasetCatalog.get(f"mgf_bdd100k_sem_seg_{split}")
        assert len(dicts) == 2
        for d in dicts:
            assert d["file_name"].startswith(str(bdd / "images" / "10k" / split)) and d["file_name"].endswith(".jpg")
            assert d["sem_seg_file_name"] == str(bdd / "labels" / "sem_seg" / "masks" / split / f"{d['image_id']}.png")
            assert set(np.unique(read_label_png(d["sem_seg_file_name"])).tolist()) <= {0, 10, 11, 12, 13, 18, 255}
    results = ground_truth_scores("mgf_bdd100k_sem_seg_val", ["semantic"], str(tmp_path / "eval"))
    assert results["sem_seg"]["mIoU"] == pytest.approx(100.0)


def test_a_mask_missing_for_an_image_is_named(tmp_path):
    bdd = write_tiny_bdd100k(tmp_path, splits=["val"])
    mask = min((bdd / "labels" / "sem_seg" / "masks" / "val").glob("*.png"))
    mask.unlink()
    mdata.register_all(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"1 of 2 label files are missing, e.g. '{mask}'"):
        DatasetCatalog.get("mgf_bdd100k_sem_seg_val")
