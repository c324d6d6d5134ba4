"""Registration mechanics: no import side effects, detectron2's names left intact, missing-folder errors,
idempotence, dataset root resolution."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import mgfusion.data as mdata
from mgfusion.data import DatasetNotFoundError, DatasetRegistrationError, datasets_root
from mgfusion.data.testing import write_tiny_ade20k

REPO = Path(__file__).resolve().parents[2]
# detectron2 built-in names that mgfusion also provides (as mgf_<name>)
BUILTIN = ["coco_2017_val", "coco_2017_train_panoptic", "cityscapes_fine_instance_seg_train", "ade20k_sem_seg_val"]

REAL_NAMES = [
    "mgf_coco_2017_train",
    "mgf_coco_2017_val",
    "mgf_coco_2017_val_panoptic",
    "mgf_coco_2017_val_panoptic_with_sem_seg",
    "mgf_cityscapes_fine_instance_seg_val",
    "mgf_cityscapes_fine_sem_seg_train",
    "mgf_cityscapes_fine_panoptic_val",
    "mgf_ade20k_sem_seg_val",
    "mgf_ade20k_panoptic_train",
    "mgf_ade20k_instance_val",
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
        DatasetCatalog.get("mgf_ade20k_panoptic_val")
    assert len(DatasetCatalog.get("mgf_ade20k_sem_seg_val")) == 1  # the other ADE20K names still load


def test_register_all_is_idempotent_and_follows_the_root(tmp_path):
    first = mdata.register_all(tmp_path / "a")
    second = mdata.register_all(tmp_path / "b")
    assert first == second
    assert len(set(first)) == len(first)
    assert all(name in DatasetCatalog.list() for name in first)
    assert MetadataCatalog.get("mgf_coco_2017_val").image_root == str(tmp_path / "b" / "coco" / "val2017")
    assert MetadataCatalog.get("mgf_synthetic_val").synthetic_dir.startswith(str(tmp_path / "b" / "mgfusion_synthetic"))


def test_datasets_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert datasets_root() == tmp_path
    assert datasets_root("elsewhere").name == "elsewhere"
    monkeypatch.delenv("DETECTRON2_DATASETS")
    assert str(datasets_root()) == "datasets"


def test_importing_the_packages_registers_nothing():
    code = (
        "import json\n"
        "from detectron2.data import DatasetCatalog, MetadataCatalog\n"
        "def state():\n"
        "    return sorted(DatasetCatalog.list()), MetadataCatalog.get('coco_2017_val').as_dict()\n"
        "before = state()\n"
        "import mgfusion.data, mgfusion.evaluation, mgfusion.data.testing\n"
        "print(json.dumps({'same': state() == before, 'mgf': [n for n in DatasetCatalog.list() if 'mgf' in n]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"same": True, "mgf": []}


def test_register_all_leaves_detectron2_builtins_intact(tmp_path):
    loaders = {name: DatasetCatalog[name] for name in BUILTIN}
    metadata = {name: MetadataCatalog.get(name).as_dict() for name in BUILTIN}
    names = mdata.register_all(tmp_path)
    assert all(name.startswith("mgf_") for name in names)
    assert {f"mgf_{name}" for name in BUILTIN} <= set(names)
    for name in BUILTIN:
        assert DatasetCatalog[name] is loaders[name] and MetadataCatalog.get(name).as_dict() == metadata[name]
        assert not mdata.is_mgfusion_dataset(name) and mdata.is_mgfusion_dataset(f"mgf_{name}")
    with pytest.raises(DatasetRegistrationError, match="'coco_2017_val'.*mgf_coco_2017_val.*replace=True"):
        mdata.register_dataset("coco_2017_val", list, {}, root=tmp_path)
    assert DatasetCatalog["coco_2017_val"] is loaders["coco_2017_val"]


@pytest.fixture
def restore_builtins():
    """Put detectron2's built-in registrations back (and drop added aliases) after a test replaced them."""
    loaders = {n: DatasetCatalog[n] for n in DatasetCatalog.list()}
    metadata = {n: MetadataCatalog.get(n).as_dict() for n in loaders}
    yield
    for name in DatasetCatalog.list():
        if name.startswith("mgf_") or DatasetCatalog[name] is loaders.get(name):
            continue
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        mdata.catalog._OWNED.discard(name)
        if name in loaders:
            DatasetCatalog.register(name, loaders[name])
            MetadataCatalog.get(name).set(**{k: v for k, v in metadata[name].items() if k != "name"})
    assert sorted(n for n in DatasetCatalog.list() if not n.startswith("mgf_")) == sorted(
        n for n in loaders if not n.startswith("mgf_")
    )


def test_replace_builtin_is_explicit(tmp_path, restore_builtins):
    mdata.register_all(tmp_path, replace_builtin=True)
    for name in BUILTIN:
        assert mdata.is_mgfusion_dataset(name)
        assert MetadataCatalog.get(name).dataset_root == str(tmp_path)
        assert MetadataCatalog.get(name).as_dict() == {**MetadataCatalog.get(f"mgf_{name}").as_dict(), "name": name}
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "coco")):
        DatasetCatalog.get("coco_2017_val")  # mgfusion's loader, with its checks
