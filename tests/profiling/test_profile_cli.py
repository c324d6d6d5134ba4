"""tools/profile_encoders.py through its own command line: results are never reused under other settings, never
written by two jobs, never computed from clipped or degenerate images, and bad input ends the tool with a message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgfusion.backbones import build_encoder
from mgfusion.profiling.cli import job_dirname

REPO = Path(__file__).resolve().parents[2]
FAST = ["encoders=[dinov3_micro16,sam2_hiera_micro]", "resolution=[64,64]", "batch_size=2", "num_workers=0",
        "device=cpu", "cost=false", "progress=false", "num_pca_images=0", "max_images=null"]


def _records(out: Path) -> dict[tuple[str, str], dict]:
    lines = (out / "per_image.jsonl").read_text().splitlines()
    recs = {(r["encoder"], r["image_id"]): r for r in map(json.loads, lines)}
    assert len(recs) == len(lines), "no record is stored twice"
    return recs


@pytest.mark.parametrize("arg,message", [
    ("max_images=0", "max_images=0 is invalid: give a positive number of images, or max_images=null to profile"),
    ("max_images=-2", "max_images=-2 is invalid"),
    ("resolution=-5", "resolution=-5 is invalid; accepted forms: resolution=512 (short side"),
    ("resolution=[0,0]", "resolution=[0,0] is invalid; accepted forms"),
    ("resolution=[64]", "resolution=[64] is invalid; accepted forms"),
])
def test_invalid_settings_exit_1_naming_the_key(arg, message, tiny_images, tmp_path, profile_cli):
    res = profile_cli([f"images={tiny_images}", f"output_dir={tmp_path / 'out'}", arg])
    assert res.returncode == 1 and f"[profile] error: {message}" in res.stdout, res.stdout
    assert "Traceback" not in res.stdout and not (tmp_path / "out" / "per_image.jsonl").exists()


def test_foundation_encoder_without_weights_is_refused(tiny_images, tmp_path, profile_cli):
    res = profile_cli([f"images={tiny_images}", f"output_dir={tmp_path / 'out'}",
                       "encoders=[dinov3_vits16,sam2_hiera_micro]"])
    assert res.returncode == 1, res.stdout
    assert ("dinov3_vits16 would be profiled with random initialisation" in res.stdout
            and "weights.dinov3_vits16=/path/to/checkpoint" in res.stdout and "allow_random_init=true" in res.stdout)


@pytest.mark.slow
def test_fingerprint_refuses_other_settings_and_fresh_starts_over(tiny_images, tmp_path, profile_cli):
    """README syntax weights.NAME=FILE works; a changed variant or weights file is refused; fresh=true archives."""
    ckpt = tmp_path / "dinov3_micro16.pth"
    torch.manual_seed(0)
    torch.save(build_encoder("dinov3_micro16").trunk.state_dict(), ckpt)
    out = tmp_path / "out"
    base = [f"images={tiny_images}", f"output_dir={out}", f"weights.dinov3_micro16={ckpt}", *FAST]
    res = profile_cli(base)
    assert res.returncode == 0, res.stdout
    table = (out / "table_sc_ef.md").read_text()
    assert f"- dinov3_micro16: {ckpt} (" in table and "head/tail sha256" in table
    assert "- sam2_hiera_micro: random init, seed 0 (smoke-test architecture" in table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["weights"]["dinov3_micro16"]["identity"]["size"] == ckpt.stat().st_size
    first = {p: (out / p).read_bytes() for p in ("per_image.jsonl", "summary.json", "fingerprint.json")}

    res = profile_cli(base + ["variant=corrected"])
    assert res.returncode == 1 and "differing: metrics" in res.stdout, res.stdout
    assert "metrics.variant: stored 'reference', now 'corrected'" in res.stdout and "fresh=true" in res.stdout
    assert {p: (out / p).read_bytes() for p in first} == first, "a refused run writes nothing"

    torch.manual_seed(1)  # same architecture, other values: same file name, new content
    torch.save(build_encoder("dinov3_micro16").trunk.state_dict(), ckpt)
    res = profile_cli(base)
    assert res.returncode == 1 and "differing: encoders.dinov3_micro16" in res.stdout, res.stdout
    assert "encoders.dinov3_micro16.weights.head_tail_sha256" in res.stdout
    assert {p: (out / p).read_bytes() for p in first} == first

    res = profile_cli(base + ["fresh=true"])
    assert res.returncode == 0, res.stdout
    archived = list((out / "superseded").iterdir())
    assert len(archived) == 1 and (archived[0] / "per_image.jsonl").read_bytes() == first["per_image.jsonl"]
    old = {(r["encoder"], r["image_id"]): r for r in (json.loads(x) for x in first["per_image.jsonl"].splitlines())}
    new = _records(out)
    assert set(new) == set(old)
    assert new[("sam2_hiera_micro", "coffee.png")]["metrics"] == old[("sam2_hiera_micro", "coffee.png")]["metrics"]
    assert new[("dinov3_micro16", "coffee.png")]["metrics"] != old[("dinov3_micro16", "coffee.png")]["metrics"]


@pytest.mark.slow
def test_multirun_jobs_profile_into_their_own_folders(tiny_images, tmp_path, profile_cli):
    out = tmp_path / "sweep"
    res = profile_cli([f"images={tiny_images}", f"output_dir={out}", *FAST, "variant=reference,corrected", "-m"])
    assert res.returncode == 0, res.stdout
    jobs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(jobs) == 2, [p.name for p in out.iterdir()]
    variants = set()
    for job in jobs:
        fp = json.loads((job / "fingerprint.json").read_text())
        variants.add(fp["compared"]["metrics"]["variant"])
        recs = _records(job)
        kinds = [r["kind"] for r in recs.values()]
        assert kinds.count("encoder") == 4 and kinds.count("control") == 4, "2 encoders + noise/pixel controls"
        assert {r["variant"] for r in recs.values()} == {fp["compared"]["metrics"]["variant"]}
        assert len(job.name) <= 80
    assert variants == {"reference", "corrected"}


def test_job_dirname_is_readable_bounded_and_distinct():
    assert job_dirname("variant=corrected") == "variant=corrected"
    assert job_dirname("encoders=[a,b],images=/data/x y") == "encoders=_a,b_,images=_data_x_y"
    a, b = job_dirname("images=/" + "d" * 200 + ",variant=paper"), job_dirname("images=/" + "d" * 200 + ",variant=x")
    assert len(a) == len(b) == 71 and a != b and a.startswith("images=_ddd")


def test_second_job_on_a_locked_folder_fails_fast(tiny_images, tmp_path, profile_cli):
    out = tmp_path / "out"
    code = ("import sys, time; from mgfusion.profiling.lock import RunLock; RunLock(sys.argv[1]).acquire();"
            "print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = profile_cli([f"images={tiny_images}", f"output_dir={out}", *FAST])
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 1, res.stdout
    assert f"lock file {out / '.lock'} is held by pid {holder.pid} on host" in res.stdout
    assert not (out / "per_image.jsonl").exists()


def test_sixteen_bit_tiny_and_elongated_images(tmp_path, profile_cli):
    """A 16-bit PNG gives the numbers of its 8-bit original; 1x1 and 40x400 images are skipped and counted."""
    from skimage import data

    folder = tmp_path / "imgs"
    folder.mkdir()
    rgb = np.asarray(Image.fromarray(data.astronaut()).resize((64, 48)))
    Image.fromarray(rgb).save(folder / "a8.png")
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(folder / "b16.png")  # 16-bit grey
    Image.fromarray(np.repeat(rgb[..., 1:2], 3, axis=2)).save(folder / "c8grey.png")  # its 8-bit twin
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / "dot.png")
    Image.fromarray(np.zeros((40, 400, 3), np.uint8)).save(folder / "strip.png")
    out = tmp_path / "out"
    res = profile_cli([f"images={folder}", f"output_dir={out}", *FAST])
    assert res.returncode == 0, res.stdout
    recs = _records(out)
    assert {iid for _, iid in recs} == {"a8.png", "b16.png", "c8grey.png"}
    for enc in ("dinov3_micro16", "sam2_hiera_micro"):
        assert recs[(enc, "b16.png")]["metrics"] == recs[(enc, "c8grey.png")]["metrics"]
    skipped = (out / "skipped_images.txt").read_text().splitlines()
    assert skipped == [f"dot.png\t{folder / 'dot.png'}: too small: 1x1 px, shorter side 1 < min_image_side=32",
                       (f"strip.png\t{folder / 'strip.png'}: extreme aspect ratio: 40x400 px, long/short side 10.0 > "
                        "max_aspect_ratio=8")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == 3 and summary["skipped_images"] == 2 and summary["failed_images"] == 0
    assert "1 unreadable" not in res.stdout and "2 too small or elongated skipped" in res.stdout


def test_run_without_any_usable_image_exits_1(tmp_path, profile_cli):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "tiny.png")
    out = tmp_path / "out"
    res = profile_cli([f"images={folder}", f"output_dir={out}", *FAST])
    assert res.returncode == 1, res.stdout
    assert ("[profile] error: no image could be profiled: of 2 images, 1 were unreadable" in res.stdout
            and "1 too small or too elongated" in res.stdout)
    assert (out / "failed_images.txt").read_text().startswith(f"broken.png\t{folder / 'broken.png'}: ")
    assert (out / "skipped_images.txt").read_text().startswith("tiny.png\t")
    assert not (out / "summary.json").exists() and not (out / "table_sc_ef.md").exists()
