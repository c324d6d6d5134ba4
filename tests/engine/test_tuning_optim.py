"""Master tuning modes through the engine: optimizer groups follow the mode (backbone multiplier, layer decay), each
mode trains the tiny Mask2Former on the micro fusion backbone, checkpoints and metrics record the mode, LoRA
checkpoints evaluate merged, and 2-process DDP (gloo) runs in every mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.utils.env import seed_all_rng
from hydra.utils import instantiate
from torch import nn

from mgfusion.backbones import FusionBackbone, TuningMismatchError, build_encoder
from mgfusion.engine import (
    Trainer,
    build_param_groups,
    read_checkpoint,
    register_datasets,
    run,
)
from mgfusion.modeling.backbone import EncoderBackbone
from tests.engine.helpers import (
    ROOT,
    TEST_CONFIGS,
    TRAIN_NET,
    cli_env,
    compose_train,
    micro_fusion_overrides,
    read_json_lines,
)

pytest.importorskip("peft", reason="LoRA tests need peft: pip install 'mgfusion[lora]'")
# detectron2's SemSegEvaluator calls np.array(tensor, dtype=int) (numpy 2 deprecation inside detectron2)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

MODES = ("full", "frozen", "last_n", "lora")


class Model(nn.Module):
    """A fusion backbone (micro DINOv3 master in ``mode``, micro Hiera auxiliary) under ``backbone`` + a head."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        master = build_encoder("dinov3_micro16", tuning=mode, last_n_blocks=2, lora={"r": 4, "alpha": 4})
        fusion = FusionBackbone(master=master, auxiliary=build_encoder("sam2_hiera_micro"), inject={16: "replace"})
        self.backbone = EncoderBackbone(encoder=fusion)
        self.head = nn.Conv2d(128, 3, 1)


def _lr_of(groups: list[dict]) -> dict[int, float]:
    out: dict[int, float] = {}
    for g in groups:
        for p in g["params"]:
            assert id(p) not in out, "a tensor appears in two groups"
            out[id(p)] = g["lr"]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_optimizer_groups_hold_exactly_the_trainable_tensors_with_decayed_rates(mode):
    model = Model(mode)
    lr = _lr_of(build_param_groups(model, base_lr=1.0, weight_decay=0.05, backbone_multiplier=0.1, layer_decay=0.5))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(lr) == trainable, "no frozen tensor in any group, every trainable one in exactly one"
    master = model.backbone.encoder.master
    assert not any(id(p) in lr for p in model.backbone.encoder.auxiliary.parameters())
    assert lr[id(model.head.weight)] == 1.0  # outside the backbone: no multiplier, no decay
    if mode != "frozen":
        assert lr[id(master.neck.proj["4"].weight)] == pytest.approx(0.1)  # neck: multiplier only
    blocks = master.trunk.blocks  # depth 4: block i gets 0.1 x 0.5 ** (4 - i)
    if mode == "full":
        assert lr[id(master.trunk.patch_embed.proj.weight)] == pytest.approx(0.1 * 0.5**5)
        assert [lr[id(b.mlp.fc2.weight)] for b in blocks] == pytest.approx([0.1 * 0.5 ** (4 - i) for i in range(4)])
        assert lr[id(master.trunk.norm.weight)] == pytest.approx(0.1)
    elif mode == "last_n":
        assert not any(id(p) in lr for b in blocks[:2] for p in b.parameters())
        assert [lr[id(b.attn.proj.weight)] for b in blocks[2:]] == pytest.approx([0.1 * 0.5**2, 0.1 * 0.5])
    elif mode == "lora":  # the LoRA matrices carry the multiplier and their block's decay; base weights are frozen
        adapters = [(i, p) for i, b in enumerate(blocks) for n, p in b.named_parameters() if ".lora_" in n]
        assert len(adapters) == 4 * 2 * 2
        assert all(lr[id(p)] == pytest.approx(0.1 * 0.5 ** (4 - i)) for i, p in adapters)
    elif mode == "frozen":  # the whole master, neck included (the paper's FZ master)
        assert not any(id(p) in lr for p in master.parameters())


