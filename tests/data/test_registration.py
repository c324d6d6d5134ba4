"""Every registration builds its dicts from a tiny folder in the real layout (written by mgfusion.data.testing)."""

import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES

from mgfusion.data.categories import (
    ADE20K_INSTANCE_CLASSES,
    ADE20K_INSTANCE_TO_SEMANTIC,
)
from mgfusion.data.labelmaps import read_label_png, rgb_to_id


def _files_exist(dicts, keys):
    return all(os.path.isfile(d[k]) for d in dicts for k in keys if k in d)


def test_coco_instances(tiny):
    dicts = DatasetCatalog.get("mgf_coco_2017_val")
    assert len(dicts) == 2 and _files_exist(dicts, ["file_name"])
    annos = [a for d in dicts for a in d["annotations"]]
    assert sum(a["iscrowd"] for a in annos) == 1
    # COCO ids 1 (person), 3 (car), 18 (dog), 44 (bottle) are contiguous ids 0, 2, 16, 39
    assert {a["category_id"] for a in annos} <= {0, 2, 16, 39}
    assert len({a["category_id"] for a in annos}) >= 2


def test_coco_panoptic_with_sem_seg_and_its_prepared_semantic_pngs(tiny):
    dicts = DatasetCatalog.get("mgf_coco_2017_val_panoptic_with_sem_seg")
    meta = MetadataCatalog.get("mgf_coco_2017_val_panoptic_with_sem_seg")
    assert len(meta.stuff_classes) == 133 and len(meta.thing_classes) == 80
    assert meta.thing_dataset_id_to_contiguous_id[1] == 0 and meta.stuff_dataset_id_to_contiguous_id[200] == 132
    assert _files_exist(dicts, ["file_name", "pan_seg_file_name", "sem_seg_file_name"])
    for d in dicts:
        ids = rgb_to_id(read_label_png(d["pan_seg_file_name"]))
        semantic = read_label_png(d["sem_seg_file_name"])
        for seg in d["segments_info"]:
            assert seg["isthing"] == (seg["category_id"] < 80)
            assert (semantic[ids == seg["id"]] == seg["category_id"]).all()
        known = np.isin(ids, [s["id"] for s in d["segments_info"]])
        assert (semantic[~known] == 255).all()
    assert len(DatasetCatalog.get("mgf_coco_2017_val_panoptic")) == 2  # detectron2's standard metadata variant


