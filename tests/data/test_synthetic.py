"""Synthetic dataset: determinism, atomic lazy generation, label consistency, registration."""

import hashlib
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from mgfusion.data import synthetic
from mgfusion.data.labelmaps import read_label_png, rgb_to_id
from mgfusion.data.synthetic import (
    SyntheticConfig,
    generate,
    register_synthetic,
    variant_dir,
)

SMALL = {"image_size": 48, "num_train": 3, "num_val": 2}


def _digests(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path):
    a = generate(SyntheticConfig(**SMALL, seed=3), tmp_path / "a")
    b = generate(SyntheticConfig(**SMALL, seed=3), tmp_path / "b")
    c = generate(SyntheticConfig(**SMALL, seed=4), tmp_path / "c")
    assert a.name == b.name and _digests(a) == _digests(b)
    assert len(_digests(a)) == 3 * (3 + 2) + 2 * 2 + 1  # 3 PNGs per image, 2 jsons per split, manifest
    assert _digests(a)["images/train/000001.png"] != _digests(c)["images/train/000001.png"]


def test_killed_generation_leaves_nothing_and_next_run_completes(tmp_path, monkeypatch):
    config = SyntheticConfig(**SMALL)
    real_write = synthetic._write_split

    def write_then_die(config_, split, out):
        real_write(config_, split, out)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(synthetic, "_write_split", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        generate(config, tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither the target nor the staging folder
    monkeypatch.setattr(synthetic, "_write_split", real_write)
    target = generate(config, tmp_path)
    assert synthetic.is_complete(target, config)


def test_incomplete_folder_is_not_taken_as_complete(tmp_path):
    config = SyntheticConfig(**SMALL)
    target = variant_dir(tmp_path, config)
    (target / "images").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a complete synthetic dataset"):
        generate(config, tmp_path)


def test_labels_are_consistent_across_formats(tmp_path):
    config = SyntheticConfig(image_size=64, num_train=2, num_val=4, seed=1)
    root = generate(config, tmp_path)
    panoptic = json.loads((root / "annotations/panoptic_val.json").read_text())
    instances = json.loads((root / "annotations/instances_val.json").read_text())
    assert [c["name"] for c in panoptic["categories"]] == ["disk", "box", "triangle", "ring", "grass", "sand"]
    for ann in panoptic["annotations"]:
        ids = rgb_to_id(read_label_png(str(root / "panoptic_val" / ann["file_name"])))
        semantic = read_label_png(str(root / "semantic_val" / ann["file_name"]))
        assert set(np.unique(ids)) == {s["id"] for s in ann["segments_info"]}  # every pixel labelled
        things = [s for s in ann["segments_info"] if s["category_id"] <= 4]
        assert config.min_objects <= len(things) <= config.max_objects
        for seg in ann["segments_info"]:
            mask = ids == seg["id"]
            assert mask.sum() == seg["area"] and (semantic[mask] == seg["category_id"] - 1).all()
        gt = [a for a in instances["annotations"] if a["image_id"] == ann["image_id"]]
        assert len(gt) == len(things)
        for inst, seg in zip(gt, things):
            assert inst["category_id"] == seg["category_id"]
            assert (mask_util.decode(inst["segmentation"]).astype(bool) == (ids == seg["id"])).all()


def test_classes_differ_in_colour_statistics(tmp_path):
    """Not trivial but learnable: per-class mean colours are distinct, with within-class spread."""
    scenes = list(synthetic.iter_scenes(SyntheticConfig(image_size=64, num_train=24, num_val=1), "train"))
    means = {c: [] for c in range(6)}
    for s in scenes:
        sem = s.semantic_map()
        for c in np.unique(sem):
            means[int(c)].append(s.image[sem == c].mean(axis=0))
    centres = np.stack([np.mean(means[c], axis=0) for c in range(6)])
    spread = np.mean([np.std(means[c], axis=0).mean() for c in range(6)])
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1)[np.triu_indices(6, 1)]
    assert spread > 5.0  # colours are jittered within a class
    assert gaps.min() > 5.0  # ... but class means are apart


def test_registration_is_lazy_and_generates_once(tmp_path):
    config = register_synthetic(tmp_path, **SMALL)
    folder = variant_dir(tmp_path, config)
    assert not folder.exists()  # nothing written at registration
    train = DatasetCatalog.get("mgf_synthetic_train")
    stamp = (folder / "MANIFEST.json").stat().st_mtime_ns
    assert len(train) == 3 and len(DatasetCatalog.get("mgf_synthetic_val_panoptic")) == 2
    assert (folder / "MANIFEST.json").stat().st_mtime_ns == stamp
    sem = DatasetCatalog.get("mgf_synthetic_val_sem_seg")
    assert all(d["sem_seg_file_name"].endswith(".png") for d in sem)
    meta = MetadataCatalog.get("mgf_synthetic_val_panoptic")
    assert meta.thing_classes == ["disk", "box", "triangle", "ring"] and len(meta.stuff_classes) == 6
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.ignore_label == 255
    assert MetadataCatalog.get("mgf_synthetic_val").thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2, 4: 3}


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="image_size"):
        SyntheticConfig(image_size=8)
    with pytest.raises(ValueError, match="min_objects"):
        SyntheticConfig(min_objects=5, max_objects=2)
    with pytest.raises(ValueError, match="valid splits"):
        synthetic.synthetic_dataset_names("test")
