"""numpy-2 workarounds and the Table-4 grouped per-class AP table."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from mgfusion.evaluation import (
    cityscapes_numpy2_patches,
    grouped_class_markdown,
    grouped_class_rows,
    load_label_png,
)
from mgfusion.evaluation.compat import to_json_compatible


def test_load_label_png_is_writable_with_the_requested_dtype(tmp_path):
    path = tmp_path / "label.png"
    Image.fromarray(np.array([[1, 255], [3, 4]], dtype=np.uint8)).save(path)
    labels = load_label_png(str(path), dtype=int)
    labels[labels == 255] = 7  # what SemSegEvaluator does in place
    assert labels.dtype == np.int64 and labels.tolist() == [[1, 7], [3, 4]]


def test_cityscapes_patches_are_active_only_inside(tmp_path):
    import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as instance_eval

    had_in1d, original_writer = hasattr(np, "in1d"), instance_eval.writeDict2JSON
    with cityscapes_numpy2_patches(str(tmp_path)):
        assert np.in1d(np.array([[1, 2], [3, 4]]), [2, 3]).tolist() == [False, True, True, False]
        instance_eval.writeDict2JSON({"ap": np.float64(0.5), "n": np.int64(3), "v": np.arange(2)}, "matches.json")
    assert json.loads((tmp_path / "matches.json").read_text()) == {"ap": 0.5, "n": 3, "v": [0, 1]}
    assert hasattr(np, "in1d") == had_in1d and instance_eval.writeDict2JSON is original_writer


def test_to_json_compatible_handles_nested_numpy():
    assert to_json_compatible({1: (np.int32(2), [np.bool_(True)])}) == {"1": [2, [True]]}


RESULTS = {
    "D3": {"segm": {"AP-person": 30.0, "AP-rider": 20.0, "AP-motorcycle": 10.0, "AP-bicycle": float("nan"),
                    "AP-car": 50.0, "AP-truck": 30.0, "AP-bus": 60.0, "AP-train": 40.0}},
    "D3S2": {"segm": {"AP-person": 34.0, "AP-rider": 26.0, "AP-motorcycle": 22.0, "AP-bicycle": 20.0,
                      "AP-car": 55.0, "AP-truck": 40.0, "AP-bus": 64.0, "AP-train": 48.0}},
}  # fmt: skip


def test_grouped_rows_follow_table4():
    rows = grouped_class_rows(RESULTS)
    assert [r["class"] for r in rows] == ["person", "rider", "motorcycle", "bicycle", "average",
                                         "car", "truck", "bus", "train", "average", "average"]  # fmt: skip
    assert [r["group"] for r in rows][::5] == ["boundary-sensitive", "large rigid", "all"]
    assert rows[4]["D3"] == pytest.approx(20.0)  # NaN (no ground truth) is skipped
    assert rows[4]["D3S2"] == pytest.approx(25.5)
    assert rows[9]["D3S2"] == pytest.approx(51.75)
    assert rows[10]["D3S2"] == pytest.approx(38.625)
    assert math.isclose(rows[10]["D3"], (30 + 20 + 10 + 50 + 30 + 60 + 40) / 7)


def test_grouped_markdown_and_errors():
    table = grouped_class_markdown(RESULTS)
    lines = table.splitlines()
    assert lines[0] == "| group | class | D3 | D3S2 |" and len(lines) == 2 + 11
    assert "| boundary-sensitive | bicycle | – | 20.0 |" in lines
    assert "| all | **average** | **34.3** | **38.6** |" in lines
    custom = grouped_class_rows(RESULTS, {"cars": ["car"]})
    assert custom[0]["D3"] == 50.0 and len(custom) == 3
    with pytest.raises(ValueError, match="valid: \\['cityscapes'\\]"):
        grouped_class_rows(RESULTS, "kitti")
    with pytest.raises(KeyError, match="AP-person"):
        grouped_class_rows({"x": {"segm": {}}})
