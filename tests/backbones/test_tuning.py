"""Master tuning modes (full, frozen, last_n, lora), LoRA merging and mode records, layer ids for layer-wise LR
decay, and activation checkpointing of the timm encoders (mgfusion.backbones.tuning)."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from torch import nn

from mgfusion.backbones import (
    FusionBackbone,
    TuningMismatchError,
    build_encoder,
    layer_decay_scales,
    layer_ids,
    merge_lora,
    tuning_record,
)
from mgfusion.backbones.tuning import TuningRecord

pytest.importorskip("peft", reason="LoRA tests need peft: pip install 'mgfusion[lora]'")

PAPER_NECK = (128, 256, 512, 1024)


def dinov3_counts(dim: int, depth: int, *, last_n: int, r: int) -> dict[str, int]:
    """Trainable parameters of a DINOv3 ViT (timm ``_qkvb``: q/v biases, layer scale, MLP ratio 4, 4 register
    tokens, patch 16) with the paper neck, per mode, from the architecture."""
    block = (2 * dim + 2 * dim        # norm1, norm2 (weight + bias)
             + 3 * dim * dim + 2 * dim  # qkv weight (no bias) + q_bias, v_bias
             + dim * dim + dim          # attn.proj
             + dim * 4 * dim + 4 * dim  # mlp.fc1
             + 4 * dim * dim + dim      # mlp.fc2
             + 2 * dim)                 # layer scale gamma_1, gamma_2
    assert block == 12 * dim * dim + 14 * dim
    stem = dim + 4 * dim + 3 * 16 * 16 * dim + dim  # cls token, register tokens, patch embedding (weight + bias)
    final_norm = 2 * dim
    neck = sum(dim * c + c for c in PAPER_NECK)
    lora = depth * (r * (dim + 3 * dim) + r * (dim + dim))  # r x (in + out) per targeted linear: qkv, attn.proj
    return {"full": stem + depth * block + final_norm + neck, "frozen": 0,
            "last_n": last_n * block + final_norm + neck, "lora": lora + neck}


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("name,dim,depth", [("dinov3_vits16", 384, 12), ("dinov3_vitb16", 768, 12)])
def test_trainable_parameters_follow_the_formula_of_each_mode(name, dim, depth):
    expected = dinov3_counts(dim, depth, last_n=4, r=8)
    for mode in ("full", "frozen", "last_n", "lora"):
        enc = build_encoder(name, tuning=mode, last_n_blocks=4, lora={"r": 8, "alpha": 16})
        assert trainable(enc) == expected[mode], mode
        assert enc.tuning.mode == mode and tuning_record(nn.ModuleDict({"m": enc}))["m"]["mode"] == mode
        if mode == "last_n":  # the stem and the first depth-4 blocks are frozen, the rest trains
            assert not any(p.requires_grad for p in enc.trunk.patch_embed.parameters())
            assert [all(p.requires_grad for p in b.parameters()) for b in enc.trunk.blocks] == [False] * 8 + [True] * 4
        if mode == "lora":
            names = {n for n, p in enc.named_parameters() if p.requires_grad and not n.startswith("neck.")}
            assert names and all(".lora_A." in n or ".lora_B." in n for n in names)


def test_hiera_last_n_trains_the_last_blocks_of_the_last_stages():
    enc = build_encoder("sam2_hiera_micro", tuning="last_n", last_n_blocks=2)  # stages (1, 1, 2, 1): 5 blocks
    assert enc.trunk.stage_ends == [0, 1, 3, 4]
    flags = [all(p.requires_grad for p in b.parameters()) for b in enc.trunk.blocks]
    assert flags == [False, False, False, True, True]  # the 2nd block of stage 3 and the block of stage 4
    assert trainable(enc) == sum(p.numel() for b in enc.trunk.blocks[3:] for p in b.parameters())
    assert not enc.trunk.pos_embed.requires_grad


def _set_live_lora(enc: nn.Module, seed: int = 0) -> None:
    """Random LoRA B matrices (peft starts them at 0) and unit layer scales (DINOv3's init 1e-5 would hide the
    blocks' contributions), so that adapters change the output measurably."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            if "gamma_" in name:
                p.fill_(1.0)


@pytest.mark.parametrize("name", ["dinov3_micro16", "sam2_hiera_micro"])
def test_merged_lora_gives_the_unmerged_outputs(name):
    torch.manual_seed(0)
    enc = build_encoder(name, tuning="lora", lora={"r": 4, "alpha": 8}).eval()
    _set_live_lora(enc)
    x = torch.randn(2, 3, 64, 96)
    adapters = [m.lora_A["default"] for m in enc.modules() if hasattr(m, "lora_A")]
    called = set()
    hooks = [a.register_forward_hook(lambda mod, i, o: called.add(id(mod))) for a in adapters]
    with torch.no_grad():
        unmerged = enc(x)
    assert len(adapters) == 2 * len(enc.transformer_blocks()) and called == {id(a) for a in adapters}, \
        "every adapter takes part in the forward pass"
    for h in hooks:
        h.remove()
    with torch.no_grad():
        enc_base = build_encoder(name, tuning="lora", lora={"r": 4, "alpha": 8}).eval()
        enc_base.load_state_dict({k: (torch.zeros_like(v) if ".lora_B." in k else v)
                                  for k, v in enc.state_dict().items()})
        base = enc_base(x)
    assert merge_lora(enc) == 2 * len(enc.transformer_blocks())
    assert not any(".lora_" in k or "base_layer" in k for k in enc.state_dict())
    assert enc.tuning.lora_merged and tuning_record(nn.ModuleDict({"m": enc}))["m"]["lora"]["merged"]
    with torch.no_grad():
        merged = enc(x)
    for s in unmerged:
        torch.testing.assert_close(merged[s], unmerged[s], rtol=0, atol=1e-5)
        assert (unmerged[s] - base[s]).abs().max() > 1e-3, "the adapters must change the features"
    assert merge_lora(enc) == 0  # nothing left to merge


def test_lora_checkpoints_load_strictly_and_a_mode_mismatch_names_both_modes(caplog):
    torch.manual_seed(0)
    lora = build_encoder("dinov3_micro16", tuning="lora", lora={"r": 4, "alpha": 8}).eval()
    _set_live_lora(lora)
    state = lora.state_dict()
    assert state["tuning_signature"].tolist() == [1, 3, 0, 4, 8000, 0]
    again = build_encoder("dinov3_micro16", tuning="lora", lora={"r": 4, "alpha": 8}).eval()
    again.load_state_dict(state, strict=True)  # the keys are stable across builds
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(again(x)[8], lora(x)[8], rtol=0, atol=0)

    with pytest.raises(TuningMismatchError, match=r"produced with tuning=lora \(r=4, alpha=8\).*built with tuning=full"):
        build_encoder("dinov3_micro16").load_state_dict(state)
    with pytest.raises(TuningMismatchError, match=r"tuning=lora \(r=4, alpha=8\).*tuning=lora \(r=4, alpha=4,"):
        build_encoder("dinov3_micro16", tuning="lora", lora={"r": 4, "alpha": 4}).load_state_dict(state)
    full_state = build_encoder("dinov3_micro16").state_dict()
    # full / frozen / last_n hold the same tensors: a fully tuned checkpoint loads into the others (logged)
    for mode in ("last_n", "frozen"):
        other = build_encoder("dinov3_micro16", tuning=mode, last_n_blocks=2)
        with caplog.at_level(logging.INFO, logger="mgfusion.backbones.tuning"):
            other.load_state_dict(full_state, strict=True)
        assert f"trained with tuning=full into an encoder with tuning={other.tuning.describe()}" in caplog.text
        assert all(torch.equal(v, full_state[k]) for k, v in other.state_dict().items() if k != "tuning_signature")
    with pytest.raises(TuningMismatchError, match=r"tuning=full.*tuning=lora"):
        build_encoder("dinov3_micro16", tuning="lora", lora={"r": 4, "alpha": 8}).load_state_dict(full_state)
    # a checkpoint from before modes were recorded loads (its keys are still checked strictly), with a warning
    old = {k: v for k, v in full_state.items() if k != "tuning_signature"}
    with caplog.at_level(logging.WARNING, logger="mgfusion.backbones.tuning"):
        build_encoder("dinov3_micro16").load_state_dict(old, strict=True)
    assert "records no tuning mode" in caplog.text


def test_fusion_checkpoint_records_the_master_mode():
    fb = FusionBackbone(master=build_encoder("dinov3_micro16", tuning="last_n", last_n_blocks=1),
                        auxiliary=build_encoder("sam2_hiera_micro"), inject={16: "replace"})
    state = fb.state_dict()
    assert state["master.tuning_signature"].tolist() == [1, 2, 1, 0, 0, 0]
    assert state["auxiliary.tuning_signature"].tolist() == [1, 1, 0, 0, 0, 0]  # the auxiliary is always frozen
    record = tuning_record(fb)
    assert record["master"]["mode"] == "last_n" and record["master"]["last_n_blocks"] == 1
    assert record["auxiliary"] == {"mode": "frozen", "grad_checkpointing": False, "trainable_parameters": 0}


def test_checkpoint_record_checks_the_modes_on_resume():
    model = nn.ModuleDict({"master": build_encoder("dinov3_micro16", tuning="last_n", last_n_blocks=2)})
    record = TuningRecord(model).state_dict()
    assert record == {"master": {"mode": "last_n", "grad_checkpointing": False, "last_n_blocks": 2,
                                 "trainable_parameters": trainable(model)}}
    TuningRecord(model).load_state_dict(record)  # same modes: accepted
    other = nn.ModuleDict({"master": build_encoder("dinov3_micro16", tuning="last_n", last_n_blocks=3)})
    with pytest.raises(TuningMismatchError, match="differs from the model's"):
        TuningRecord(other).load_state_dict(record)


def test_frozen_mode_and_the_train_master_alias():
    frozen = build_encoder("dinov3_micro16", tuning="frozen")
    assert frozen.frozen and trainable(frozen) == 0 and not frozen.train().training
    alias = FusionBackbone(master="dinov3_micro16", auxiliary="sam2_hiera_micro", inject={16: "replace"},
                           train_master=False)
    assert alias.master.tuning.mode == "frozen" and trainable(alias) == 0
    assert build_encoder("dinov3_micro16", freeze=True).tuning.mode == "frozen"
    with pytest.raises(ValueError, match=r"train_master=false contradicts the master's tuning=lora"):
        FusionBackbone(master=build_encoder("dinov3_micro16", tuning="lora"), auxiliary="sam2_hiera_micro",
                       inject={16: "replace"}, train_master=False)
    with pytest.raises(ValueError, match=r"tuning=last_n \(3 blocks\); freezing it would contradict that"):
        build_encoder("dinov3_micro16", tuning="last_n", freeze=True)
    with pytest.raises(ValueError, match="a fusion's auxiliary is always frozen"):
        FusionBackbone(master="dinov3_micro16", auxiliary=build_encoder("sam2_hiera_micro", tuning="lora"),
                       inject={16: "replace"})


def test_bad_tuning_settings_name_the_problem():
    with pytest.raises(ValueError, match="tuning='adapter' is not a tuning mode; valid: full, frozen, last_n, lora"):
        build_encoder("dinov3_micro16", tuning="adapter")
    with pytest.raises(ValueError, match="last_n_blocks=5, but PlainViTEncoder has only 4 transformer blocks"):
        build_encoder("dinov3_micro16", tuning="last_n", last_n_blocks=5)
    with pytest.raises(TypeError, match=r"blocks.0.mlp is Mlp, not an nn.Linear; the block's linear layers are "
                                         r"attn.proj, attn.qkv, mlp.fc1, mlp.fc2"):
        build_encoder("dinov3_micro16", tuning="lora", lora={"target_modules": ["mlp"]})
    with pytest.raises(ValueError, match=r"unknown lora keys \['rank'\]"):
        build_encoder("dinov3_micro16", tuning="lora", lora={"rank": 8})


def test_missing_peft_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # makes `import peft` raise ImportError
    with pytest.raises(ImportError, match=r"tuning=lora needs the peft library.*pip install 'mgfusion\[lora\]'"):
        build_encoder("dinov3_micro16", tuning="lora")
    assert build_encoder("dinov3_micro16", tuning="last_n").tuning.mode == "last_n"  # other modes need no peft


def test_layer_ids_and_decay_scales_of_vit_and_hiera():
    vit = build_encoder("dinov3_micro16")  # 4 blocks
    ids, depth = layer_ids(vit)
    assert depth == 4
    assert {ids[k] for k in ("trunk.cls_token", "trunk.reg_token", "trunk.patch_embed.proj.weight")} == {0}
    assert [ids[f"trunk.blocks.{i}.attn.qkv.weight"] for i in range(4)] == [1, 2, 3, 4]
    assert ids["trunk.norm.weight"] == ids["neck.proj.16.weight"] == 5
    scales = layer_decay_scales(nn.ModuleDict({"m": vit}), 0.5)
    assert scales[id(vit.trunk.patch_embed.proj.weight)] == 0.5**5
    assert [scales[id(b.mlp.fc1.weight)] for b in vit.trunk.blocks] == [0.5**4, 0.5**3, 0.5**2, 0.5]
    assert scales[id(vit.trunk.norm.weight)] == scales[id(vit.neck.proj["4"].bias)] == 1.0

    hiera = build_encoder("sam2_hiera_micro")  # 5 blocks over 4 stages
    ids, depth = layer_ids(hiera)
    assert depth == 5 and ids["trunk.pos_embed"] == ids["trunk.patch_embed.proj.weight"] == 0
    assert [ids[f"trunk.blocks.{i}.attn.qkv.weight"] for i in range(5)] == [1, 2, 3, 4, 5]
    assert ids["trunk.blocks.1.proj.weight"] == 2  # stage 2's channel projection lives in its first block

    lora = build_encoder("dinov3_micro16", tuning="lora")
    scales = layer_decay_scales(lora, 0.5)  # only trainable parameters: the adapters (by their block) and the neck
    assert scales[id(lora.trunk.blocks[3].attn.qkv.lora_A["default"].weight)] == 0.5
    assert id(lora.trunk.blocks[3].attn.qkv.base_layer.weight) not in scales


def _grads(module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    module.zero_grad(set_to_none=True)
    out = module(x)
    sum((f.float() ** 2).mean() * (i + 1) for i, f in enumerate(out.values())).backward()
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["dinov3_micro16", "sam2_hiera_micro", "fusion"])
def test_activation_checkpointing_gives_identical_gradients(name, monkeypatch):
    def build(gc: bool) -> nn.Module:
        torch.manual_seed(0)
        if name == "fusion":
            return FusionBackbone(master=build_encoder("dinov3_micro16", grad_checkpointing=gc),
                                  auxiliary=build_encoder("sam2_hiera_micro"), inject={16: "replace"}).train()
        return build_encoder(name, grad_checkpointing=gc).train()

    plain, ckpt = build(False), build(True)
    trunk = (ckpt.master if name == "fusion" else ckpt).trunk
    assert trunk.grad_checkpointing and ckpt.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 3, 64, 64)
    g_plain = _grads(plain, x)
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    g_ckpt = _grads(ckpt, x)
    assert calls == [False] * len(trunk.blocks), "every block runs under non-reentrant activation checkpointing"
    assert g_plain.keys() == g_ckpt.keys() and len(g_plain) > 10
    for key, grad in g_plain.items():
        torch.testing.assert_close(g_ckpt[key], grad, rtol=0, atol=0, msg=key)
