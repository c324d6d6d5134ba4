"""Hydra nodes under configs/backbone/: one per registered encoder, fusion nodes composed from them (an encoder is
described once), the explicit choice of random initialisation, and the fusion settings' validation."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mgfusion.backbones import (
    Encoder,
    FusionBackbone,
    build_encoder,
    build_fusion_backbone,
    list_encoders,
)
from mgfusion.backbones.registry import MissingWeightsError, requires_weights
from mgfusion.engine import random_init_encoders

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ENCODER_NODES = {p.stem: p for p in (CONFIGS / "backbone").glob("*.yaml") if p.stem in list_encoders()}
MICRO = ("dinov3_micro16", "sam2_hiera_micro")


def _backbone(name: str, *overrides: str):
    """The ``backbone`` node of configs/train.yaml composed with ``backbone=name`` (as tools/train_net.py does)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose("train", overrides=[f"backbone={name}", "dataset=synthetic_instance", *overrides]).backbone


def test_every_registered_encoder_has_a_node_that_builds_it():
    assert sorted(ENCODER_NODES) == list_encoders()
    for stem in ENCODER_NODES:
        node = _backbone(stem)
        assert node.name == stem  # the file builds the encoder it is named after
        if requires_weights(stem):  # foundation encoders: training refuses them until weights are chosen
            with pytest.raises(MissingWeightsError, match=rf"backbone.weights is not set, so the foundation encoder "
                                                          rf"'{stem}' would be trained from random initialisation"):
                random_init_encoders(node)
            node.weights = "random"
            assert random_init_encoders(node) == [f"backbone ({stem})"]
            node.weights = "/w.pth"
            assert random_init_encoders(node) == []
        else:
            assert stem in MICRO and random_init_encoders(node) == [f"backbone ({stem})"]


@pytest.mark.parametrize("stem", MICRO)
def test_micro_encoder_node_instantiates_with_overrides(stem):
    enc = instantiate(_backbone(stem, "backbone.freeze=true"))
    assert isinstance(enc, Encoder) and enc.frozen
    out = enc(torch.randn(1, 3, 40, 56))
    assert {s: f.shape[1] for s, f in out.items()} == enc.out_channels


def test_paper_fusion_nodes_refuse_random_encoders_until_asked():
    with pytest.raises(MissingWeightsError, match="backbone.master.weights is not set.*'dinov3_vitb16'.*"
                                                  r"backbone.master.weights=/path/to/file.*backbone.master.weights=hub"
                                                  ".*backbone.master.weights=random"):
        random_init_encoders(_backbone("fusion_d3s2"))
    with pytest.raises(MissingWeightsError, match="backbone.auxiliary.weights is not set.*'sam2_hiera_bplus'"):
        random_init_encoders(_backbone("fusion_d3s2", "backbone.master.weights=/d.pth"))
    chosen = _backbone("fusion_s2d3", "backbone.master.weights=random", "backbone.auxiliary.weights=/d.pth")
    assert random_init_encoders(chosen) == ["backbone.master (sam2_hiera_bplus)"]
    assert random_init_encoders(_backbone("fusion_micro_d3s2")) == [
        "backbone.master (dinov3_micro16)", "backbone.auxiliary (sam2_hiera_micro)"]


# The fusion nodes before they were composed from the encoder nodes (one literal copy per node); the composed nodes
# must build exactly these backbones.
_BEFORE = {
    "fusion_d3s2": ({"name": "dinov3_vitb16", "neck": "paper", "neck_channels": [128, 256, 512, 1024]},
                    {"name": "sam2_hiera_bplus"}),
    "fusion_s2d3": ({"name": "sam2_hiera_bplus"}, {"name": "dinov3_vitb16", "neck": "raw"}),
    "fusion_micro_d3s2": ({"name": "dinov3_micro16", "neck": "paper", "neck_channels": [32, 64, 96, 128]},
                          {"name": "sam2_hiera_micro"}),
    "fusion_micro_s2d3": ({"name": "sam2_hiera_micro"}, {"name": "dinov3_micro16", "neck": "raw"}),
}


