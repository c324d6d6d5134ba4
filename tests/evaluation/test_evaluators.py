"""Evaluators on the tiny real-layout datasets: ground truth as prediction scores perfectly, errors are named."""

import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from mgfusion.data import register_synthetic
from mgfusion.evaluation import build_evaluator, default_tasks, ground_truth_outputs

CASES = [
    ("mgf_coco_2017_val", ["instance"], {"segm": "AP"}),
    ("mgf_coco_2017_val_panoptic", ["panoptic"], {"panoptic_seg": "PQ"}),
    ("mgf_coco_2017_val_panoptic_with_sem_seg", ["panoptic", "instance", "semantic"],
     {"panoptic_seg": "PQ", "segm": "AP", "sem_seg": "mIoU"}),
    ("mgf_cityscapes_fine_instance_seg_val", ["instance"], {"segm": "AP"}),
    ("mgf_cityscapes_fine_sem_seg_val", ["semantic"], {"sem_seg": "mIoU"}),
    ("mgf_cityscapes_fine_panoptic_val", ["panoptic", "instance", "semantic"],
     {"panoptic_seg": "PQ", "segm": "AP", "sem_seg": "mIoU"}),
    ("mgf_ade20k_sem_seg_val", ["semantic"], {"sem_seg": "mIoU"}),
    ("mgf_ade20k_panoptic_val", ["panoptic", "instance", "semantic"], {"panoptic_seg": "PQ", "segm": "AP", "sem_seg": "mIoU"}),
    ("mgf_ade20k_instance_val", ["instance"], {"segm": "AP"}),
]  # fmt: skip


def evaluate(name, tasks, corrupt=None, output_dir=None, limit=None):
    evaluator = build_evaluator(name, output_dir, tasks)
    evaluator.reset()
    meta = MetadataCatalog.get(name)
    tasks = tasks or default_tasks(meta.evaluator_type)
    for d in DatasetCatalog.get(name)[:limit]:
        outputs = ground_truth_outputs(d, meta, tasks)
        evaluator.process([d], [corrupt(outputs) if corrupt else outputs])
    return evaluator.evaluate()


@pytest.mark.parametrize("name,tasks,metrics", CASES, ids=[c[0] for c in CASES])
def test_ground_truth_scores_perfectly(tiny, tmp_path, monkeypatch, name, tasks, metrics):
    monkeypatch.chdir(tmp_path)  # the official Cityscapes scripts must not write into the working directory
    results = evaluate(name, tasks, output_dir=str(tmp_path / "out"))
    for key, metric in metrics.items():
        assert results[key][metric] == pytest.approx(100.0), (key, results[key])
    if "panoptic_seg" in results:
        assert results["panoptic_seg"]["PQ_th"] == pytest.approx(100.0)
        assert results["panoptic_seg"]["PQ_st"] == pytest.approx(100.0)
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_cityscapes_per_class_ap_and_subset_evaluation(tiny):
    results = evaluate("mgf_cityscapes_fine_instance_seg_val", ["instance"], limit=1)  # 1 of the 2 images
    segm = results["segm"]
    assert {"AP-person", "AP-rider", "AP-car", "AP-bicycle", "AP50-truck"} <= set(segm)
    present = [v for k, v in segm.items() if k.startswith("AP-") and not np.isnan(v)]
    assert present and all(v == pytest.approx(100.0) for v in present)
    sem = evaluate("mgf_cityscapes_fine_sem_seg_val", ["semantic"])["sem_seg"]
    assert sem["IoU-road"] == pytest.approx(100.0) and sem["mIoU"] == sem["IoU"]


def test_wrong_predictions_score_lower(tiny):
    def drop_first_instance(outputs):
        return {**outputs, "instances": outputs["instances"][1:]}

    def shift_semantic(outputs):
        return {**outputs, "sem_seg": outputs["sem_seg"].roll(1, dims=0)}

    assert evaluate("mgf_coco_2017_val", ["instance"], drop_first_instance)["segm"]["AP"] < 100.0
    assert evaluate("mgf_ade20k_sem_seg_val", ["semantic"], shift_semantic)["sem_seg"]["mIoU"] < 50.0
    assert evaluate("mgf_cityscapes_fine_sem_seg_val", ["semantic"], shift_semantic)["sem_seg"]["mIoU"] < 50.0
    assert evaluate("mgf_cityscapes_fine_instance_seg_val", ["instance"], drop_first_instance)["segm"]["AP"] < 100.0


def test_panoptic_instance_ap_maps_thing_ids_and_drops_stuff(tiny):
    meta = MetadataCatalog.get("mgf_ade20k_panoptic_val")
    wall = meta.stuff_classes.index("wall")

    def add_stuff_prediction(outputs):
        instances = outputs["instances"]
        extra = instances[:1]
        extra.pred_classes = torch.tensor([wall])
        from detectron2.structures import Instances

        return {**outputs, "instances": Instances.cat([instances, extra])}

    results = evaluate("mgf_ade20k_panoptic_val", ["instance"], add_stuff_prediction)
    assert results["segm"]["AP"] == pytest.approx(100.0)  # the stuff-class prediction is not a false positive
    assert "AP-person" in results["segm"] and "AP-wall" not in results["segm"]


def test_synthetic_default_tasks(tmp_path):
    register_synthetic(tmp_path, image_size=48, num_train=1, num_val=2)
    for name in ("mgf_synthetic_val", "mgf_synthetic_val_sem_seg", "mgf_synthetic_val_panoptic"):
        tasks = default_tasks(MetadataCatalog.get(name).evaluator_type)
        results = evaluate(name, None)
        assert len(results) == len(tasks) == 1
        assert all(v == pytest.approx(100.0) for v in [next(iter(r.values())) for r in results.values()])


def test_build_evaluator_errors(tiny):
    with pytest.raises(ValueError, match="valid tasks: \\['instance', 'panoptic', 'semantic'\\]"):
        build_evaluator("mgf_coco_2017_val_panoptic_with_sem_seg", None, ["depth"])
    with pytest.raises(ValueError, match="valid tasks: \\['instance'\\]"):
        build_evaluator("mgf_coco_2017_val", None, ["semantic"])
    with pytest.raises(ValueError, match="with_sem_seg"):
        build_evaluator("mgf_coco_2017_val_panoptic", None, ["semantic"])
    with pytest.raises(KeyError, match="not registered"):
        build_evaluator("no_such_dataset", None)
