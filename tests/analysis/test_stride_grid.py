"""Table 6 from run folders: the paper's own grid, ties, missing runs, mixed datasets, settings from configs."""

from __future__ import annotations

import csv
import io
import re

import pytest

from mgfusion.analysis import (
    AnalysisError,
    auxiliary_ef_from_profile,
    build_stride_grid,
    load_profile,
    load_runs,
    select_runs,
)
from tests.analysis import writers

D3, S2 = "dinov3_vitb16", "sam2_hiera_bplus"


def _grid(root, profile_dir=None, **kw):
    runs, unfinished = load_runs([root], allow_missing=kw.pop("allow_missing_runs", False))
    ef = None
    if profile_dir is not None:
        ef = auxiliary_ef_from_profile(load_profile(profile_dir), {r.flat["backbone.auxiliary.name"] for r in runs})
    return build_stride_grid(runs, auxiliary_ef=ef, profile=str(profile_dir) if profile_dir else None,
                             unfinished=unfinished, **kw)


def test_paper_table6_marks_the_ef_choice_best_stride_and_gap(tmp_path):
    writers.paper_table6(tmp_path / "multirun")
    prof = writers.profile(tmp_path / "profile", writers.PAPER_TABLE5)
    grid = _grid(tmp_path / "multirun", prof)
    assert grid.metrics == ["AP"] and grid.strides == [4, 8, 16, 32] and grid.dataset == "cityscapes_instance"
    assert grid.setting_keys == ["backbone.auxiliary.name", "backbone.auxiliary.weights", "backbone.master.name",
                                 "backbone.master.weights", "backbone.train_master"]
    assert [(s.name, s.master, s.auxiliary, s.master_training) for s in grid.settings] == [
        ("A", D3, S2, "FT"), ("B", D3, S2, "FZ"), ("C", S2, D3, "FT"), ("D", S2, D3, "FZ")]
    got = {name: (c.ef_stride, c.best_strides, c.gap) for (name, _), c in grid.choices.items()}
    # SAM2's EF peaks at OS16 and DINOv3's at OS32 (paper Table 5); only setting C's best (34.1 at OS16) differs
    assert got["A"] == (16, [16], 0.0) and got["B"] == (16, [16], 0.0) and got["D"] == (32, [32], 0.0)
    assert got["C"][:2] == (32, [16]) and got["C"][2] == pytest.approx(34.1 - 32.2)
    assert grid.verdict("AP") == ("EF-chosen stride = best stride (AP) in 3 of 4 settings; gap best − EF-chosen: "
                                  "mean 0.47, max 1.90 (setting C).")
    md = grid.markdown()
    assert "| A | dinov3_vitb16 | sam2_hiera_bplus | FT | 37.0 | 34.2 | <u>**39.1**</u> | 35.3 | 16 | 16 | 0.0 |" in md
    assert "| C | sam2_hiera_bplus | dinov3_vitb16 | FT | 29.4 | 31.2 | **34.1** | <u>32.2</u> | 32 | 16 | 1.9 |" in md
    for jobs in (1, 7, 12, 15):  # every run folder is named in the report
        assert f"`{tmp_path / 'multirun' / f'job{jobs}'}`" in md
    assert str(prof) in md and "- C: backbone.auxiliary.name=dinov3_vitb16, backbone.auxiliary.weights=/ckpt/dinov3_vitb16.pth, " in md
    rows = list(csv.DictReader(io.StringIO(grid.gaps_csv())))
    assert [(r["setting"], r["ef_stride"], r["best_strides"], r["ef_is_best"]) for r in rows] == [
        ("A", "16", "16", "True"), ("B", "16", "16", "True"), ("C", "32", "16", "False"), ("D", "32", "32", "True")]
    cells = list(csv.DictReader(io.StringIO(grid.csv())))
    assert len(cells) == 16 and {r["run_folder"] for r in cells} == {str(tmp_path / "multirun" / f"job{i}")
                                                                    for i in range(16)}


def test_settings_come_from_configs_not_folder_names(tmp_path):
    root = tmp_path / "multirun"
    # folder names lie on purpose: the config decides the stride and the setting
    writers.fused_run(root / "stride=4,train_master=false", master=D3, auxiliary=S2, stride=16, ap=40.0)
    writers.fused_run(root / "stride=16,train_master=false", master=D3, auxiliary=S2, stride=4, ap=30.0)
    grid = _grid(root)
    (setting,) = grid.settings
    assert setting.master_training == "FT" and {s: r.folder.name for s, r in setting.runs.items()} == {
        16: "stride=4,train_master=false", 4: "stride=16,train_master=false"}
    assert grid.choices[("A", "AP")].best_strides == [16] and grid.choices[("A", "AP")].ef_stride is None
    assert "No profile given" in grid.markdown()


def test_tied_best_strides_are_all_marked_and_the_ef_choice_among_them_has_no_gap(tmp_path):
    root = tmp_path / "multirun"
    for s, ap in zip(writers.STRIDES, [30.0, 35.0, 35.0, 31.0]):
        writers.fused_run(root / f"r{s}", master=D3, auxiliary=S2, stride=s, ap=ap)
    prof = writers.profile(tmp_path / "p", {S2: ([0.5] * 4, [1.0, 2.0, 2.0, 1.5]), D3: ([0.7] * 4, [1.0] * 4)})
    grid = _grid(root, prof)
    c = grid.choices[("A", "AP")]
    assert c.ef_stride == 8  # EF ties at OS8 / OS16 go to the smaller stride
    assert c.best_strides == [8, 16] and c.gap == 0.0 and c.matches
    assert "| <u>**35.0**</u> | **35.0** |" in grid.markdown() and "8, 16 (tie)" in grid.markdown()


