"""No lost or silently wrong work: a finished run is never overwritten without being asked, a resumed run must keep
its config, a run killed while writing its final checkpoint still finishes, checkpoints load strictly, and a
foundation encoder is never randomly initialised without being asked."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from mgfusion.engine import (
    IncompatibleCheckpointError,
    MissingWeightsError,
    RunDirError,
    read_checkpoint,
    run,
)
from mgfusion.engine.run_dir import RESUME_MAY_DIFFER, config_differences, run_name
from tests.engine.helpers import compose_tiny, read_results

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

SAME = ("solver.eval_period=10", "runtime.tensorboard=true")  # the command of the `trained` fixture
PRESERVED = ("model_final.pth", "model_0000019.pth", "final_metrics.json", "config.yaml", "metrics.json",
             "last_checkpoint")


def _snapshot(folder) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in PRESERVED}


def test_rerunning_a_finished_run_is_refused_and_overwrite_moves_it_aside(finished_copy):
    before = _snapshot(finished_copy)
    with pytest.raises(RunDirError, match=rf"output_dir {finished_copy} already holds a training run \(.*"
                                          r"final_metrics.json.*model_final.pth.*\); starting again would overwrite it."
                                          r" Pass resume=true to continue that run \(same config\), or overwrite=true"
                                          r" to start a new run there \(the old run's files are moved, not deleted"):
        run(compose_tiny(finished_copy, *SAME))
    assert _snapshot(finished_copy) == before  # nothing written

    run(compose_tiny(finished_copy, "solver.eval_period=10", "solver.max_iter=3", "overwrite=true"))
    [moved] = finished_copy.glob("overwritten-*")
    assert {name: (moved / name).read_bytes() for name in PRESERVED} == before  # the old run, byte for byte
    assert read_checkpoint(str(finished_copy / "model_final.pth"))["iteration"] == 2  # the new run
    assert {p.name for p in finished_copy.glob("*.pth")} == {"model_final.pth"}  # no stale checkpoints beside it
    assert json.loads((finished_copy / "final_metrics.json").read_text())["iteration"] == 3


def test_resume_with_another_config_is_refused_before_anything_is_written(finished_copy):
    before = _snapshot(finished_copy)
    files = sorted(p.name for p in finished_copy.iterdir())
    with pytest.raises(RunDirError, match=r"resume=true: the config differs from the run's saved .*config.yaml in "
                                          r"2 key\(s\):\n  seed: 0 -> 3\n  solver.base_lr: 0.01 -> 0.02\n"):
        run(compose_tiny(finished_copy, *SAME, "resume=true", "solver.base_lr=0.02", "seed=3"))
    with pytest.raises(RunDirError, match="resume=true and overwrite=true contradict each other"):
        run(compose_tiny(finished_copy, *SAME, "resume=true", "overwrite=true"))
    assert _snapshot(finished_copy) == before and sorted(p.name for p in finished_copy.iterdir()) == files

    # keys that do not change what is trained may differ: the finished run is re-evaluated, nothing retrained
    results = run(compose_tiny(finished_copy, *SAME, "resume=true", "runtime.log_period=1", "runtime.num_workers=1"))
    assert (finished_copy / "model_final.pth").read_bytes() == before["model_final.pth"]
    assert json.loads(json.dumps(results)) == read_results(finished_copy / "final_metrics.json")


def test_config_differences_name_every_changed_leaf():
    saved = {"a": {"b": 1, "c": [1, 2]}, "runtime": {"num_workers": 4}, "resume": False}
    new = {"a": {"b": 2, "c": [1, 2], "d": None}, "runtime": {"num_workers": 0}, "resume": True}
    assert config_differences(saved, new) == ["a.b: 1 -> 2", "a.d: '<absent>' -> None"]
    assert "device" not in RESUME_MAY_DIFFER and "runtime.num_gpus" in RESUME_MAY_DIFFER


def test_run_killed_while_writing_model_final_finishes_on_resume(finished_copy, trained):
    """The state a SIGKILL during the final save leaves (atomic writes): model_0000019.pth complete and pointed at,
    model_final.pth and final_metrics.json absent. Resuming starts at max_iter and must still finish the run."""
    (finished_copy / "model_final.pth").unlink()
    (finished_copy / "final_metrics.json").unlink()
    (finished_copy / "last_checkpoint").write_text("model_0000019.pth")
    results = run(compose_tiny(finished_copy, *SAME, "resume=true"))
    final = read_checkpoint(str(finished_copy / "model_final.pth"))
    last = read_checkpoint(str(finished_copy / "model_0000019.pth"))
    assert final["iteration"] == 19 and final["model"].keys() == last["model"].keys()
    assert all(torch.equal(final["model"][k], v) for k, v in last["model"].items())
    saved = json.loads((finished_copy / "final_metrics.json").read_text())
    assert os.path.isfile(saved["weights"]) and saved["results"] == json.loads(json.dumps(results))
    assert saved["results"] == read_results(trained[0] / "final_metrics.json")
    assert "model_final.pth is missing (interrupted while writing it)" in (finished_copy / "log.txt").read_text()


def test_checkpoint_of_another_model_is_refused_unless_loading_non_strictly(trained, tmp_path):
    other = tmp_path / "other.pth"
    state = read_checkpoint(str(trained[0] / "model_final.pth"))["model"]
    state["head.3.weight"] = state["head.3.weight"][:2]  # another number of classes
    state["extra.weight"] = torch.zeros(3)
    del state["lateral.res5.bias"]
    torch.save({"model": state, "iteration": 7}, other)
    eval_out = tmp_path / "eval"
    with pytest.raises(IncompatibleCheckpointError) as e:
        run(compose_tiny(eval_out, "eval_only=true", f"weights={other}"))
    message = str(e.value)
    assert f"checkpoint {other} does not match the model (strict loading)" in message
    assert "missing keys (2): head.3.weight, lateral.res5.bias" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "shape mismatches (1): head.3.weight (checkpoint (2, 16, 1, 1), model (3, 16, 1, 1))" in message
    assert "backbone.master.weights=FILE" in message and "weights_strict=false" in message
    assert not (eval_out / "eval_metrics.json").exists()

    run(compose_tiny(eval_out, "eval_only=true", f"weights={other}", "weights_strict=false"))
    saved = json.loads((eval_out / "eval_metrics.json").read_text())
    assert saved["weights_strict"] is False and saved["iteration"] == 7
    assert saved["weights_not_loaded"] == {"missing": ["head.3.weight", "lateral.res5.bias"],
                                           "unexpected": ["extra.weight"], "shape_mismatch": ["head.3.weight"]}
    assert "NON-STRICT LOADING" in (eval_out / "log.txt").read_text()


def test_training_from_weights_of_another_model_is_refused(trained, tmp_path):
    with pytest.raises(IncompatibleCheckpointError, match="does not match the model"):
        run(compose_tiny(tmp_path / "run", f"weights={trained[0] / 'model_final.pth'}", "backbone.width=4"))


def test_foundation_encoder_without_weights_is_refused_before_anything_runs(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(MissingWeightsError, match="backbone.weights is not set, so the foundation encoder "
                                                  "'sam2_hiera_t' would be trained from random initialisation"):
        run(compose_tiny(out, "backbone=sam2_hiera_t"))
    assert not out.exists() and not (tmp_path / "data").exists()  # checked before the data and the output folder


def test_run_names_are_bounded_unique_stable_and_usable_in_overrides():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    long = ",".join(f"dataset.register.path_{i}=/some/very/long/folder/name/number/{i}" for i in range(8))
    name = run_name(long)
    assert len(name) <= 91 and name.startswith("dataset.register.path_0-_some_very_long_folder_name_number_0+")
    assert name == run_name(long) and name != run_name(long + "x")
    assert re.fullmatch(r"solver.max_iter-10\+seed-1-[0-9a-f]{10}", run_name("solver.max_iter=10,seed=1"))
    assert run_name("") == "default" and run_name("a=/b") != run_name("a=_b")  # the hash keeps names distinct
    odd = run_name("model.list=[1,2],name='a b',x=y:z")
    weights = f"weights=outputs/x/y/{odd}/model_final.pth"
    assert OverridesParser.create().parse_override(weights).value() == weights[len("weights="):]


def test_eval_only_in_a_training_folder_keeps_the_run_and_a_second_evaluation_needs_overwrite(finished_copy):
    def files(folder):
        return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    before = files(finished_copy)
    assert any(name.startswith("inference/") for name in before)  # the final evaluation's evaluator files
    weights = f"weights={finished_copy / 'model_final.pth'}"
    run(compose_tiny(finished_copy, *SAME, "eval_only=true", weights))
    after = files(finished_copy)
    assert {k: after[k] for k in before if k != "log.txt"} == {k: v for k, v in before.items() if k != "log.txt"}
    first_eval = json.loads((finished_copy / "eval_metrics.json").read_text())
    assert first_eval["iteration"] == 19 and any(k.startswith("eval_inference/") for k in after)

    with pytest.raises(RunDirError, match=rf"output_dir {finished_copy} already holds an evaluation "
                                          r"\(eval_metrics.json\); evaluating again would overwrite it. "
                                          r"Pass overwrite=true"):
        run(compose_tiny(finished_copy, *SAME, "eval_only=true", weights))
    assert files(finished_copy) == after  # nothing written

    run(compose_tiny(finished_copy, *SAME, "eval_only=true", weights, "overwrite=true"))
    [moved] = finished_copy.glob("overwritten-*")
    assert json.loads((moved / "eval_metrics.json").read_text()) == first_eval
    assert (moved / "eval_inference").is_dir() and not (moved / "model_final.pth").exists()
    final = files(finished_copy)
    assert {k: final[k] for k in before if k != "log.txt"} == {k: v for k, v in before.items() if k != "log.txt"}


def test_a_drawn_seed_is_kept_for_resume_and_moved_aside_by_overwrite(tmp_path):
    out = tmp_path / "drawn"
    run(compose_tiny(out, "seed=null", "solver.max_iter=2"))
    seed = int((out / "drawn_seed.txt").read_text())
    assert f"seed {seed}, output" in (out / "log.txt").read_text()
    run(compose_tiny(out, "seed=null", "solver.max_iter=2", "resume=true"))
    assert f"resuming with the seed drawn when the run started ({seed}," in (out / "log.txt").read_text()
    assert int((out / "drawn_seed.txt").read_text()) == seed
    run(compose_tiny(out, "seed=null", "solver.max_iter=2", "overwrite=true"))
    [moved] = out.glob("overwritten-*")
    assert int((moved / "drawn_seed.txt").read_text()) == seed and (out / "drawn_seed.txt").is_file()
