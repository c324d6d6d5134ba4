"""Registration mechanics: missing-folder errors, idempotence, dataset root resolution."""

import shutil

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import mgfusion.data as mdata
from mgfusion.data import DatasetNotFoundError, datasets_root
from mgfusion.data.testing import write_tiny_ade20k

REAL_NAMES = [
    "coco_2017_train",
    "coco_2017_val",
    "coco_2017_val_panoptic",
    "coco_2017_val_panoptic_with_sem_seg",
    "cityscapes_fine_instance_seg_val",
    "cityscapes_fine_sem_seg_train",
    "cityscapes_fine_panoptic_val",
    "ade20k_sem_seg_val",
    "ade20k_panoptic_train",
    "ade20k_instance_val",
]


@pytest.mark.parametrize("name", REAL_NAMES)
def test_missing_folder_names_path_variable_and_readme(tmp_path, name):
    mdata.register_all(tmp_path)
    with pytest.raises(DatasetNotFoundError) as info:
        DatasetCatalog.get(name)
    message = str(info.value)
    assert name in message
    assert str(tmp_path) in message
    assert "$DETECTRON2_DATASETS" in message
    assert "datasets/README.md" in message


def test_missing_derived_file_names_the_preparation_script(tmp_path):
    ade = write_tiny_ade20k(tmp_path, num_images=1)
    shutil.rmtree(ade / "ade20k_panoptic_val")
    mdata.register_all(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="prepare_ade20k_pan_ins_seg.py"):
        DatasetCatalog.get("ade20k_panoptic_val")
    assert len(DatasetCatalog.get("ade20k_sem_seg_val")) == 1  # the other ADE20K names still load


def test_register_all_is_idempotent_and_follows_the_root(tmp_path):
    first = mdata.register_all(tmp_path / "a")
    second = mdata.register_all(tmp_path / "b")
    assert first == second
    assert len(set(first)) == len(first)
    assert all(name in DatasetCatalog.list() for name in first)
    assert MetadataCatalog.get("coco_2017_val").image_root == str(tmp_path / "b" / "coco" / "val2017")
    assert MetadataCatalog.get("synthetic_val").synthetic_dir.startswith(str(tmp_path / "b" / "mgfusion_synthetic"))


def test_datasets_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert datasets_root() == tmp_path
    assert datasets_root("elsewhere").name == "elsewhere"
    monkeypatch.delenv("DETECTRON2_DATASETS")
    assert str(datasets_root()) == "datasets"
