"""ACDC: one name per condition and the four conditions pooled, reading the shipped labelTrainIds."""

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import mgfusion.data as mdata
from mgfusion.data.acdc import ACDC_CONDITIONS
from mgfusion.data.testing import write_tiny_acdc

from .street_helpers import ground_truth_scores


def test_conditions_register_separately_and_pooled(tmp_path):
    write_tiny_acdc(tmp_path)
    mdata.register_all(tmp_path)
    for split in ("train", "val"):
        per_condition = [DatasetCatalog.get(f"mgf_acdc_{c}_sem_seg_{split}") for c in ACDC_CONDITIONS]
        assert [len(d) for d in per_condition] == [2, 2, 2, 2]
        pooled = DatasetCatalog.get(f"mgf_acdc_sem_seg_{split}")
        assert [d["file_name"] for d in pooled] == [d["file_name"] for ds in per_condition for d in ds]
        for condition, dicts in zip(ACDC_CONDITIONS, per_condition):
            for d in dicts:
                assert f"/rgb_anon/{condition}/{split}/" in d["file_name"]
                assert d["sem_seg_file_name"].endswith("_gt_labelTrainIds.png") and f"/gt/{condition}/{split}/" in d["sem_seg_file_name"]
                assert d["image_id"].startswith(f"{condition}/{split}/GOPR")
    assert MetadataCatalog.get("mgf_acdc_sem_seg_val").conditions == list(ACDC_CONDITIONS)
    results = ground_truth_scores("mgf_acdc_night_sem_seg_val", ["semantic"], str(tmp_path / "eval"))
    assert results["sem_seg"]["mIoU"] == pytest.approx(100.0)
