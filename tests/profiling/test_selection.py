"""mgfusion.profiling.selection: pairing rules with three or more encoders, tie rules, reading a saved profile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mgfusion.profiling.selection import argmax_stride, read_profile_ef, recommend_pair


def _summary(table: dict[str, tuple[list[float], list[float]]]) -> dict:
    """{encoder: (SC per stride 4..32, EF per stride 4..32)} -> summary layout."""
    return {e: {s: {"SC": {"mean": sc[i]}, "EF": {"mean": ef[i]}} for i, s in enumerate((4, 8, 16, 32))}
            for e, (sc, ef) in table.items()}


def test_three_encoders_master_by_mean_sc_auxiliary_by_peak_ef():
    summary = _summary({
        "b_structure": ([0.9, 0.9, 0.8, 0.8], [5, 6, 7, 8]),       # mean SC 0.85: master
        "c_edges": ([0.5, 0.5, 0.5, 0.5], [10, 30, 20, 5]),       # peak EF 30 (OS8): auxiliary
        "a_flat": ([0.6, 0.6, 0.6, 0.6], [25, 25, 25, 25]),       # peak 25: loses to c_edges despite its mean
    })
    rec = recommend_pair(summary)
    assert (rec.master, rec.auxiliary, rec.stride) == ("b_structure", "c_edges", 8)
    assert rec.master_sc == pytest.approx(0.85) and rec.auxiliary_sc == pytest.approx(0.5)
    assert rec.auxiliary_ef == {4: 10, 8: 30, 16: 20, 32: 5}
    # the master's own EF never makes it the auxiliary, however high
    summary["b_structure"] = {s: {"SC": v["SC"], "EF": {"mean": 99.0}} for s, v in summary["b_structure"].items()}
    assert recommend_pair(summary).auxiliary == "c_edges"


def test_ties_go_to_name_order_and_the_smaller_stride():
    summary = _summary({
        "zeta": ([0.8] * 4, [1, 2, 3, 4]),
        "alpha": ([0.8] * 4, [1, 2, 3, 4]),         # same mean SC as zeta: alpha sorts first -> master
        "mid": ([0.1] * 4, [7, 9, 9, 2]),           # peak 9 at OS8 and OS16 -> OS8
        "late": ([0.2] * 4, [9, 1, 1, 1]),          # also peak 9: 'late' sorts before 'mid' -> auxiliary
    })
    rec = recommend_pair(summary)
    assert (rec.master, rec.auxiliary, rec.stride) == ("alpha", "late", 4)
    del summary["late"]
    assert recommend_pair(summary).auxiliary == "mid" and recommend_pair(summary).stride == 8
    # dictionary order never matters
    assert recommend_pair(dict(reversed(list(summary.items())))) == recommend_pair(summary)


def test_argmax_stride_and_errors():
    assert argmax_stride({32: 5.0, 4: 5.0, 8: 1.0}) == 4
    assert argmax_stride({"16": 2.0, "8": 1.0}) == 16
    with pytest.raises(ValueError, match="non-finite"):
        argmax_stride({4: float("nan"), 8: 1.0})
    with pytest.raises(ValueError, match="at least two profiled encoders"):
        recommend_pair(_summary({"only": ([0.5] * 4, [1] * 4)}))
    bad = _summary({"a": ([0.5] * 4, [1] * 4), "b": ([0.4] * 4, [2] * 4)})
    bad["b"][16]["EF"]["mean"] = None
    with pytest.raises(ValueError, match="encoder 'b' has no finite mean EF at stride 16"):
        recommend_pair(bad)


def test_read_profile_ef(tmp_path):
    summary = _summary({"m": ([0.9] * 4, [1, 2, 3, 4]), "x": ([0.2] * 4, [5, 9, 7, 1])})
    payload = {"encoders": {e: {str(s): v for s, v in d.items()} for e, d in summary.items()},
               "recommendation": recommend_pair(summary).to_dict()}
    (tmp_path / "summary.json").write_text(json.dumps(payload))
    assert read_profile_ef(tmp_path) == ("x", {4: 5.0, 8: 9.0, 16: 7.0, 32: 1.0})       # folder, default auxiliary
    assert read_profile_ef(tmp_path / "summary.json", "m") == ("m", {4: 1.0, 8: 2.0, 16: 3.0, 32: 4.0})
    with pytest.raises(KeyError, match="encoder 'q' is not in profile .*profiled: m, x"):
        read_profile_ef(tmp_path, "q")
    with pytest.raises(FileNotFoundError, match="run tools/profile_encoders.py first"):
        read_profile_ef(tmp_path / "nowhere")
    del payload["recommendation"]
    (tmp_path / "summary.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="has no recommendation; pass the auxiliary encoder's name"):
        read_profile_ef(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not a valid profile summary"):
        read_profile_ef(tmp_path)


def test_selection_is_a_leaf_module_that_the_fusion_backbone_reuses():
    """Importing the selection rules pulls in no torch; the fusion backbone uses these very functions."""
    code = ("import sys, mgfusion.profiling.selection as s; assert 'torch' not in sys.modules, 'torch imported';"
            "import mgfusion.backbones.fusion as f; assert f.argmax_stride is s.argmax_stride;"
            "assert f.read_profile_ef is s.read_profile_ef; assert 'mgfusion.profiling.runner' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
