"""Atomic, weights-only checkpoints: interrupted saves, truncated files, unsafe files, resume fallback."""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from mgfusion.engine import AtomicCheckpointer, CheckpointCorruptError, CheckpointUnsafeError, read_checkpoint
from mgfusion.engine import to_weights_only


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))


def _optimizer_with_state(model: nn.Module) -> torch.optim.Optimizer:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    return opt


def test_saved_checkpoint_round_trips_with_weights_only(tmp_path):
    model = _model()
    opt = _optimizer_with_state(model)
    ckpt = AtomicCheckpointer(model, str(tmp_path), save_to_disk=True, optimizer=opt)
    ckpt.save("model_0000009", iteration=9, extra={"np_scalar": np.float32(0.5), "np_array": np.arange(3)})
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    data = torch.load(tmp_path / "model_0000009.pth", weights_only=True)  # plain types only
    assert data["iteration"] == 9 and data["extra"]["np_scalar"] == 0.5
    assert torch.equal(data["extra"]["np_array"], torch.arange(3))

    other = _model(seed=1)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-3)
    extra = AtomicCheckpointer(other, str(tmp_path), optimizer=other_opt).load(str(tmp_path / "model_0000009.pth"))
    assert extra["iteration"] == 9
    for p, q in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(p, q)
    assert other_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_non_plain_objects_are_rejected_with_their_key_path():
    with pytest.raises(TypeError, match=r"checkpoint\['hooks'\]\['writer'\] is a .*Logger"):
        to_weights_only({"hooks": {"writer": logging.getLogger("x")}})
    sd = nn.Linear(2, 2).state_dict()
    assert hasattr(to_weights_only(sd), "_metadata") and isinstance(to_weights_only(sd), OrderedDict)


def test_a_save_killed_mid_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    model = _model()
    ckpt = AtomicCheckpointer(model, str(tmp_path), save_to_disk=True)
    ckpt.save("model_final", iteration=1)
    good = (tmp_path / "model_final.pth").read_bytes()

    def torch_save_then_die(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # what a signal arriving mid-write looks like to Python

    monkeypatch.setattr(torch, "save", torch_save_then_die)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_final", iteration=2)
    assert (tmp_path / "model_final.pth").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_final.pth"]


@pytest.mark.parametrize("keep", [0, 100, 0.5, -40])
def test_truncated_checkpoint_error_names_the_file(tmp_path, keep):
    model = _model()
    AtomicCheckpointer(model, str(tmp_path), save_to_disk=True).save("model_final", iteration=3)
    path = tmp_path / "model_final.pth"
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointCorruptError, match=rf"checkpoint {path} is truncated or corrupt \({n} bytes"):
        AtomicCheckpointer(_model(), str(tmp_path)).load(str(path))


def test_garbage_and_unsafe_and_missing_files(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointCorruptError, match="truncated or corrupt"):
        read_checkpoint(str(garbage))
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": {}, "obj": logging.getLogger("x")}, unsafe)
    with pytest.raises(CheckpointUnsafeError, match="trusted=True only if you trust its source"):
        read_checkpoint(str(unsafe))
    assert read_checkpoint(str(unsafe), trusted=True)["obj"].name == "x"
    with pytest.raises(FileNotFoundError, match="checkpoint .*missing.pth does not exist"):
        AtomicCheckpointer(_model(), str(tmp_path)).load(str(tmp_path / "missing.pth"))


def test_resume_falls_back_to_the_previous_good_checkpoint(tmp_path, caplog):
    model = _model()
    ckpt = AtomicCheckpointer(model, str(tmp_path), save_to_disk=True)
    ckpt.save("model_0000004", iteration=4)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ckpt.save("model_0000009", iteration=9)
    (tmp_path / ".model_0000014.pth.abc123.tmp").write_bytes(b"PK")  # left by a save killed before os.replace
    newest = tmp_path / "model_0000009.pth"
    newest.write_bytes(newest.read_bytes()[:50])

    restored = _model(seed=5)
    resumer = AtomicCheckpointer(restored, str(tmp_path), save_to_disk=True)
    assert resumer.checkpoint_candidates() == [str(newest), str(tmp_path / "model_0000004.pth")]
    logger = logging.getLogger("mgfusion.engine.checkpoint")
    logger.addHandler(caplog.handler)
    try:
        extra = resumer.resume_or_load("", resume=True)
    finally:
        logger.removeHandler(caplog.handler)
    assert extra["iteration"] == 4 and resumer.resumed_from == str(tmp_path / "model_0000004.pth")
    assert any("model_0000009.pth is truncated or corrupt" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / ".model_0000014.pth.abc123.tmp").exists()
    torch.testing.assert_close(restored[0].weight, model[0].weight - 1.0)

    (tmp_path / "model_0000004.pth").write_bytes(b"")
    with pytest.raises(CheckpointCorruptError, match="no readable checkpoint in .* to resume from"):
        AtomicCheckpointer(_model(), str(tmp_path)).resume_or_load("", resume=True)


def test_without_resume_only_the_given_weights_are_loaded(tmp_path):
    model = _model()
    AtomicCheckpointer(model, str(tmp_path / "a"), save_to_disk=True).save("init")
    fresh = _model(seed=3)
    ckpt = AtomicCheckpointer(fresh, str(tmp_path / "b"))
    ckpt.resume_or_load(str(tmp_path / "a" / "init.pth"), resume=True)  # nothing to resume in b: load weights
    assert ckpt.resumed_from is None and torch.equal(fresh[0].weight, model[0].weight)
