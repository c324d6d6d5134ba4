"""Reading training run folders: which results file, several test sets, Hydra's own folders, metric names."""

from __future__ import annotations

import json

import pytest
import yaml

from mgfusion.analysis import (
    AnalysisError,
    auxiliary_ef_from_profile,
    build_stride_grid,
    find_run_folders,
    load_profile,
    load_run,
    load_runs,
)
from tests.analysis import writers


def _run(tmp_path):
    return writers.fused_run(tmp_path / "run", master="dinov3_vitb16", auxiliary="sam2_hiera_bplus", stride=16,
                             ap=39.1)


def test_final_or_eval_results_and_their_configs(tmp_path):
    run = _run(tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["eval_only"] = True
    (run / "eval_config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "eval_metrics.json").write_text(json.dumps({"iteration": 5000, "results": {"segm": {"AP": 12.5}}}))
    auto = load_run(run)
    assert auto.metrics_file.name == "final_metrics.json" and auto.value("AP") == 39.1 and auto.iteration == 90000
    assert auto.value("segm/AP50") == pytest.approx(59.1) and auto.flat["eval_only"] is False
    ev = load_run(run, results="eval")
    assert ev.value("AP") == 12.5 and ev.config_file.name == "eval_config.yaml" and ev.flat["eval_only"] is True
    with pytest.raises(AnalysisError, match=r"has no sem_seg/mIoU \(metric 'mIoU'\); it holds \{'segm': "):
        auto.value("mIoU")
    with pytest.raises(AnalysisError, match="unknown metric 'APx'"):
        auto.value("APx")


def test_several_test_sets_need_a_choice(tmp_path):
    run = _run(tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["dataset"]["test"] = ["city_val", "kitti_val"]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "final_metrics.json").write_text(json.dumps({"results": {"city_val": {"segm": {"AP": 30.0}},
                                                                    "kitti_val": {"segm": {"AP": 20.0}}}}))
    with pytest.raises(AnalysisError, match=r"several test sets \['city_val', 'kitti_val'\]; choose one with --test"):
        load_run(run)
    assert load_run(run, test_set="kitti_val").value("AP") == 20.0


def test_hydra_folders_are_skipped_and_overlapping_roots_read_once(tmp_path):
    run = _run(tmp_path)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("backbone: {}\n")  # Hydra's unresolved copy
    (run / "inference").mkdir()
    assert find_run_folders(tmp_path) == [run]
    runs, unfinished = load_runs([tmp_path, run])
    assert [r.folder for r in runs] == [run] and unfinished == []
    with pytest.raises(AnalysisError, match="no training run under"):
        load_runs([run / "inference"])


def test_damaged_files_are_named(tmp_path):
    run = _run(tmp_path)
    (run / "final_metrics.json").write_text('{"iteration": 3, "results": ')
    with pytest.raises(AnalysisError, match=f"{run / 'final_metrics.json'} is not valid JSON"):
        load_run(run)
    (run / "final_metrics.json").write_text('{"iteration": 3}')
    with pytest.raises(AnalysisError, match="has no 'results' mapping"):
        load_run(run)
    (run / "config.yaml").unlink()
    with pytest.raises(AnalysisError, match="no config.yaml; the settings of its results are unknown"):
        load_run(run)


def test_auxiliary_named_otherwise_in_the_profile(tmp_path):
    prof = load_profile(writers.profile(tmp_path / "p", {"sam2_bplus_ft": writers.PAPER_TABLE5["sam2_hiera_bplus"]}))
    with pytest.raises(AnalysisError, match="auxiliary 'sam2_hiera_bplus' is not in profile .*--profile-encoder "
                                            "sam2_hiera_bplus=NAME"):
        auxiliary_ef_from_profile(prof, ["sam2_hiera_bplus"])
    ef = auxiliary_ef_from_profile(prof, ["sam2_hiera_bplus"], {"sam2_hiera_bplus": "sam2_bplus_ft"})
    assert ef == {"sam2_hiera_bplus": ("sam2_bplus_ft", {4: 6.60, 8: 8.59, 16: 17.13, 32: 12.47})}


def test_runs_started_from_random_weights_are_flagged(tmp_path):
    for s, rand in ((8, ["backbone.master (dinov3_vitb16)"]), (16, [])):
        writers.fused_run(tmp_path / f"r{s}", master="dinov3_vitb16", auxiliary="sam2_hiera_bplus", stride=s,
                          ap=30.0, random_init=rand)
    runs, _ = load_runs([tmp_path])
    md = build_stride_grid(runs).markdown()
    assert "**Warning: some runs started from random weights**" in md
    assert f"- `{tmp_path / 'r8'}`: backbone.master (dinov3_vitb16)\n" in md and f"`{tmp_path / 'r16'}`: " not in md
