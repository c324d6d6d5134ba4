"""ResultStore (append, resume, fingerprint, torn last line, doubled records, fresh) and the run-folder lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mgfusion.profiling.fingerprint import (
    FingerprintMismatchError,
    build_fingerprint,
    head_tail_sha256,
    weights_identity,
)
from mgfusion.profiling.lock import RunLock, RunLockedError
from mgfusion.profiling.store import ResultStore, ResultStoreError

REPO = Path(__file__).resolve().parents[2]


def _fp(variant="reference", encoders=("a", "b"), weights=None, count=3):
    return build_fingerprint(
        metrics={"variant": variant, "config": {"r1": 2}, "seed": 0, "supervised": True},
        inputs={"resolution": [64, 64], "max_size": 1024, "amp": False, "projection_free": False},
        encoders={e: {"build": {}, "weights": (weights or {}).get(e, {"kind": "none"})} for e in encoders},
        images={"source": {"kind": "folder", "path": "/data"}, "count": count, "sha256": "x" * 64},
        info={"weights": {e: None for e in encoders}})


def _rec(enc, iid, ef=1.0):
    return {"encoder": enc, "image_id": iid, "metrics": {"4": {"EF": ef}}}


def test_append_resume_and_no_doubles(tmp_path):
    with ResultStore(tmp_path, _fp()) as store:
        assert store.append([_rec("a", "1"), _rec("b", "1")]) == 2
        with pytest.raises(ValueError, match="refusing to store encoder 'a', image '1' twice"):
            store.append([_rec("a", "1")])
        with pytest.raises(ValueError, match="twice"):
            store.append([_rec("a", "2"), _rec("a", "2")])
    with ResultStore(tmp_path, _fp()) as store:  # resume
        assert store.done == {("a", "1"), ("b", "1")}
        store.append([_rec("a", "2")])
        assert [(r["encoder"], r["image_id"]) for r in store.records()] == [("a", "1"), ("b", "1"), ("a", "2")]
    assert not (tmp_path / ".lock").exists(), "a clean close removes the lock file"
    assert json.loads((tmp_path / "fingerprint.json").read_text())["compared"]["metrics"]["variant"] == "reference"


def test_torn_last_line_is_dropped_damaged_or_doubled_lines_are_refused(tmp_path):
    with ResultStore(tmp_path, _fp()) as store:
        store.append([_rec("a", "1"), _rec("a", "2")])
    path = tmp_path / "per_image.jsonl"
    good = path.read_bytes()
    path.write_bytes(good + b'{"encoder": "a", "image_id": "3", "metr')  # a kill in the middle of a write
    with ResultStore(tmp_path, _fp()) as store:
        assert store.done == {("a", "1"), ("a", "2")}
    assert path.read_bytes() == good
    path.write_bytes(good + b"garbage\n" + good.splitlines(keepends=True)[0])
    with pytest.raises(ResultStoreError, match=r"line 3 is not a profiling record"):
        ResultStore(tmp_path, _fp())
    path.write_bytes(good + good.splitlines(keepends=True)[0])
    with pytest.raises(ResultStoreError, match=r"lines 1 and 3 both hold encoder 'a', image '1'"):
        ResultStore(tmp_path, _fp())
    assert not (tmp_path / ".lock").exists(), "a refused open releases the lock"


def test_fingerprint_mismatch_names_keys_and_writes_nothing(tmp_path):
    with ResultStore(tmp_path, _fp()) as store:
        store.append([_rec("a", "1")])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(FingerprintMismatchError) as err:
        ResultStore(tmp_path, _fp(variant="corrected", count=4))
    msg = str(err.value)
    assert "differing: images, metrics" in msg
    assert "metrics.variant: stored 'reference', now 'corrected'" in msg and "images.count: stored 3, now 4" in msg
    assert "output_dir" in msg and "fresh=true" in msg
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before

    other = {"kind": "file", "size": 10, "mtime_ns": 1, "head_tail_sha256": "f" * 64}
    with pytest.raises(FingerprintMismatchError, match=r"encoders\.b\.weights\.kind: stored 'none', now 'file'"):
        ResultStore(tmp_path, _fp(weights={"b": other}))
    # a new encoder is not a mismatch: its entry is added, the others are kept
    with ResultStore(tmp_path, _fp(encoders=("a", "c"))) as store:
        assert store.done == {("a", "1")}
    assert set(json.loads((tmp_path / "fingerprint.json").read_text())["compared"]["encoders"]) == {"a", "b", "c"}


def test_results_without_fingerprint_are_refused_and_fresh_moves_them_aside(tmp_path):
    (tmp_path / "per_image.jsonl").write_text(json.dumps(_rec("a", "1")) + "\n")
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(FingerprintMismatchError, match="has no fingerprint.json next to it"):
        ResultStore(tmp_path, _fp())
    with ResultStore(tmp_path, _fp(), fresh=True) as store:
        assert store.done == set() and store.superseded.parent == tmp_path / "superseded"
        assert (store.superseded / "per_image.jsonl").read_text() == json.dumps(_rec("a", "1")) + "\n"
        assert (store.superseded / "summary.json").exists() and not (tmp_path / "summary.json").exists()


def test_lock_second_writer_fails_fast_and_stale_lock_is_taken_over(tmp_path, capsys):
    with ResultStore(tmp_path, _fp()):
        with pytest.raises(RunLockedError) as err:
            ResultStore(tmp_path, _fp())
        assert str(tmp_path / ".lock") in str(err.value) and f"pid {os.getpid()}" in str(err.value)
    # a holder in another process; killed with SIGKILL it cannot clean up
    code = ("import sys, time; from mgfusion.profiling.lock import RunLock; RunLock(sys.argv[1]).acquire();"
            "print('held', flush=True); time.sleep(300)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"held by pid {proc.pid} on host .* Wait for that job"):
            RunLock(tmp_path).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == proc.pid, "the dead holder's record stays"
    with RunLock(tmp_path) as lock:
        assert lock.stale["pid"] == proc.pid
    assert f"removed a stale lock {tmp_path / '.lock'} left by pid {proc.pid}" in capsys.readouterr().err


def test_weights_identity_catches_same_size_changes(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(bytes(3 << 20))
    a = weights_identity(str(f))
    st = f.stat()
    with open(f, "r+b") as fh:  # change the last byte, keep size and mtime
        fh.seek(-1, os.SEEK_END)
        fh.write(b"\x01")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    b = weights_identity(str(f))
    assert (a["size"], a["mtime_ns"]) == (b["size"], b["mtime_ns"]) and a["head_tail_sha256"] != b["head_tail_sha256"]
    small = tmp_path / "s.bin"
    small.write_bytes(b"abc")
    assert head_tail_sha256(small) == head_tail_sha256(small) and len(head_tail_sha256(small)) == 64
    assert weights_identity(None) == {"kind": "none"} and weights_identity("hub:lvd") == {"kind": "hub", "name": "hub:lvd"}
    with pytest.raises(FileNotFoundError, match="weights file not found: .*nope.pth"):
        weights_identity(str(tmp_path / "nope.pth"))
