"""Encoders taken out of a training checkpoint (PART@PATH): exact, strict loading and the before/after table."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from mgfusion.backbones import CheckpointMismatchError
from mgfusion.profiling.finetuned import (
    finetuned_encoder,
    initial_encoder,
    part_state_dict,
    resolve_checkpoint_part,
)
from mgfusion.profiling.settings import ProfileConfigError

pytestmark = pytest.mark.slow  # trains the demo model once per session (~20 s on 2 cores)

CPU = torch.device("cpu")
SIGNATURE = "tuning_signature"


def without_signature(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.endswith(SIGNATURE)}


@pytest.mark.parametrize("part", ["master", "auxiliary"])
def test_encoder_from_checkpoint_has_exactly_the_checkpoint_entries(demo_run, part):
    ckpt = torch.load(demo_run / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    prefix = f"backbone.encoder.{part}."
    # every parameter and buffer; the tuning-mode record (tuning_signature) says how it was trained, and the
    # profiled copy is frozen whatever the run's mode
    expected = {k[len(prefix):]: v for k, v in ckpt.items() if k.startswith(prefix) and not k.endswith(SIGNATURE)}
    assert len(expected) > 20
    for entry in (f"{part}@{demo_run}", f"{part}@{demo_run / 'model_final.pth'}"):  # folder or file
        cp = resolve_checkpoint_part(entry)
        assert cp.name == f"{part}@{demo_run.name}" and cp.registry_name == {"master": "dinov3_micro16",
                                                                            "auxiliary": "sam2_hiera_micro"}[part]
        state = without_signature(finetuned_encoder(cp, CPU).state_dict())
        assert set(state) == set(expected)
        assert all(torch.equal(state[k], expected[k]) for k in expected)
    initial = without_signature(initial_encoder(cp, CPU).state_dict())
    same = all(torch.equal(initial[k], expected[k]) for k in expected)
    # the auxiliary is frozen in the fusion backbone: its checkpoint entries are its initial weights; the master was
    # trained from random init (the run had no weights for it), which the profile re-draws with its own seed
    assert same is (part == "auxiliary")


def test_checkpoint_loading_is_strict_and_errors_name_the_problem(demo_run, tmp_path):
    ckpt = torch.load(demo_run / "model_final.pth", map_location="cpu", weights_only=True)
    run = tmp_path / "edited"
    run.mkdir()
    (run / "config.yaml").write_text((demo_run / "config.yaml").read_text())
    dropped = next(k for k in ckpt["model"] if k.startswith("backbone.encoder.master.trunk.blocks.0."))
    broken = {**ckpt, "model": {k: v for k, v in ckpt["model"].items() if k != dropped}}
    broken["model"]["backbone.encoder.master.extra_tensor"] = torch.zeros(1)
    torch.save(broken, run / "model_final.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        finetuned_encoder(resolve_checkpoint_part(f"master@{run}"), CPU)
    assert dropped[len("backbone.encoder.master."):] in str(err.value) and "extra_tensor" in str(err.value)
    with pytest.raises(ProfileConfigError, match="trained a fusion backbone; profile one of its encoders with "
                                                 "master@PATH or auxiliary@PATH"):
        resolve_checkpoint_part(f"encoder@{demo_run}")
    with pytest.raises(ProfileConfigError, match="config.yaml not found"):
        (tmp_path / "lonely").mkdir()
        torch.save(ckpt, tmp_path / "lonely" / "model_final.pth")
        resolve_checkpoint_part(f"master@{tmp_path / 'lonely'}")
    with pytest.raises(ProfileConfigError, match="encoders entry 'student@x' is invalid"):
        from mgfusion.profiling.settings import split_checkpoint_entry
        split_checkpoint_entry("student@x")
    assert set(part_state_dict(demo_run / "model_final.pth", "auxiliary")) == set(
        finetuned_encoder(resolve_checkpoint_part(f"auxiliary@{demo_run}"), CPU).state_dict())


def test_tool_writes_before_after_table_and_fingerprints_the_checkpoint(demo_run, tiny_images, tmp_path, profile_cli):
    out = tmp_path / "ft"
    args = [f"images={tiny_images}", f"encoders=[master@{demo_run},auxiliary@{demo_run}]", f"output_dir={out}",
            "resolution=[64,64]", "num_workers=0", "device=cpu", "cost_repeats=1", "progress=false",
            "num_pca_images=1", "variant=corrected", "controls.random_init=true"]
    res = profile_cli(args)
    assert res.returncode == 0, res.stdout
    assert f"before/after fine-tuning: {out / 'before_after.md'}" in res.stdout
    with open(out / "before_after.csv") as f:
        rows = list(csv.DictReader(f))
    name = demo_run.name
    assert [(r["encoder"], r["initial"], r["stride"]) for r in rows] == [
        (f"{p}@{name}", f"{p}@{name}:initial", s) for p in ("master", "auxiliary") for s in ("4", "8", "16", "32")]
    aux = [r for r in rows if r["encoder"].startswith("auxiliary")]
    assert all(r["SC_before"] == r["SC_after"] and r["EF_before"] == r["EF_after"] for r in aux), "frozen: no change"
    md = (out / "before_after.md").read_text()
    assert "random init, seed 0: the run had no initial weights for this encoder" in md  # the master's "before"
    assert "the run kept this encoder frozen" in md and "iteration 1" in md
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["before_after"]) == {f"master@{name}", f"auxiliary@{name}"}
    # random-init controls of every row whose weights are not random already (not the master's random "before")
    assert set(summary["controls"]) == {"control:noise", "control:pixels", f"control:random_init[master@{name}]",
                                        f"control:random_init[auxiliary@{name}]",
                                        f"control:random_init[auxiliary@{name}:initial]"}
    against = {(c["encoder"], c["control"]) for c in summary["control_comparisons"]}
    assert (f"master@{name}", f"control:random_init[master@{name}]") in against
    fp = json.loads((out / "fingerprint.json").read_text())["compared"]["encoders"][f"master@{name}"]
    assert fp["weights"]["kind"] == "checkpoint" and fp["weights"]["prefix"] == "backbone.encoder.master."
    assert fp["build"]["node"]["name"] == "dinov3_micro16" and len(fp["weights"]["head_tail_sha256"]) == 64
    # the whole model of the run, at the paper's 1024x2048, in cost.md
    model = summary["model_cost"][0]
    assert model["input"] == "1024x2048" and model["model"] == str(demo_run)
    assert "Whole segmentation model" in (out / "cost.md").read_text()

    # a changed checkpoint is a different encoder: the stored rows are not reused
    ckpt = torch.load(demo_run / "model_final.pth", map_location="cpu", weights_only=True)
    key = "backbone.encoder.master.trunk.cls_token"
    ckpt["model"][key] = ckpt["model"][key] + 1.0
    run2 = tmp_path / name
    run2.mkdir()
    (run2 / "config.yaml").write_text((demo_run / "config.yaml").read_text())
    torch.save(ckpt, run2 / "model_final.pth")
    res = profile_cli([a.replace(str(demo_run), str(run2)) for a in args])
    assert res.returncode == 1 and f"encoders.master@{name}" in res.stdout, res.stdout


def test_encoder_behind_a_fixed_size_input_wrapper_is_taken_out_of_the_checkpoint(tmp_path):
    """The SAM/SAM2 baselines at 1024x1024 (configs/backbone/*_1024.yaml) wrap the encoder in FixedSizeInput: the
    run config holds it under backbone.encoder and the checkpoint under backbone.encoder.encoder.*."""
    from omegaconf import OmegaConf

    from mgfusion.backbones import FixedSizeInput, build_encoder

    torch.manual_seed(3)
    wrapper = FixedSizeInput(encoder=build_encoder("sam2_hiera_micro"), input_size=64)
    run = tmp_path / "s2_ft_run"
    run.mkdir()
    node = {"_target_": "mgfusion.backbones.build_encoder", "name": "sam2_hiera_micro", "weights": None,
            "freeze": False}
    OmegaConf.save({"backbone": {"_target_": "mgfusion.backbones.FixedSizeInput", "input_size": [64, 64],
                                 "fill": "zeros", "encoder": node}, "weights": None}, run / "config.yaml")
    model = {f"backbone.encoder.{k}": v for k, v in wrapper.state_dict().items()}
    model["sem_seg_head.dummy"] = torch.zeros(2)
    torch.save({"model": model, "iteration": 5}, run / "model_final.pth")

    part = resolve_checkpoint_part(f"encoder@{run}")
    assert part.prefix == "backbone.encoder.encoder." and part.registry_name == "sam2_hiera_micro"
    state = without_signature(finetuned_encoder(part, CPU).state_dict())
    expected = without_signature(wrapper.encoder.state_dict())
    assert set(state) == set(expected) and all(torch.equal(state[k], expected[k]) for k in expected)