def _structure(module: torch.nn.Module) -> dict:
    return {k: (tuple(p.shape), p.requires_grad) for k, p in module.named_parameters()} | {
        k: tuple(b.shape) for k, b in module.named_buffers()}


@pytest.mark.parametrize("stem", sorted(_BEFORE))
def test_composed_fusion_node_builds_the_same_backbone_as_before(stem):
    node = _backbone(stem, "backbone.master.weights=random", "backbone.auxiliary.weights=random")
    master, auxiliary = _BEFORE[stem]
    assert (node.master.name, node.auxiliary.name) == (master["name"], auxiliary["name"])
    assert OmegaConf.to_container(node.fusion) == {"stride": 16, "operator": "replace", "from_profile": None,
                                                   "profile_encoder": None, "dynamic": False, "inference": "fused"}
    assert OmegaConf.to_container(node.distillation) == {"enabled": False, "weight": 1.0, "loss": "both",
                                                         "detach_student": False}
    assert (node.master.tuning, node.master.grad_checkpointing) == ("full", False)
    assert (node.train_master, node.aux_input_size) == (True, None) and node.master.strict and node.auxiliary.strict
    device = "cpu" if "micro" in stem else "meta"  # the paper's encoders: structure only, without allocating them
    with torch.device(device):
        torch.manual_seed(0)
        composed = instantiate(node, _convert_="all")
        torch.manual_seed(0)
        before = FusionBackbone(master=build_encoder(**master), auxiliary=build_encoder(**auxiliary),
                                inject={16: "replace"})
    assert isinstance(composed, FusionBackbone) and _structure(composed) == _structure(before)
    if device == "cpu":  # same initialisation from the same seed: the very same model
        x = torch.randn(1, 3, 64, 96)
        with torch.no_grad():
            a, b = composed.eval()(x), before.eval()(x)
        assert all(torch.equal(a[s], b[s]) for s in (4, 8, 16, 32))


@pytest.mark.parametrize("stem", ["fusion_micro_d3s2", "fusion_micro_s2d3"])
def test_micro_fusion_nodes_sweep_stride_and_operator(stem):
    for stride in (4, 32):
        fb = instantiate(_backbone(stem, f"backbone.fusion.stride={stride}"))
        assert isinstance(fb, FusionBackbone) and fb.inject_strides == (stride,)
    fb = instantiate(_backbone(stem, "backbone.fusion.stride=[8,16]", "backbone.fusion.operator=gated"))
    assert fb.inject_strides == (8, 16) and fb.injector(8).op_name == "gated"


@pytest.mark.parametrize("fusion, message", [
    ({"stride": 16, "from_profile": "p.json"}, "stride=16 and from_profile='p.json' are set; exactly one of them"),
    ({"stride": 8, "dynamic": True}, "stride=8 and dynamic=True are set"),
    ({"stride": None, "from_profile": "p.json", "dynamic": True}, "from_profile='p.json' and dynamic=True are set"),
    ({"stride": None}, "none of stride, from_profile, dynamic is set"),
    ({"stride": 16, "profile_encoder": "sam2_hiera_micro"}, "profile_encoder is set but from_profile is not"),
    ({"stride": "16"}, "stride must be an int or a non-empty list of ints, got '16'"),
    ({"stride": []}, "stride must be an int or a non-empty list of ints, got \\[\\]"),
    ({"stride": 16, "strid": 8}, r"unknown fusion keys \['strid'\]"),
])
def test_contradictory_fusion_settings_are_rejected(fusion, message):
    with pytest.raises(ValueError, match=message):
        build_fusion_backbone(master="dinov3_micro16", auxiliary="sam2_hiera_micro", fusion=fusion)
