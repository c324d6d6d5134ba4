"""Every dataset config in configs/dataset/ trains and evaluates through tools/train_net.py, as a user runs it, on a
tiny tree in that dataset's real on-disk layout under a temporary $DETECTRON2_DATASETS.

The trees are written raw (what the downloads unpack to) by mgfusion.data.testing; the derived files are then made
by running the `python datasets/...` commands of datasets/README.md exactly as written there, so the preparation
scripts and the documented commands are tested too. Each training run is the user's composition
`dataset=<name> backbone=fusion_micro_d3s2 model=mask2former_tiny solver=smoke_cpu runtime=smoke` with small
crop/test sizes and 2 iterations; the configured evaluator must run and write the task's metrics. Ground truth fed
back as predictions must score perfectly through each config's evaluator, and a missing dataset must fail with the
"not found" message naming the path and $DETECTRON2_DATASETS.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mgfusion.data.testing import (
    DATASET_FAMILY,
    STREET_CONFIG_FAMILIES,
    TINY_WRITERS,
    write_tiny_ade20k,
    write_tiny_cityscapes,
    write_tiny_coco,
)
from mgfusion.engine.evaluation import AVERAGE_KEY, evaluate, write_metrics_json
from mgfusion.evaluation import ground_truth_outputs

REPO = Path(__file__).resolve().parents[2]
TRAIN_NET = REPO / "tools" / "train_net.py"
DATASETS_README = REPO / "datasets" / "README.md"
CONFIGS = sorted(p.stem for p in (REPO / "configs" / "dataset").glob("*.yaml"))
MICRO = ["backbone=fusion_micro_d3s2", "model=mask2former_tiny"]
SMOKE = ["solver=smoke_cpu", "runtime=smoke", "solver.max_iter=2", "device=cpu"]
# the results each evaluator task writes (detectron2's result keys) and the headline metrics checked
METRICS = {"instance": {"segm": ["AP"]}, "semantic": {"sem_seg": ["mIoU"]},
           "panoptic": {"panoptic_seg": ["PQ", "SQ", "RQ"], "segm": ["AP"], "sem_seg": ["mIoU"]}}  # fmt: skip
# the two configs of the reproduction and the domain-generalisation protocol (one source, three test sets,
# their average) stay in the fast selection; the other runs are marked slow
FAST = {"cityscapes_instance", "coco_instance", "gta5_to_cs_bdd_map"}
TEST_IMAGES = 2  # per split, in every tiny tree
# test sets with more images: ACDC's four conditions together
POOLED_IMAGES = {"mgf_acdc_sem_seg_val": 4 * TEST_IMAGES}
# the raw street-scene trees written by mgfusion.data.testing (the others are written explicitly below)
STREET_FAMILIES = sorted({f for families in STREET_CONFIG_FAMILIES.values() for f in families} - {"cityscapes"})


def compose_dataset(name: str):
    """The ``dataset`` node of configs/train.yaml composed with ``dataset=<name>`` and the small sizes."""
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        return compose("train", overrides=[f"dataset={name}", *small_sizes(name), "output_dir=unused"]).dataset


def expected_images(name: str) -> int:
    return POOLED_IMAGES.get(name, TEST_IMAGES)


def small_sizes(name: str) -> list[str]:
    """Overrides that shrink the augmentation and the test resize of config ``name`` to the tiny images."""
    if name.startswith("synthetic"):
        return ["dataset.register.image_size=64", "dataset.register.num_train=4", f"dataset.register.num_val={TEST_IMAGES}"]
    small_test = ["dataset.test_mapper.min_size=64", "dataset.test_mapper.max_size=128"]
    if name.startswith("coco"):
        return ["dataset.train_mapper.lsj_size=64", *small_test]
    return ["dataset.train_mapper.base_size=64", "dataset.train_mapper.max_size=256",
            "dataset.train_mapper.crop_size=[64,64]", *small_test]  # fmt: skip


def readme_commands() -> list[list[str]]:
    """The `python datasets/...` commands of the bash blocks in datasets/README.md, as argument lists."""
    blocks = re.findall(r"```bash\n(.*?)```", DATASETS_README.read_text(encoding="utf-8"), flags=re.DOTALL)
    commands = []
    for line in "\n".join(blocks).splitlines():
        args = shlex.split(line, comments=True)
        if args[:1] == ["python"] and args[1].startswith("datasets/"):
            commands.append(args)
    return commands


def env_with_root(root: Path) -> dict[str, str]:
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), PYTHONWARNINGS="ignore")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def run_train_net(root: Path, cwd: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python tools/train_net.py <overrides>`` from ``cwd`` with ``$DETECTRON2_DATASETS=root``.

    Hydra's own folder (``.hydra/``) goes to ``cwd/hydra_run``: a fixed short name, independent of how the engine
    names run folders from the overrides.
    """
    command = [sys.executable, str(TRAIN_NET), *overrides, f"hydra.run.dir={cwd / 'hydra_run'}"]
    return subprocess.run(command, check=False, cwd=cwd, env=env_with_root(root), capture_output=True, text=True, timeout=timeout)