def test_cityscapes_instances_from_instance_ids(tiny):
    dicts = DatasetCatalog.get("mgf_cityscapes_fine_instance_seg_val")
    assert len(dicts) == 2
    d = dicts[0]
    instance_ids = read_label_png(d["file_name"].replace("leftImg8bit", "gtFine", 1).replace(
        "_leftImg8bit.png", "_gtFine_instanceIds.png"
    )).astype(np.int64)  # fmt: skip
    crowd = [a for a in d["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and (instance_ids < 1000).any()
    contiguous = {24: 0, 25: 1, 26: 2, 27: 3, 28: 4, 31: 5, 32: 6, 33: 7}
    for ann in d["annotations"]:
        mask = mask_util.decode(ann["segmentation"]).astype(bool)
        values = np.unique(instance_ids[mask])
        assert len(values) == 1  # exactly one instance id under each mask, and the whole of it
        assert mask.sum() == (instance_ids == values[0]).sum()
        label_id = values[0] // 1000 if values[0] >= 1000 else values[0]
        assert ann["category_id"] == contiguous[int(label_id)]
    assert MetadataCatalog.get("mgf_cityscapes_fine_instance_seg_val").thing_classes[0] == "person"


def test_cityscapes_semantic_and_panoptic(tiny):
    sem = DatasetCatalog.get("mgf_cityscapes_fine_sem_seg_val")
    assert len(sem) == 2 and _files_exist(sem, ["file_name", "sem_seg_file_name"])
    labels = read_label_png(sem[0]["sem_seg_file_name"])
    assert (labels[:3] == 255).all()  # the "unlabeled" band
    assert set(np.unique(labels)) <= {0, 10, 11, 12, 13, 18, 255}  # road, sky, person, rider, car, bicycle
    pan = DatasetCatalog.get("mgf_cityscapes_fine_panoptic_val")
    assert _files_exist(pan, ["file_name", "pan_seg_file_name", "sem_seg_file_name"])
    assert pan[0]["image_id"] == "frankfurt_000000_000019"  # <city>_<seq>_<frame>, as cityscapesscripts names it
    assert {s["category_id"] for d in pan for s in d["segments_info"]} <= {0, 10, 11, 12, 13, 18}


def test_ade20k_semantic_conversion(tiny):
    ade = tiny / "ADEChallengeData2016"
    raw = read_label_png(str(ade / "annotations/validation/ADE_val_00000001.png")).astype(np.int64)
    converted = read_label_png(str(ade / "annotations_detectron2/validation/ADE_val_00000001.png")).astype(np.int64)
    assert (converted == np.where(raw == 0, 255, raw - 1)).all()
    dicts = DatasetCatalog.get("mgf_ade20k_sem_seg_train")
    assert len(dicts) == 2 and _files_exist(dicts, ["file_name", "sem_seg_file_name"])
    assert len(MetadataCatalog.get("mgf_ade20k_sem_seg_val").stuff_classes) == 150


def test_ade20k_panoptic_and_instance(tiny):
    pan = DatasetCatalog.get("mgf_ade20k_panoptic_val")
    meta = MetadataCatalog.get("mgf_ade20k_panoptic_val")
    things = set(meta.thing_dataset_id_to_contiguous_id.values())
    assert len(things) == 100 and len(meta.stuff_classes) == 150
    assert _files_exist(pan, ["file_name", "pan_seg_file_name", "sem_seg_file_name"])
    first = pan[0]
    ids = rgb_to_id(read_label_png(first["pan_seg_file_name"]))
    semantic = read_label_png(first["sem_seg_file_name"]).astype(np.int64)
    for seg in first["segments_info"]:
        assert seg["isthing"] == (seg["category_id"] in things)
        assert (semantic[ids == seg["id"]] == seg["category_id"]).all()
    # the thing region without instance annotation is VOID although its semantic label is a thing class
    assert ((ids == 0) & np.isin(semantic, list(things))).any()

    instances = DatasetCatalog.get("mgf_ade20k_instance_val")
    inst_meta = MetadataCatalog.get("mgf_ade20k_instance_val")
    assert len(inst_meta.thing_classes) == 100 and inst_meta.thing_classes[3] == "person"
    n_pan_things = sum(s["isthing"] for d in pan for s in d["segments_info"])
    assert sum(len(d["annotations"]) for d in instances) == n_pan_things
    with open(meta.json_file) as f:
        assert {c["id"] for c in json.load(f)["categories"]} == set(meta.thing_dataset_id_to_contiguous_id)


def test_ade20k_instance_to_semantic_table():
    assert len(ADE20K_INSTANCE_CLASSES) == len(ADE20K_INSTANCE_TO_SEMANTIC) == 100
    assert list(ADE20K_INSTANCE_TO_SEMANTIC) == sorted(set(ADE20K_INSTANCE_TO_SEMANTIC))
    renamed = {
        "windowpane",
        "bathtub",
        "railing",
        "streetlight",
        "television receiver",
        "airplane",
        "apparel",
        "ashcan",
    }
    for name, index in zip(ADE20K_INSTANCE_CLASSES, ADE20K_INSTANCE_TO_SEMANTIC):
        if name not in renamed:
            assert ADE20K_SEM_SEG_CATEGORIES[index].split(",")[0].strip() == name


def test_an_annotation_file_with_other_categories_is_an_error_naming_it(tmp_path):
    """A COCO json listing only the categories it uses (common in hand-made subsets) once collided with
    detectron2's built-in metadata ("cannot be set to a different value"); now it is refused by name."""
    from mgfusion.data import register_all
    from mgfusion.data.testing import write_tiny_coco

    coco = write_tiny_coco(tmp_path, splits=["val"], prepare=False)
    register_all(tmp_path)
    assert len(DatasetCatalog.get("mgf_coco_2017_val")) == 2
    instances_json = coco / "annotations" / "instances_val2017.json"
    content = json.loads(instances_json.read_text())
    used = {a["category_id"] for a in content["annotations"]}
    content["categories"] = [c for c in content["categories"] if c["id"] in used]
    instances_json.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=f"{instances_json}.*missing category ids \\[2, 4, 5"):
        DatasetCatalog.get("mgf_coco_2017_val")
    content["categories"] = [{**c, "name": c["name"].upper()} for c in content["categories"]]
    instances_json.write_text(json.dumps(content))
    with pytest.raises(ValueError, match="1: 'PERSON' vs 'person'"):
        DatasetCatalog.get("mgf_coco_2017_val")

    panoptic_json = coco / "annotations" / "panoptic_val2017.json"
    content = json.loads(panoptic_json.read_text())
    content["categories"].append({"id": 999, "name": "unicorn", "isthing": 1, "color": [1, 2, 3]})
    panoptic_json.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=f"{panoptic_json}.*unexpected category ids \\[999\\]"):
        DatasetCatalog.get("mgf_coco_2017_val_panoptic")


def test_instance_metadata_matches_what_the_loaders_produce(tiny):
    """The model's thing ids (metadata) and the loaded annotations agree for every instance dataset."""
    for name in ("mgf_coco_2017_val", "mgf_cityscapes_fine_instance_seg_val", "mgf_ade20k_instance_val"):
        meta = MetadataCatalog.get(name)
        assert sorted(meta.thing_dataset_id_to_contiguous_id.values()) == list(range(len(meta.thing_classes)))
        for d in DatasetCatalog.get(name):
            for ann in d["annotations"]:
                assert 0 <= ann["category_id"] < len(meta.thing_classes)
    cityscapes = MetadataCatalog.get("mgf_cityscapes_fine_instance_seg_val")
    assert cityscapes.thing_dataset_id_to_contiguous_id == {24: 0, 25: 1, 26: 2, 27: 3, 28: 4, 31: 5, 32: 6, 33: 7}
    assert len(cityscapes.thing_colors) == 8 and cityscapes.evaluator_type == "cityscapes_instance"
