"""tools/collect_results.py through its command line: on the paper's numbers in hand-written folders, and end to end
on folders written by tools/profile_encoders.py and tools/train_net.py."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mgfusion.analysis import load_profile
from mgfusion.profiling.selection import argmax_stride
from tests.analysis import writers

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "collect_results.py"
MICRO = ["dinov3_micro16", "sam2_hiera_micro"]


def _tool():
    spec = importlib.util.spec_from_file_location("collect_results", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cli(args, *, cwd=REPO, env=None, timeout=600):
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)


def test_table6_cli_writes_its_files_and_never_overwrites(tmp_path, capsys):
    writers.paper_table6(tmp_path / "multirun")
    prof = writers.profile(tmp_path / "profile", writers.PAPER_TABLE5)
    out = tmp_path / "tables"
    args = [TOOL, "table6", tmp_path / "multirun", "--profile", prof, "--out", out]
    res = _cli(args)
    assert res.returncode == 0, res.stdout
    assert "EF-chosen stride = best stride (AP) in 3 of 4 settings" in res.stdout
    assert {p.name for p in out.iterdir()} == {"table6.md", "table6.csv", "table6_gaps.csv", "table6.png"}
    md = (out / "table6.md").read_text()
    assert "Command: `python tools/collect_results.py table6 " in md and str(prof) in md
    assert (out / "table6.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = [str(a) for a in args[1:]]
    assert _tool().main(args) == 2
    err = capsys.readouterr().err
    assert "4 output file(s) exist already" in err and "nothing was written" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _tool().main([*args, "--overwrite"]) == 0


def test_cli_errors_exit_2_with_the_message(tmp_path, capsys):
    writers.fused_run(tmp_path / "m" / "a", master="d", auxiliary="s", stride=8, ap=1.0, dataset="cityscapes_instance")
    writers.fused_run(tmp_path / "m" / "b", master="d", auxiliary="s", stride=16, ap=2.0, dataset="coco_instance")
    assert _tool().main(["table6", str(tmp_path / "m")]) == 2
    assert "[collect] error: the runs belong to 2 datasets" in capsys.readouterr().err
    assert _tool().main(["table6", str(tmp_path / "m"), "--where", "seed"]) == 2
    assert "--where 'seed': expected KEY=VALUE" in capsys.readouterr().err


def test_rq4_sensitivity_and_cross_dataset_commands_on_the_papers_numbers(tmp_path, capsys):
    d3, s2 = "dinov3_vitb16", "sam2_hiera_bplus"
    for s, ap in zip(writers.STRIDES, [27.1, 32.0, 35.4, 29.2]):
        writers.fused_run(tmp_path / "fused" / f"os{s}", master=d3, auxiliary=s2, stride=s, ap=ap,
                          train_master=False)
    writers.single_run(tmp_path / "base", encoder=d3, ap=24.3, freeze=True)
    prof = writers.profile(tmp_path / "profile", {s2: ([0.5, 0.4, 0.1, 0.4], [6.21, 8.82, 17.89, 13.32]),
                                                  d3: writers.PAPER_TABLE5[d3]})
    tool = _tool()
    assert tool.main(["rq4", "--profile", str(prof), "--fused", str(tmp_path / "fused"), "--baseline",
                      str(tmp_path / "base"), "--out", str(tmp_path / "out")]) == 0
    assert "Spearman ρ = 0.800 (p = 0.200, exact p = 0.333, n = 4)" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "out" / "rq4_ef_gain.csv").open()))
    assert [round(float(r["gain"]), 6) for r in rows] == [2.8, 7.7, 11.1, 4.9]

    writers.profile(tmp_path / "sweep" / "a", writers.PAPER_TABLE5)
    writers.profile(tmp_path / "sweep" / "b", writers.PAPER_TABLE5, hparams={"sfc_grid": 8})
    assert tool.main(["sensitivity", str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0
    assert "keep the recommended stride: **1 of 1**" in capsys.readouterr().out

    writers.profile(tmp_path / "coco", writers.PAPER_TABLE9, dataset="coco_2017_val")
    assert tool.main(["cross-dataset", str(tmp_path / "sweep" / "a"), str(tmp_path / "coco"), "--out",
                      str(tmp_path / "out")]) == 0
    assert "| agree | yes | yes | yes |" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {
        "rq4_ef_gain.md", "rq4_ef_gain.csv", "rq4_correlation.csv", "rq4_ef_gain.png", "sensitivity.md",
        "sensitivity.csv", "sensitivity_recommendations.csv", "sensitivity.png", "cross_dataset.md",
        "cross_dataset.csv", "cross_dataset.png"}


# ---- end to end on folders written by the real tools ------------------------------------------------------------

def _profile_job(root: Path, dataset: str, sfc_grid: int) -> Path:
    for summary in root.rglob("summary.json"):
        fp = json.loads((summary.parent / "fingerprint.json").read_text())["compared"]
        if fp["images"]["source"]["name"] == dataset and fp["metrics"]["config"]["sfc_grid"] == sfc_grid:
            return summary.parent
    raise AssertionError(f"no profile job for {dataset}, sfc_grid={sfc_grid} under {root}")


@pytest.fixture(scope="module")
def real_folders(tmp_path_factory):
    """A profile sweep (2 datasets x 2 sfc_grid values), a 2-stride fused sweep containing the auxiliary's EF
    choice, and the master-only run: 2 training iterations each, micro encoders, synthetic data."""
    tmp = tmp_path_factory.mktemp("e2e")
    env = {"DETECTRON2_DATASETS": str(tmp / "datasets")}
    res = _cli([REPO / "tools" / "profile_encoders.py", "-m", "dataset=mgf_synthetic_val,mgf_synthetic_train",
                "metric_hparams.sfc_grid=8,16", f"encoders=[{','.join(MICRO)}]", "resolution=[128,128]",
                "max_images=4", "batch_size=4", "num_workers=0", "device=cpu", "cost=false", "progress=false",
                "num_pca_images=0", f"output_dir={tmp / 'profiles'}"], cwd=tmp, env=env)
    assert res.returncode == 0, res.stdout[-3000:]
    profile = _profile_job(tmp / "profiles", "mgf_synthetic_val", 16)
    ef_choice = argmax_stride(load_profile(profile).means("sam2_hiera_micro", "EF"))
    strides = sorted({ef_choice, 8 if ef_choice != 8 else 16})
    common = ["model=mask2former_tiny", "dataset=synthetic_instance", "solver=smoke_cpu", "runtime=smoke",
              "solver.max_iter=2"]
    train = REPO / "tools" / "train_net.py"
    res = _cli([train, "-m", "backbone=fusion_micro_d3s2", *common, f"hydra.sweep.dir={tmp / 'multirun'}",
                f"backbone.fusion.stride={','.join(map(str, strides))}"], cwd=tmp, env=env)
    assert res.returncode == 0, res.stdout[-3000:]
    res = _cli([train, "backbone=dinov3_micro16", *common, f"output_dir={tmp / 'master_only'}"], cwd=tmp, env=env)
    assert res.returncode == 0, res.stdout[-3000:]
    return {"tmp": tmp, "profile": profile, "strides": strides, "ef_choice": ef_choice}


@pytest.mark.slow
def test_end_to_end_on_folders_written_by_the_tools(real_folders, capsys):
    tmp, profile = real_folders["tmp"], real_folders["profile"]
    out = tmp / "tables"
    res = _cli([TOOL, "table6", tmp / "multirun", "--profile", profile, "--out", out])
    assert res.returncode == 0, res.stdout
    rows = list(csv.DictReader((out / "table6_gaps.csv").open()))
    assert len(rows) == 1 and rows[0]["ef_stride"] == str(real_folders["ef_choice"])
    assert rows[0]["gap"] != "" and float(rows[0]["gap"]) >= 0.0
    cells = list(csv.DictReader((out / "table6.csv").open()))
    assert sorted(int(c["stride"]) for c in cells) == real_folders["strides"]
    assert all(Path(c["run_folder"]).parent.parent == tmp / "multirun" for c in cells)

    tool = _tool()
    # two of the four profiled strides were trained: correlated over those, and said so
    assert tool.main(["rq4", "--profile", str(profile), "--fused", str(tmp / "multirun"), "--baseline",
                      str(tmp / "master_only"), "--allow-missing", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "undefined for n = 2" in text and "Profiled strides without a fused run (left out)" in text
    assert str(tmp / "master_only") in text

    # the whole profile sweep mixes two image sets: refused; the jobs of one dataset: analysed
    assert tool.main(["sensitivity", str(tmp / "profiles")]) == 2
    assert "differ in images" in capsys.readouterr().err
    val8 = _profile_job(tmp / "profiles", "mgf_synthetic_val", 8)
    assert tool.main(["sensitivity", str(profile), str(val8), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"Baseline (default setting): `{profile}`" in text and "| sfc_grid=8 |" in text

    train16 = _profile_job(tmp / "profiles", "mgf_synthetic_train", 16)
    assert tool.main(["cross-dataset", str(profile), str(train16), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "(dataset mgf_synthetic_val, 4 images)" in text and "(dataset mgf_synthetic_train, 4 images)" in text
    assert len({p.name for p in out.iterdir()}) == 15