def tail(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-5000:]}"


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory) -> Path:
    """Raw tiny trees of every real family (COCO train with polygons as in real COCO, val with RLE masks so that
    panoptic ground truth equals the instance json), then datasets/README.md's preparation commands on them."""
    root = tmp_path_factory.mktemp("detectron2_datasets")
    write_tiny_coco(root, splits=["train"], num_images=TEST_IMAGES, polygons=True, prepare=False)
    write_tiny_coco(root, splits=["val"], num_images=TEST_IMAGES, seed=5, prepare=False)
    write_tiny_cityscapes(root, num_images=TEST_IMAGES, prepare=False)
    write_tiny_ade20k(root, num_images=TEST_IMAGES, prepare=False)
    for family in STREET_FAMILIES:
        TINY_WRITERS[family](root, num_images=TEST_IMAGES, prepare=False)
    for command in readme_commands():
        proc = subprocess.run([sys.executable, *command[1:]], check=False, cwd=REPO, env=env_with_root(root), capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, f"datasets/README.md command {shlex.join(command)} failed:\n{tail(proc)}"
    return root


def test_readme_preparation_commands_make_the_derived_files(datasets_root):
    scripts = {Path(c[1]).name for c in readme_commands()}
    assert {"prepare_coco_semantic_annos_from_panoptic.py", "prepare_cityscapes.py", "prepare_ade20k_sem_seg.py",
            "prepare_ade20k_pan_ins_seg.py", "prepare_synthetic.py", "prepare_kitti360.py", "prepare_synthia.py",
            "prepare_synscapes.py", "prepare_urbansyn.py", "prepare_gta5.py", "prepare_mapillary.py"} <= scripts  # fmt: skip
    derived = [
        "coco/panoptic_semseg_train2017", "coco/panoptic_semseg_val2017",
        "cityscapes/gtFine/cityscapes_panoptic_train.json", "cityscapes/gtFine/cityscapes_panoptic_val",
        "ADEChallengeData2016/annotations_detectron2/validation", "ADEChallengeData2016/ade20k_panoptic_val.json",
        "ADEChallengeData2016/ade20k_panoptic_train", "ADEChallengeData2016/ade20k_instance_val.json",
        "KITTI-360/kitti360_instance_train.json", "KITTI-360/kitti360_instance_val.json",
        "synthia/synthia_instance_train.json", "synthia/GT/LABELS/0000001_labelTrainIds.png",
        "synscapes/synscapes_instance_train.json", "synscapes/img/class/2_labelTrainIds.png",
        "urbansyn/urbansyn_instance_train.json", "urbansyn/ss/ss_0001_labelTrainIds.png",
        "gta/labels/00002_labelTrainIds.png", "mapillary/cityscapes_trainIdLabel/val/label",
    ]  # fmt: skip
    for path in derived:
        assert (datasets_root / path).exists(), path
    assert len(list((datasets_root / "cityscapes/gtFine/val").glob("*/*_gtFine_labelTrainIds.png"))) == TEST_IMAGES
    assert len(list((datasets_root / "mgfusion_synthetic").glob("*/MANIFEST.json"))) == 1  # prepare_synthetic.py


@pytest.mark.parametrize(
    "name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in CONFIGS]
)
def test_config_trains_and_evaluates_through_train_net(datasets_root, tmp_path, name):
    node = compose_dataset(name)
    out = tmp_path / "run"
    proc = run_train_net(datasets_root, tmp_path, f"dataset={name}", *MICRO, *SMOKE, *small_sizes(name),
                         f"output_dir={out}")  # fmt: skip
    assert proc.returncode == 0, tail(proc)
    for test in node.test:  # the tiny val split of every test set
        assert f"Start inference on {expected_images(test)} batches" in proc.stdout + proc.stderr, test
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["iteration"] == 2
    expected = METRICS[node.task]
    per_target = {node.test[0]: final["results"]} if len(node.test) == 1 else final["results"]
    if len(node.test) > 1:  # one entry per test set and the average row, also as a table in the log
        assert list(per_target) == [*node.test, AVERAGE_KEY]
        assert per_target.pop(AVERAGE_KEY)["num_test_sets"] == len(node.test)
        assert f"| average (mean of {len(node.test)} test sets)" in proc.stdout + proc.stderr
    for results in per_target.values():
        assert set(results) == set(expected), results.keys()
        for key, metrics in expected.items():
            for metric in metrics:  # null = NaN: e.g. no thing prediction of the 2-iteration panoptic model
                value = results[key][metric]
                assert value is None or 0.0 <= value <= 100.0, (key, metric, value)
        headline_key, headline = next(iter(expected.items()))
        assert results[headline_key][headline[0]] is not None, results[headline_key]


@pytest.mark.slow
def test_default_train_config_with_micro_backbone_and_model(datasets_root, tmp_path):
    """configs/train.yaml as the paper recipe composes it (Cityscapes instance, adamw_poly, default runtime) with
    only the backbone / model swapped for micro ones, the sizes made small and 2 iterations."""
    out = tmp_path / "run"
    proc = run_train_net(datasets_root, tmp_path, *MICRO, *small_sizes("cityscapes_instance"), "solver.max_iter=2",
                         "solver.ims_per_batch=2", "runtime.num_workers=0", f"output_dir={out}")  # fmt: skip
    assert proc.returncode == 0, tail(proc)
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["iteration"] == 2 and {"AP", "AP50", "AP-person", "AP-bicycle"} <= set(final["results"]["segm"])


# one config per family (every registered name's message is checked in-process in tests/data/test_catalog.py)
@pytest.mark.parametrize(
    "name", ["cityscapes_instance", "coco_instance", pytest.param("ade20k_panoptic", marks=pytest.mark.slow)]
)
def test_missing_dataset_names_the_path_and_the_variable(tmp_path, name):
    empty = tmp_path / "no_datasets_here"
    empty.mkdir()
    out = tmp_path / "run"
    proc = run_train_net(empty, tmp_path, f"dataset={name}", *MICRO, *SMOKE, *small_sizes(name), f"output_dir={out}")
    assert proc.returncode == 2, tail(proc)
    folder = {"coco": "coco", "cityscapes": "cityscapes", "ade20k": "ADEChallengeData2016"}[DATASET_FAMILY[name]]
    assert re.search(r"error: Dataset 'mgf_\w+' expects its .* at '" + re.escape(str(empty / folder)), proc.stderr)
    assert f"$DETECTRON2_DATASETS='{empty}'" in proc.stderr and "datasets/README.md" in proc.stderr
    assert "Starting training" not in proc.stdout + proc.stderr and not list(out.glob("*.pth"))


@pytest.mark.slow
def test_missing_test_split_fails_before_training(datasets_root, tmp_path):
    root = tmp_path / "datasets"
    shutil.copytree(datasets_root / "cityscapes", root / "cityscapes")
    shutil.rmtree(root / "cityscapes" / "leftImg8bit" / "val")
    out = tmp_path / "run"
    proc = run_train_net(root, tmp_path, "dataset=cityscapes_instance", *MICRO, *SMOKE,
                         *small_sizes("cityscapes_instance"), f"output_dir={out}")  # fmt: skip
    assert proc.returncode == 2, tail(proc)
    assert str(root / "cityscapes" / "leftImg8bit" / "val") in proc.stderr
    assert "Starting training" not in proc.stdout + proc.stderr and not list(out.glob("*.pth"))


def register_node(node, datasets_root: Path, name: str) -> None:
    register = OmegaConf.to_container(node.register)
    register["root"] = str(datasets_root / "mgfusion_synthetic" if name.startswith("synthetic") else datasets_root)
    instantiate(register)


@pytest.mark.parametrize("name", CONFIGS)
def test_ground_truth_scores_perfectly_through_the_configured_evaluator(datasets_root, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # the official Cityscapes scripts must not write into the working directory
    node = compose_dataset(name)
    register_node(node, datasets_root, name)
    tasks = list(node.evaluator.tasks)
    for train in node.train:  # the training sets load from the tree (their metadata matches the test sets')
        assert len(DatasetCatalog.get(train)) >= 1
        for key in ("thing_classes", "stuff_classes", "thing_dataset_id_to_contiguous_id"):
            assert MetadataCatalog.get(train).get(key) == MetadataCatalog.get(node.test[0]).get(key), (train, key)
    for test in node.test:
        evaluator = instantiate(node.evaluator)(dataset_name=test, output_dir=str(tmp_path / "eval" / test))
        evaluator.reset()
        dicts = DatasetCatalog.get(test)
        assert len(dicts) == expected_images(test)
        for d in dicts:
            evaluator.process([d], [ground_truth_outputs(d, MetadataCatalog.get(test), tasks)])
        results = evaluator.evaluate()
        assert set(results) == set(METRICS[node.task])
        for key, metrics in METRICS[node.task].items():
            for metric in metrics:
                assert math.isclose(results[key][metric], 100.0, abs_tol=1e-6), (test, key, metric, results[key])


class GroundTruthModel(torch.nn.Module):
    """A stand-in model whose outputs are each input's ground truth (looked up by file name)."""

    def __init__(self, test_sets: list[str], tasks: list[str]) -> None:
        super().__init__()
        self.lookup = {d["file_name"]: (d, MetadataCatalog.get(n)) for n in test_sets for d in DatasetCatalog.get(n)}
        self.tasks = tasks

    def forward(self, inputs: list[dict]) -> list[dict]:
        return [ground_truth_outputs(*self.lookup[x["file_name"]], self.tasks) for x in inputs]


@pytest.mark.parametrize("name", ["gta5_to_cs_bdd_map", "cs_to_bdd_map_acdc", "cs_to_acdc"])
def test_multi_target_evaluation_reports_every_target_and_the_average(datasets_root, tmp_path, monkeypatch, caplog,
                                                                       name):  # fmt: skip
    """The engine's evaluation of a config with several test sets, on the real loaders, mappers and evaluators."""
    monkeypatch.chdir(tmp_path)
    node = compose_dataset(name)
    assert len(node.test) > 1
    register_node(node, datasets_root, name)
    model = GroundTruthModel(list(node.test), list(node.evaluator.tasks))
    with caplog.at_level("INFO", logger="mgfusion.engine.evaluation"):
        results = evaluate(model, node, output_dir=str(tmp_path / "eval"))
    assert list(results) == [*node.test, AVERAGE_KEY]
    for test in node.test:
        assert math.isclose(results[test]["sem_seg"]["mIoU"], 100.0, abs_tol=1e-6), test
    average = results[AVERAGE_KEY]
    assert math.isclose(average["sem_seg"]["mIoU"], 100.0, abs_tol=1e-6) and average["num_test_sets"] == len(node.test)
    table = next(r.getMessage() for r in caplog.records if "Results per test set" in r.getMessage())
    assert f"unweighted mean over the {len(node.test)} test sets of each one's mIoU" in table
    rows = [line for line in table.splitlines() if line.startswith(("| mgf_", "| average"))]
    assert len(rows) == len(node.test) + 1  # one row per target plus the average
    write_metrics_json(str(tmp_path / "metrics.json"), results, iteration=0)
    written = json.loads((tmp_path / "metrics.json").read_text())["results"]
    assert written[AVERAGE_KEY]["sem_seg"]["mIoU"] == pytest.approx(100.0)
