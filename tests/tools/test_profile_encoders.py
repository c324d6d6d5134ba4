"""tools/profile_encoders.py: outputs, tables, recommendation, failures, resume after SIGKILL, supervised RQ4."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mgfusion.backbones import FusionBackbone
from mgfusion.profiling import run_profile

REPO = Path(__file__).resolve().parents[2]
ENCODERS = ["dinov3_micro16", "sam2_hiera_micro"]


def _settings(images, out, **kw):
    base = {"images": str(images) if images else None, "encoders": ENCODERS, "output_dir": str(out),
            "resolution": [64, 96], "batch_size": 2, "num_workers": 0, "device": "cpu", "variant": "reference",
            "max_images": None, "cost": True, "cost_repeats": 1, "progress": False}
    base.update(kw)
    return base


def test_profile_outputs_tables_recommendation_and_failures(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    summary = run_profile(_settings(image_folder, out))
    assert summary["num_images"] == 6 and summary["failed_images"] == 1
    failed = (out / "failed_images.txt").read_text()
    assert failed.startswith("zz_corrupt.png\t") and str(image_folder / "zz_corrupt.png") in failed
    printed = capsys.readouterr().out
    assert f"skipped unreadable image: {image_folder / 'zz_corrupt.png'}" in printed
    assert "6 images profiled, 1 unreadable skipped" in printed
    lines = (out / "per_image.jsonl").read_text().splitlines()
    assert len(lines) == 6 * (len(ENCODERS) + 2), "every image: each encoder + the noise and pixel controls"
    rec = json.loads(lines[0])
    assert set(rec["metrics"]) == {"4", "8", "16", "32"}
    assert {"SFC", "SCS", "SC", "EC", "NC", "FC", "SP", "EF"} <= set(rec["metrics"]["16"])

    # tables parse and agree with summary.json
    with open(out / "table_sc_ef.csv") as f:
        every = list(csv.DictReader(f))
    rows = [r for r in every if r["kind"] == "encoder"]
    assert [r["encoder"] for r in rows] == ENCODERS
    assert [r["encoder"] for r in every if r["kind"] == "control"] == ["control:noise", "control:pixels"]
    on_disk = json.loads((out / "summary.json").read_text())
    for r in rows:
        for s in (4, 8, 16, 32):
            assert float(r[f"SC_OS{s}"]) == pytest.approx(on_disk["encoders"][r["encoder"]][str(s)]["SC"]["mean"])
            assert 0.0 <= float(r[f"SC_OS{s}"]) <= 1.0 and 0.0 <= float(r[f"EF_OS{s}"]) <= 100.0
    md = (out / "table_sc_ef.md").read_text()
    assert md.splitlines()[0].startswith("| Encoder | SC OS4") and "dinov3_micro16" in md
    for plot in ("plots/sc_ef_vs_stride.png", "plots/pca_maps.png"):
        assert (out / plot).stat().st_size > 5000

    # the recommendation follows the rule and its config builds a fusion backbone with Hydra
    r = on_disk["recommendation"]
    enc = on_disk["encoders"]
    mean_sc = {e: sum(enc[e][s]["SC"]["mean"] for s in enc[e]) / 4 for e in ENCODERS}
    assert r["master"] == max(mean_sc, key=mean_sc.get) and r["auxiliary"] != r["master"]
    aux_ef = {int(s): v["EF"]["mean"] for s, v in enc[r["auxiliary"]].items()}
    assert aux_ef[r["stride"]] == max(aux_ef.values())
    cfg = OmegaConf.load(out / "recommended_fusion.yaml")
    fb = instantiate(cfg)
    assert isinstance(fb, FusionBackbone) and fb.inject_strides == (r["stride"],)
    assert fb.master.registry_name == r["master"]
    with torch.no_grad():
        assert fb.eval()(torch.randn(1, 3, 64, 64))[r["stride"]].shape[1] == fb.master.out_channels[r["stride"]]

    # cost table: every encoder + the fused pair
    models = [c["model"] for c in on_disk["cost"]]
    assert models[:2] == ENCODERS and models[2].startswith("fused ")
    fused = on_disk["cost"][2]
    assert fused["params_M"] == pytest.approx(sum(c["params_M"] for c in on_disk["cost"][:2]), rel=1e-6)
    assert all(c["images_per_s"] > 0 and c["GFLOPs"] > 0 for c in on_disk["cost"])
    assert fused["GFLOPs"] == pytest.approx(sum(c["GFLOPs"] for c in on_disk["cost"][:2]), rel=1e-2)
    # weights are recorded with the tables: these micro encoders are random init by design
    assert [r["weights"] for r in rows] == ["random init, seed 0 (smoke-test architecture without released weights)"] * 2
    assert on_disk["weights"]["dinov3_micro16"]["random_init"] is True and "Weights:" in md
    assert (out / "cost.md").exists()

    # control rows on the same images and strides, and the recommendation's verdict against them
    assert set(on_disk["controls"]) == {"control:noise", "control:pixels"}
    assert all(on_disk["controls"][c][s]["EF"]["count"] == 6 for c in on_disk["controls"] for s in ("4", "32"))
    assert {(c["metric"], c["control"], c["stride"], c["n"]) for c in r["controls"]} == {
        (m, c, r["stride"], 6) for m in ("EF", "SC") for c in ("control:noise", "control:pixels")}
    # random-init micro encoders: their reference EF is below the noise control's, which the profile must say
    noise_ef = next(c for c in r["controls"] if c["metric"] == "EF" and c["control"] == "control:noise")
    assert noise_ef["verdict"] == "does not exceed" and r["controls_pass"] is False
    assert any(w.startswith(f"recommended auxiliary {r['auxiliary']} at OS{r['stride']}: EF does NOT exceed "
                            "control:noise") for w in on_disk["warnings"])
    assert (out / "summary.md").read_text().startswith("# Encoder profile\n\n## WARNING: signal not above the controls")
    assert f"[profile] WARNING: recommended auxiliary {r['auxiliary']}" in printed
    assert "| dinov3_micro16 | 4 | EF | control:noise |" in (out / "controls.md").read_text()


def test_unknown_names_fail_at_start_with_valid_choices(image_folder, tmp_path):
    with pytest.raises(ValueError, match=r"unknown encoder\(s\) \['dinov4'\]; registered encoders: .*sam2_hiera_bplus"):
        run_profile(_settings(image_folder, tmp_path / "a", encoders=["dinov4", "sam2_hiera_micro"]))
    with pytest.raises(ValueError, match="unknown metric variant 'fancy'; valid: reference, paper, corrected"):
        run_profile(_settings(image_folder, tmp_path / "b", variant="fancy"))
    with pytest.raises(ValueError, match="unknown dataset 'no_such_set'; registered datasets: .*mgf_coco_2017_val"):
        run_profile(_settings(None, tmp_path / "c", dataset="no_such_set"))
    assert not (tmp_path / "a" / "per_image.jsonl").exists()


def _cli(args, **popen):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(REPO / "tools" / "profile_encoders.py"), *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def test_killed_run_resumes_without_recomputing(image_folder, tmp_path):
    for i in range(4):  # 10 readable images in total
        (image_folder / f"copy_{i}.png").write_bytes((image_folder / "astronaut.png").read_bytes())
    args = [f"images={image_folder}", f"encoders=[{','.join(ENCODERS)}]", "resolution=[64,96]", "batch_size=1",
            "num_workers=0", "device=cpu", "cost=false", "progress=false", "max_images=null"]
    out = tmp_path / "killed"
    proc = _cli(args + [f"output_dir={out}"])
    jsonl = out / "per_image.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if jsonl.exists() and len(jsonl.read_text().splitlines()) >= 4:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(jsonl.read_text().splitlines())
    assert 4 <= done_before < 40, f"kill came too late: {done_before} records"
    assert not (out / "summary.json").exists()

    resumed = _cli(args + [f"output_dir={out}"])
    log, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, log
    assert f"{done_before // 4} finished images skipped" in log  # 2 encoders + 2 controls per image
    assert f"removed a stale lock {out / '.lock'} left by pid {proc.pid}" in log  # the killed run's lock
    assert not (out / ".lock").exists()
    keys = [(json.loads(line)["encoder"], json.loads(line)["image_id"]) for line in jsonl.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 40, "no image recomputed, none missing"

    fresh = tmp_path / "fresh"  # the same profile without interruption gives the same table
    run_profile(_settings(image_folder, fresh, resolution=[64, 96], batch_size=1, cost=False))
    assert (out / "table_sc_ef.csv").read_text() == (fresh / "table_sc_ef.csv").read_text()


def test_coco_json_with_labels_reports_sc_gt_and_spearman(coco_json, tmp_path):
    out = tmp_path / "rq4"
    summary = run_profile(_settings(coco_json, out, cost=False, resolution=None))
    assert summary["num_images"] == 4
    sup = summary["supervised"]
    assert set(sup["per_encoder"]) == set(ENCODERS)
    for v in sup["per_encoder"].values():
        assert 0.0 <= v["SC_gt"] <= 1.0
    assert sup["spearman_encoders"]["rho"] is None and sup["spearman_encoders"]["n"] == 2, "n < 3: undefined"
    rho = sup["spearman_encoder_stride"]
    assert -1.0 <= rho["rho"] <= 1.0 and rho["n"] == 8 and 0.0 <= rho["p"] <= 1.0
    assert "reconstruction" in (out / "supervised_rq4.md").read_text()
    # EF_gt next to SC_gt, and the label-free EF checked against it per stride (per encoder and pooled)
    rec = json.loads((out / "per_image.jsonl").read_text().splitlines()[0])
    assert {"SC_gt", "EF_gt", "EC_gt", "NC_gt", "EF_gt_lift"} <= set(rec["metrics"]["8"])
    ef = sup["ef_vs_ef_gt"]["per_stride"]
    for s in ("4", "8"):
        assert ef[s]["pooled"]["n"] == 8 and [v["n"] for v in ef[s]["per_encoder"].values()] == [4, 4]
        assert all(0.0 <= v["EF_gt"] <= 100.0 for v in ef[s]["per_encoder"].values())
    assert "## EF vs EF_gt" in (out / "supervised_rq4.md").read_text()


def test_cli_overrides_compose(tmp_path):
    """The documented overrides (incl. dataset=NAME, which must not clash with the training config groups) parse."""
    from hydra import compose, initialize_config_dir

    from mgfusion.profiling.cli import register_hydra_config

    register_hydra_config()  # what the tool does before Hydra composes its config
    with initialize_config_dir(config_dir=str(REPO / "configs" / "tools"), version_base=None):
        cfg = compose("profile_encoders", overrides=[
            "dataset=mgf_synthetic_val_panoptic", "encoders=[dinov3_vitb16,sam2_hiera_micro]", f"output_dir={tmp_path}",
            "max_images=3", "resolution=[64,96]", "device=cpu", "variant=corrected",
            # the README's syntax: new keys in the open maps
            "weights.dinov3_vitb16=ckpt/dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth",
            "encoder_overrides.dinov3_vitb16.neck=raw", "metric_hparams.r1=1", "imports=[my_pkg.my_encoders]",
            # encoders out of training checkpoints, controls, sharding
            "encoders=[dinov3_vitb16,master@outputs/run,auxiliary@outputs/run/model_0000999.pth]",
            "controls.random_init=true", "controls.noise_channels=[8,16,32,64]", "num_processes=2",
            "cost_models=[outputs/run]"])
    assert cfg.dataset == "mgf_synthetic_val_panoptic" and list(cfg.resolution) == [64, 96]
    assert cfg.variant == "corrected" and cfg.max_images == 3
    assert cfg.weights == {"dinov3_vitb16": "ckpt/dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth"}
    assert cfg.encoder_overrides.dinov3_vitb16.neck == "raw" and cfg.metric_hparams.r1 == 1
    assert list(cfg.imports) == ["my_pkg.my_encoders"]
    assert list(cfg.encoders) == ["dinov3_vitb16", "master@outputs/run", "auxiliary@outputs/run/model_0000999.pth"]
    assert cfg.controls.random_init is True and cfg.controls.noise is True and cfg.num_processes == 2
    with (pytest.raises(Exception, match="Could not override .max_imagse."),  # other keys stay closed: typos fail
          initialize_config_dir(config_dir=str(REPO / "configs" / "tools"), version_base=None)):
        compose("profile_encoders", overrides=["max_imagse=3"])


def test_registered_dataset_with_panoptic_labels(tmp_path):
    """dataset=NAME streams a detectron2 dataset; its panoptic labels give SC_gt."""
    from mgfusion.data import register_synthetic

    register_synthetic(root=tmp_path / "data")
    out = tmp_path / "synthetic"
    summary = run_profile(_settings(None, out, dataset="mgf_synthetic_val_panoptic", max_images=3, cost=False,
                                    resolution=None, variant="corrected"))
    assert summary["num_images"] == 3 and summary["failed_images"] == 0
    for enc in ENCODERS:
        assert 0.0 <= summary["encoders"][enc]["16"]["SC_gt"]["mean"] <= 1.0
