"""The street-scene names: registered by register_all, in Cityscapes' classes, missing folders named."""

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import mgfusion.data as mdata
from mgfusion.data import DatasetNotFoundError

# one name per family (and each folder layout) with the folder its error must name
STREET_NAMES = {
    "mgf_kitti360_instance_seg_val": "KITTI-360",
    "mgf_synthia_instance_seg_train": "synthia",
    "mgf_synscapes_sem_seg_train": "synscapes",
    "mgf_urbansyn_instance_seg_train": "urbansyn",
    "mgf_gta5_sem_seg_train": "gta",
    "mgf_bdd100k_sem_seg_val": "bdd100k",
    "mgf_mapillary_sem_seg_val": "mapillary",
    "mgf_acdc_sem_seg_val": "acdc",
}


@pytest.mark.parametrize("name", sorted(STREET_NAMES))
def test_missing_folder_names_the_path_and_the_readme(tmp_path, name):
    names = mdata.register_all(tmp_path)
    assert name in names
    with pytest.raises(DatasetNotFoundError) as info:
        DatasetCatalog.get(name)
    message = str(info.value)
    assert name in message and str(tmp_path / STREET_NAMES[name]) in message and "datasets/README.md" in message


def test_every_street_name_predicts_cityscapes_classes(tmp_path):
    names = [n for n in mdata.register_all(tmp_path) if n.split("_")[1] in {
        "kitti360", "synthia", "synscapes", "urbansyn", "gta5", "bdd100k", "mapillary", "acdc"}]  # fmt: skip
    assert len(names) == 23
    semantic = MetadataCatalog.get("mgf_cityscapes_fine_sem_seg_val")
    instance = MetadataCatalog.get("mgf_cityscapes_fine_instance_seg_val")
    for name in names:
        meta = MetadataCatalog.get(name)
        if "_instance_seg_" in name:
            assert meta.thing_classes == instance.thing_classes and meta.evaluator_type == "coco"
            assert meta.thing_dataset_id_to_contiguous_id == instance.thing_dataset_id_to_contiguous_id
        else:
            assert meta.stuff_classes == semantic.stuff_classes and meta.evaluator_type == "sem_seg"
        assert meta.ignore_label == 255
