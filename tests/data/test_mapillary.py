"""Mapillary Vistas: the v1.2 -> Cityscapes table (Rein's rules), both releases' layouts, preparation, registration."""

import json

import numpy as np
import pytest
from detectron2.data import DatasetCatalog

import mgfusion.data as mdata
from mgfusion.data.labelmaps import (
    CITYSCAPES_TRAIN_CLASSES,
    MAPILLARY_V12_CLASSES,
    MAPILLARY_V12_TO_TRAIN_ID,
    lookup_table,
    read_label_png,
)
from mgfusion.data.mapillary import mapillary_release, prepare_mapillary
from mgfusion.data.testing import write_tiny_mapillary

from .street_helpers import ground_truth_scores, palette_indices


def rein_rules(readable: str) -> int:
    """Rein's tools/convert_datasets/mapillary2cityscape.py (--train_id), restated: the train id of a v1.2 class."""
    name = readable.lower().replace(" ", "").replace("-", "")
    by_name = {c.replace(" ", ""): i for i, c in enumerate(CITYSCAPES_TRAIN_CLASSES)}
    if name in by_name:
        return by_name[name]
    rules = [(("trafficsign", "front", "back"), "trafficsign"), (("onrail",), "train"), (("cyclist", "rider"), "rider"),
             (("pole", "streetlight"), "pole"), (("curb", "pedestrianarea"), "sidewalk"),
             (("crosswalkplain", "parking", "bikelane", "servicelane", "lanemarking"), "road")]  # fmt: skip
    for keys, target in rules:
        if any(key in name for key in keys):
            return by_name[target]
    return 255


def test_the_table_is_reins_mapping_of_the_66_classes():
    table = lookup_table(MAPILLARY_V12_TO_TRAIN_ID)
    assert len(MAPILLARY_V12_CLASSES) == 66
    assert [int(table[i]) for i in range(66)] == [rein_rules(c) for c in MAPILLARY_V12_CLASSES]
    named = {c: int(table[i]) for i, c in enumerate(MAPILLARY_V12_CLASSES)}
    assert named["Road"] == 0 and named["Car"] == 13 and named["Person"] == 11 and named["Sky"] == 10
    assert named["On Rails"] == 16 and named["Motorcyclist"] == 12 and named["Utility Pole"] == 5
    assert named["Traffic Sign (Back)"] == named["Traffic Sign Frame"] == 7 and named["Curb Cut"] == 1
    assert named["Lane Marking - General"] == named["Service Lane"] == 0
    assert named["Manhole"] == named["Guard Rail"] == named["Caravan"] == named["Unlabeled"] == 255
    assert len(MAPILLARY_V12_TO_TRAIN_ID) == 34 and set(MAPILLARY_V12_TO_TRAIN_ID.values()) == set(range(19))


@pytest.mark.parametrize("release", ["v1.2", "v2.0"])
def test_both_releases_prepare_the_train_ids_of_the_v12_labels(tmp_path, release):
    mapillary = write_tiny_mapillary(tmp_path, release=release, prepare=False)
    found, config, labels = mapillary_release(str(mapillary))
    assert found == release and config.endswith({"v1.2": "config.json", "v2.0": "config_v1.2.json"}[release])
    outputs = prepare_mapillary(str(mapillary))
    assert outputs == [str(mapillary / "cityscapes_trainIdLabel" / s / "label") for s in ("train", "val")]
    table, seen = lookup_table(MAPILLARY_V12_TO_TRAIN_ID), set()
    for split, folder in (("train", "training"), ("val", "validation")):
        for raw_file in sorted((mapillary / folder / labels).glob("*.png")):
            raw = palette_indices(raw_file)
            train = read_label_png(str(mapillary / "cityscapes_trainIdLabel" / split / "label" / raw_file.name))
            assert (train == table[raw]).all()
            seen |= set(np.unique(raw).tolist())
    # road, lane marking and bike lane -> road; person, car, bicycle, sky; unlabeled and bird -> ignore
    assert {13, 24, 7, 19, 27, 52, 55, 65, 0} <= seen


def test_a_release_with_other_classes_or_no_layout_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither is present"):
        mapillary_release(str(tmp_path))
    mapillary = write_tiny_mapillary(tmp_path, prepare=False)
    config = json.loads((mapillary / "config.json").read_text())
    config["labels"][13]["readable"] = "Street"
    (mapillary / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="first difference at id 13"):
        prepare_mapillary(str(mapillary))


def test_registration_and_ground_truth_scores_perfectly(tmp_path):
    write_tiny_mapillary(tmp_path)
    mdata.register_all(tmp_path)
    assert [len(DatasetCatalog.get(f"mgf_mapillary_sem_seg_{s}")) for s in ("train", "val")] == [2, 2]
    results = ground_truth_scores("mgf_mapillary_sem_seg_val", ["semantic"], str(tmp_path / "eval"))
    assert results["sem_seg"]["mIoU"] == pytest.approx(100.0)