def test_nan_results_are_shown_and_never_best(tmp_path):
    root = tmp_path / "multirun"
    for s, ap in zip((8, 16), [None, 20.0]):
        writers.fused_run(root / f"r{s}", master=D3, auxiliary=S2, stride=s, ap=ap)
    c = _grid(root).choices[("A", "AP")]
    assert c.best_strides == [16] and c.best_value == 20.0


def test_missing_cell_is_an_error_naming_setting_and_stride(tmp_path):
    root = tmp_path / "multirun"
    for ft in (True, False):
        for s in (8, 16) if ft else (8,):
            writers.fused_run(root / f"{ft}{s}", master=D3, auxiliary=S2, stride=s, ap=30.0, train_master=ft)
    with pytest.raises(AnalysisError, match=r"1 missing run\(s\):\n  setting B \(backbone.train_master=false\) at "
                                            r"stride 16\n.*--allow-missing"):
        _grid(root)
    grid = _grid(root, allow_missing=True)
    assert grid.missing == [("B", 16)] and "| B | dinov3_vitb16 | sam2_hiera_bplus | FZ | **30.0** | missing |" in \
        grid.markdown()


def test_ef_choice_without_a_run_is_named(tmp_path):
    root = tmp_path / "multirun"
    for s in (4, 8):
        writers.fused_run(root / f"r{s}", master=D3, auxiliary=S2, stride=s, ap=30.0 + s)
    prof = writers.profile(tmp_path / "p", writers.PAPER_TABLE5)
    with pytest.raises(AnalysisError, match=r"setting A at stride 16 \(its auxiliary's EF-chosen stride\)"):
        _grid(root, prof)


def test_unfinished_run_is_named(tmp_path):
    root = tmp_path / "multirun"
    writers.fused_run(root / "a", master=D3, auxiliary=S2, stride=8, ap=30.0)
    writers.fused_run(root / "b", master=D3, auxiliary=S2, stride=16, ap=None, finished=False)
    with pytest.raises(AnalysisError, match=rf"1 run\(s\) have no final_metrics.json.*\n  {tmp_path / 'multirun' / 'b'}\n"):
        load_runs([root])
    grid = _grid(root, allow_missing_runs=True, allow_missing=True)
    assert grid.unfinished[0][0] == root / "b" and f"`{root / 'b'}`" in grid.markdown()


def test_mixed_datasets_are_refused(tmp_path):
    root = tmp_path / "multirun"
    writers.fused_run(root / "a", master=D3, auxiliary=S2, stride=8, ap=30.0, dataset="cityscapes_instance")
    writers.fused_run(root / "b", master=D3, auxiliary=S2, stride=16, ap=31.0, dataset="coco_instance")
    with pytest.raises(AnalysisError, match="(?s)the runs belong to 2 datasets.*cityscapes_instance: .*/a\n  coco_instance: .*/b\n"):
        _grid(root)


@pytest.mark.parametrize("stride,message", [(None, "is null"), ([8, 16], "is [8,16] (several strides)")])
def test_runs_without_one_explicit_stride_are_refused(tmp_path, stride, message):
    writers.fused_run(tmp_path / "r", master=D3, auxiliary=S2, stride=stride, ap=30.0)
    with pytest.raises(AnalysisError, match=re.escape(f"backbone.fusion.stride {message}")):
        _grid(tmp_path)


def test_duplicate_and_single_encoder_runs_are_refused(tmp_path):
    writers.fused_run(tmp_path / "a" / "r1", master=D3, auxiliary=S2, stride=8, ap=30.0)
    writers.fused_run(tmp_path / "a" / "r2", master=D3, auxiliary=S2, stride=8, ap=31.0)
    with pytest.raises(AnalysisError, match="two runs of the same setting at stride 8: .*r1 and .*r2"):
        _grid(tmp_path / "a")
    writers.single_run(tmp_path / "b" / "base", encoder=D3, ap=30.0)
    with pytest.raises(AnalysisError, match="is not a fused run"):
        _grid(tmp_path / "b")


def test_where_selects_a_setting_and_ignore_key_merges(tmp_path):
    root = tmp_path / "multirun"
    for seed, s in ((0, 8), (1, 16)):
        writers.fused_run(root / f"r{s}", master=D3, auxiliary=S2, stride=s, ap=30.0 + s, seed=seed)
    runs, _ = load_runs([root])
    assert len(build_stride_grid(runs, allow_missing=True).settings) == 2  # seed differs: two settings
    assert len(build_stride_grid(runs, ignore_keys=["seed"]).settings) == 1
    assert [r.folder.name for r in select_runs(runs, {"seed": "1"})] == ["r16"]
    with pytest.raises(AnalysisError, match=r"no run matches \{'seed': '2'\}; the runs have \{'seed': \['0', '1'\]\}"):
        select_runs(runs, {"seed": "2"})