def _overrides(out: Path, mode: str, *extra: str) -> list[str]:
    return micro_fusion_overrides(out, f"backbone.master.tuning={mode}", *extra)


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_lowers_the_loss_and_trains_only_its_parameters(mode, tmp_path):
    out = tmp_path / mode
    cfg = compose_train(*_overrides(out, mode), "dataset.test=[]")
    register_datasets(cfg.dataset)
    seed_all_rng(0)
    trainer = Trainer(cfg, output_dir=str(out), seed=0)
    master = trainer.model.backbone.encoder.master
    assert master.tuning.mode == mode
    before = {n: p.detach().clone() for n, p in master.named_parameters()}
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = [r["total_loss"] for r in read_json_lines(out / "metrics.json") if "total_loss" in r]
    assert len(losses) == 10 and sum(losses[-3:]) < 0.95 * sum(losses[:3])
    changed = {n for n, p in master.named_parameters() if not torch.equal(p.detach(), before[n])}
    should = {n for n, p in master.named_parameters() if p.requires_grad}
    assert changed == should, "exactly the trainable master parameters moved"
    assert (mode == "frozen") == (not should)


def test_checkpoints_and_metrics_record_the_mode_and_lora_evaluates_merged(tmp_path):
    out = tmp_path / "lora"
    results = run(compose_train(*_overrides(out, "lora")))
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["tuning"]["backbone.encoder.master"]["mode"] == "lora"
    assert final["tuning"]["backbone.encoder.master"]["lora"] == {"r": 4, "alpha": 32, "dropout": 0.0, "merged": False,
                                                                   "target_modules": ["attn.qkv", "attn.proj"]}
    ckpt = read_checkpoint(str(out / "model_final.pth"))
    assert ckpt["tuning"]["backbone.encoder.master"]["mode"] == "lora"
    assert ckpt["model"]["backbone.encoder.master.tuning_signature"].tolist() == [1, 3, 0, 4, 32000, 0]

    merged = run(compose_train(*_overrides(tmp_path / "merged", "lora", "eval_only=true", "merge_lora=true",
                                           f"weights={out / 'model_final.pth'}")))
    record = json.loads((tmp_path / "merged" / "eval_metrics.json").read_text())["tuning"]
    assert record["backbone.encoder.master"]["lora"]["merged"] is True
    assert merged["sem_seg"]["mIoU"] == pytest.approx(results["sem_seg"]["mIoU"], abs=1e-6)

    with pytest.raises(TuningMismatchError, match=r"backbone.encoder.master: the checkpoint was produced with "
                                                  r"tuning=lora \(r=4, alpha=32\).*built with tuning=full"):
        run(compose_train(*_overrides(tmp_path / "full", "full", "eval_only=true",
                                      f"weights={out / 'model_final.pth'}")))


def test_hydra_overrides_reach_the_master_encoder():
    cfg = compose_train("backbone=fusion_micro_d3s2", "backbone.master.tuning=lora", "backbone.master.lora.r=2",
                        "backbone.master.grad_checkpointing=true", "solver.param_groups.layer_decay=0.8",
                        "output_dir=/unused")
    fusion = instantiate(cfg.backbone, _convert_="all")
    assert fusion.master.tuning.describe() == "lora (r=2, alpha=32, targets attn.qkv, attn.proj)"
    assert fusion.master.trunk.grad_checkpointing and cfg.solver.param_groups.layer_decay == 0.8
    single = instantiate(compose_train("backbone=sam2_hiera_micro", "backbone.tuning=last_n",
                                       "backbone.last_n_blocks=1", "output_dir=/unused").backbone)
    assert single.tuning.mode == "last_n" and single.num_parameters(trainable_only=True) == sum(
        p.numel() for p in single.trunk.blocks[-1].parameters())


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_two_process_gloo_ddp_trains_in_every_mode(mode, tmp_path):
    """tools/train_net.py in 2 gloo processes: the micro fusion backbone (master in ``mode``) under the engine
    tests' tiny segmentation head, 3 steps with a checkpoint and the final evaluation."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, str(TRAIN_NET), "--config-dir", str(TEST_CONFIGS), "backbone=fusion_micro_d3s2",
           "model=tiny_seg", "dataset=tiny_shapes", "solver=smoke_cpu", "runtime=smoke", "device=cpu",
           "runtime.tensorboard=false", f"output_dir={out}", f"dataset.register.root={tmp_path / 'data'}",
           f"backbone.master.tuning={mode}", "backbone.master.last_n_blocks=2", "backbone.master.lora.r=4",
           "solver.max_iter=3", "solver.checkpoint_period=3", "solver.ims_per_batch=2", "runtime.num_gpus=2"]
    done = subprocess.run(cmd, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 image(s) in 1 micro-batch(es) of 2 over 2 process(es)" in (out / "log.txt").read_text()
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["tuning"]["backbone.encoder.master"]["mode"] == mode and "sem_seg" in final["results"]
    assert read_checkpoint(str(out / "model_final.pth"))["tuning"]["backbone.encoder.master"]["mode"] == mode
