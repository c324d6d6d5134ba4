"""End-to-end in-process runs of mgfusion.engine.run on the tiny detectron2 model + dataset: outputs, metrics,
evaluation-only reproduction, and interrupted-then-resumed training reaching the very same model."""

from __future__ import annotations

import json

import pytest
import torch
from detectron2.engine.hooks import CallbackHook
from detectron2.utils.env import seed_all_rng
from omegaconf import OmegaConf

from mgfusion.engine import CheckpointCorruptError, Trainer, read_checkpoint, register_datasets, run

from tests.engine.helpers import compose_tiny, read_json_lines, read_results

# detectron2's SemSegEvaluator calls np.array(tensor, dtype=int) (numpy 2 deprecation inside detectron2)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def test_training_writes_checkpoints_logs_and_final_metrics(trained):
    out, cfg, results = trained
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert {p.name for p in out.glob("*.pth")} == {"model_0000009.pth", "model_0000019.pth", "model_final.pth"}
    assert read_checkpoint(str(out / "model_0000009.pth"))["iteration"] == 9
    assert OmegaConf.load(out / "config.yaml") == OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    assert not (out / "eval_config.yaml").exists() and not (out / "overrides.txt").exists()  # no Hydra overrides
    assert list(out.glob("events.out.tfevents.*"))  # TensorBoard
    assert (out / "log.txt").read_text().count("eta: ") >= 4  # progress lines with ETA

    rows = read_json_lines(out / "metrics.json")
    losses = [r["total_loss"] for r in rows if "total_loss" in r]
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0]
    lrs = {r["iteration"]: r["lr"] for r in rows if "lr" in r}
    assert lrs[4] == pytest.approx(0.01 * (1 - 4 / 20)) and lrs[19] == pytest.approx(0.01 * (1 - 19 / 20))
    periodic = [r for r in rows if "sem_seg/mIoU" in r]
    assert [r["iteration"] for r in periodic] == [9, 20]  # periodic evaluation, then the final one (after train)

    final = json.loads((out / "final_metrics.json").read_text())
    assert final["iteration"] == 20 and final["weights"].endswith("model_final.pth")
    assert (final["init_weights"], final["weights_strict"], final["random_init"]) == (None, True, [])
    assert final["results"] == json.loads(json.dumps(results))
    assert set(results) == {"sem_seg"} and results["sem_seg"]["mIoU"] == pytest.approx(periodic[-1]["sem_seg/mIoU"])


def test_eval_only_reproduces_the_final_metrics(trained, tmp_path):
    out, _, results = trained
    eval_out = tmp_path / "eval"
    again = run(compose_tiny(eval_out, "eval_only=true", f"weights={out / 'model_final.pth'}"))
    assert json.loads(json.dumps(again)) == read_results(out / "final_metrics.json")
    saved = json.loads((eval_out / "eval_metrics.json").read_text())
    assert saved["iteration"] == 19 and saved["results"] == read_results(out / "final_metrics.json")
    assert saved["weights_strict"] is True and "weights_not_loaded" not in saved
    assert (eval_out / "eval_config.yaml").exists() and not (eval_out / "config.yaml").exists()


def test_eval_only_on_a_truncated_checkpoint_names_the_file(trained, tmp_path):
    out, _, _ = trained
    broken = tmp_path / "model_final.pth"
    broken.write_bytes((out / "model_final.pth").read_bytes()[:1000])
    with pytest.raises(CheckpointCorruptError, match=rf"checkpoint {broken} is truncated or corrupt \(1000 bytes"):
        run(compose_tiny(tmp_path / "eval", "eval_only=true", f"weights={broken}"))
    with pytest.raises(ValueError, match="eval_only=true needs weights=PATH"):
        run(compose_tiny(tmp_path / "eval", "eval_only=true"))


def test_interrupted_run_resumes_to_the_same_model(tmp_path):
    """Crash after iteration 6, corrupt the newest checkpoint (iteration 5), resume: the run falls back to the
    iteration-2 checkpoint with a warning and still ends with exactly the uninterrupted run's weights, with
    2 micro-batches per step (the resumed sample stream must skip 2 x 3 micro-batches)."""
    common = ["solver.max_iter=8", "solver.checkpoint_period=3", "solver.grad_accum_steps=2"]
    reference = tmp_path / "reference"
    run(compose_tiny(reference, *common))

    out = tmp_path / "interrupted"
    cfg = compose_tiny(out, *common)
    run_dir = str(out)
    register_datasets(cfg.dataset)
    seed_all_rng(0)  # as run() does for rank 0 with seed 0

    def crash(trainer):
        if trainer.iter == 6:
            raise RuntimeError("simulated crash")

    trainer = Trainer(cfg, output_dir=run_dir, seed=0)
    trainer.register_hooks([CallbackHook(after_step=crash)])
    trainer.resume_or_load(resume=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.train()
    del trainer
    assert {p.name for p in out.glob("*.pth")} == {"model_0000002.pth", "model_0000005.pth"}
    newest = out / "model_0000005.pth"
    newest.write_bytes(newest.read_bytes()[:-64])

    run(compose_tiny(out, *common, "resume=true"))
    log = (out / "log.txt").read_text()
    assert "model_0000005.pth is truncated or corrupt" in log and "Resuming at iteration 3 of 8" in log
    final, expected = read_checkpoint(str(out / "model_final.pth")), read_checkpoint(str(reference / "model_final.pth"))
    assert final["iteration"] == expected["iteration"] == 7
    for key, value in expected["model"].items():
        assert torch.equal(final["model"][key], value), key
    assert final["trainer"]["_trainer"]["optimizer"]["state"][0]["step"] == 8
    assert read_results(out / "final_metrics.json") == read_results(reference / "final_metrics.json")


def test_find_unused_parameters_auto_follows_dynamic_fusion():
    from mgfusion.backbones import FusionBackbone
    from mgfusion.engine.trainer import _find_unused

    fixed = FusionBackbone(master="dinov3_micro16", auxiliary="sam2_hiera_micro", inject={16: "replace"})
    dynamic = FusionBackbone(master="dinov3_micro16", auxiliary="sam2_hiera_micro", dynamic_stride=True)
    assert _find_unused("auto", fixed) is False and _find_unused("auto", dynamic) is True
    assert _find_unused(True, fixed) is True
    with pytest.raises(ValueError, match="true, false or auto"):
        _find_unused("sometimes", fixed)
