"""tools/predict.py end to end as a user runs it: a folder with an unreadable file and a short video."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.inference.helpers import ROOT, trained_tiny_run, val_images

PREDICT = ROOT / "tools" / "predict.py"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return trained_tiny_run(tmp_path_factory.getbasetemp())  # shared with tests/inference in one session


def _predict(*overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    return subprocess.run([sys.executable, str(PREDICT), "device=cpu", "progress=false", *overrides], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def _write_video(path: Path, frames: int, fps: float, size: tuple[int, int]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size[1], size[0]))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(frames):
        frame = np.full((*size, 3), 40 + 30 * i, dtype=np.uint8)
        frame[8:40, 10 + 4 * i:42 + 4 * i] = rng.integers(0, 255, 3)
        writer.write(frame)
    writer.release()


@pytest.mark.slow
def test_predict_folder_with_unreadable_file_and_video_then_resume(tiny_run, tmp_path):
    inputs = tmp_path / "inputs"
    (inputs / "sub").mkdir(parents=True)
    for image in val_images(tiny_run)[:2]:
        shutil.copy(image, inputs / image.name)
    shutil.copy(val_images(tiny_run)[2], inputs / "sub" / "000001.png")  # same file name, other folder
    (inputs / "broken.png").write_bytes(b"not an image")
    _write_video(inputs / "clip.mp4", frames=5, fps=7.0, size=(48, 64))
    out = tmp_path / "out"

    done = _predict(f"run={tiny_run}", f"input={inputs}", f"output={out}", "batch_size=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"unreadable input skipped: {inputs / 'broken.png'}" in done.stderr
    assert "4 written, 0 already done, 1 unreadable" in done.stdout  # 3 images + the video
    for name in ("000001", "000002", "sub/000001"):
        for kind, ext in (("overlay", "png"), ("semantic", "png"), ("instances", "json"), ("panoptic", "png"),
                          ("panoptic", "json")):
            assert (out / kind / f"{name}.{ext}").is_file(), (kind, name)
    cap = cv2.VideoCapture(str(out / "video" / "clip.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(7.0)
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (64, 48)
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == 5
    manifest = json.loads((out / "predict_manifest.json").read_text())
    assert manifest["fingerprint"]["outputs"] == ["overlay", "semantic", "instances", "panoptic"]

    again = _predict(f"run={tiny_run}", f"input={inputs}", f"output={out}", "batch_size=2")
    assert again.returncode == 0 and "0 written, 4 already done, 1 unreadable" in again.stdout

    refused = _predict(f"run={tiny_run}", f"input={inputs}", f"output={out}", "score_threshold=0.9")
    assert refused.returncode == 2 and "score_threshold" in refused.stderr


def test_predict_exits_non_zero_when_nothing_can_be_read(tiny_run, tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8 truncated")
    listing = tmp_path / "list.txt"
    listing.write_text("a.jpg\nmissing.png\n")
    result = _predict(f"run={tiny_run}", f"input={listing}", f"output={tmp_path / 'out'}", "test_time=tta")
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"unreadable input skipped: {tmp_path / 'a.jpg'}" in result.stderr
    assert f"{tmp_path / 'missing.png'}" in result.stderr and "no input could be read" in result.stderr
