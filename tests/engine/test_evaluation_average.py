"""The average row and the per-target table of an evaluation on several test sets."""

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from mgfusion.engine.evaluation import (
    AVERAGE_KEY,
    average_definition,
    average_over_targets,
    evaluate,
    format_results,
    per_target_table,
    write_metrics_json,
)

RESULTS = {
    "mgf_a_val": {"sem_seg": {"mIoU": 60.0, "IoU-road": 90.0}, "segm": {"AP": 30.0}},
    "mgf_b_val": {"sem_seg": {"mIoU": 40.0}, "segm": {"AP": 20.0}},
    "mgf_c_val": {"sem_seg": {"mIoU": 50.0}},
}


def test_the_average_is_the_mean_of_each_metric_every_target_reports():
    average = average_over_targets(RESULTS)
    assert average == {"sem_seg": {"mIoU": 50.0}, "num_test_sets": 3}  # no AP: mgf_c_val has none
    assert average_definition(average) == "'average' = unweighted mean over the 3 test sets of each one's mIoU"
    nan = average_over_targets({**RESULTS, "mgf_d_val": {"sem_seg": {"mIoU": float("nan")}}})
    assert math.isnan(nan["sem_seg"]["mIoU"]) and nan["num_test_sets"] == 4


def test_the_table_has_one_row_per_target_and_the_average(tmp_path):
    results = {**RESULTS, AVERAGE_KEY: average_over_targets(RESULTS)}
    lines = per_target_table(results).splitlines()
    assert [cell.strip() for cell in lines[0].split("|")[1:-1]] == ["test set", "mIoU (sem_seg)", "AP (segm)"]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines[2:]]
    assert rows == [["mgf_a_val", "60.00", "30.00"], ["mgf_b_val", "40.00", "20.00"], ["mgf_c_val", "50.00", "-"],
                    ["average (mean of 3 test sets)", "50.00", "-"]]  # fmt: skip
    write_metrics_json(str(tmp_path / "m.json"), results, iteration=7)
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["results"][AVERAGE_KEY] == {"sem_seg": {"mIoU": 50.0}, "num_test_sets": 3}
    assert "average/sem_seg" in format_results(results)


def test_a_test_set_named_like_the_average_row_is_refused():
    cfg = OmegaConf.create({"test": ["mgf_a_val", AVERAGE_KEY], "evaluator": {}})
    with pytest.raises(ValueError, match="may not be named 'average'"):
        evaluate(torch.nn.Identity(), cfg, output_dir="unused")
