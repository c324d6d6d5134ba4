"""tools/class_table.py and the Table-4 grouping written by training runs."""

import importlib.util
import json
from pathlib import Path

import pytest

from mgfusion.evaluation import matching_groupings

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["person", "rider", "motorcycle", "bicycle", "car", "truck", "bus", "train"]


def _tool():
    spec = importlib.util.spec_from_file_location("class_table", REPO / "tools" / "class_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(tmp_path, name, values, file="final_metrics.json"):
    run = tmp_path / name
    run.mkdir()
    segm = {"AP": sum(values) / len(values), **{f"AP-{c}": v for c, v in zip(CLASSES, values)}}
    (run / file).write_text(json.dumps({"results": {"segm": segm}, "iteration": 10}))
    return run


def test_runs_side_by_side_with_group_averages(tmp_path):
    d3 = _run(tmp_path, "D3", [30.4, 23.9, 21.0, 18.5, 52.7, 32.5, 60.5, 45.1])
    d3s2 = _run(tmp_path, "D3S2", [34.4, 26.8, 22.3, 20.1, 55.3, 40.6, 64.6, 48.3], file="eval_metrics.json")
    out = tmp_path / "table.md"
    table = _tool().main([str(d3), str(d3s2), "--out", str(out)])
    lines = table.splitlines()
    assert lines[0] == "| group | class | D3 | D3S2 |"
    assert "| boundary-sensitive | person | 30.4 | 34.4 |" in lines
    # the paper's Table 4 averages: boundary 23.45 / 25.9, rigid 47.7 / 52.2, all 35.6 / 39.05
    assert "| boundary-sensitive | **average** | **23.4** | **25.9** |" in lines
    assert "| large rigid | **average** | **47.7** | **52.2** |" in lines
    assert lines[-1] == "| all | **average** | **35.6** | **39.0** |"
    assert out.read_text() == table + "\n"
    assert matching_groupings(json.loads((d3 / "final_metrics.json").read_text())["results"]) == ["cityscapes"]
    assert matching_groupings({"segm": {"AP-person": 1.0}}) == []


def test_missing_metrics_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no eval_metrics.json or final_metrics.json in .*empty"):
        (tmp_path / "empty").mkdir()
        _tool().main([str(tmp_path / "empty")])
