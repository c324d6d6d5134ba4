"""Hydra nodes under configs/backbone/: one per registered encoder, each instantiable."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mgfusion.backbones import Encoder, list_encoders

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "backbone"
ENCODER_NODES = {p.stem: p for p in CONFIG_DIR.glob("*.yaml") if p.stem in list_encoders()}


def test_every_registered_encoder_has_a_config_node():
    assert sorted(ENCODER_NODES) == list_encoders()
    for stem, path in ENCODER_NODES.items():
        cfg = OmegaConf.load(path)
        assert cfg._target_ == "mgfusion.backbones.build_encoder" and cfg.name == stem
        assert cfg.weights is None and cfg.freeze is False and cfg.strict is True


@pytest.mark.parametrize("stem", ["dinov3_micro16", "sam2_hiera_micro"])
def test_config_instantiates_with_overrides(stem):
    cfg = OmegaConf.load(ENCODER_NODES[stem])
    cfg.freeze = True
    enc = instantiate(cfg)
    assert isinstance(enc, Encoder) and enc.frozen
    out = enc(torch.randn(1, 3, 40, 56))
    assert {s: f.shape[1] for s, f in out.items()} == enc.out_channels
