"""Encoder registry: names, errors, custom registration."""

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mgfusion.backbones import registry as registry_module

from mgfusion.backbones import (
    Encoder,
    UnknownEncoderError,
    build_encoder,
    get_encoder_factory,
    list_encoders,
    register_encoder,
)

REQUIRED = [
    "dinov3_vits16", "dinov3_vitb16", "dinov3_vitl16",
    "sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_bplus", "sam2_hiera_l",
    "dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14",
    "samvit_b", "samvit_l", "swin_b",
]


def test_required_encoders_are_registered():
    names = list_encoders()
    assert names == sorted(names)
    missing = [n for n in REQUIRED if n not in names]
    assert not missing, f"not registered: {missing}"
    assert list_encoders("sam2") == [n for n in names if "sam2" in n]


def test_unknown_name_lists_registered_names_and_suggests():
    with pytest.raises(UnknownEncoderError) as exc:
        build_encoder("dinov3_vitb61")
    msg = str(exc.value)
    assert "unknown encoder 'dinov3_vitb61'" in msg
    assert "Did you mean 'dinov3_vitb16'" in msg
    for name in REQUIRED:
        assert name in msg


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("dinov3_vitb16")(lambda **kw: None)


class _Constant(Encoder):
    out_channels = {4: 2, 8: 2, 16: 2, 32: 2}
    size_divisibility = 32

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value))

    def forward_padded(self, x):
        return {s: self.value * torch.ones(x.shape[0], 2, x.shape[-2] // s, x.shape[-1] // s) for s in self.out_strides}


@pytest.fixture
def isolated_registry(monkeypatch):
    """Registrations made by a test are removed afterwards (other tests see the shipped registry)."""
    monkeypatch.setattr(registry_module.ENCODERS, "_entries", dict(registry_module.ENCODERS._entries))


def test_custom_encoder_registration_and_overrides(isolated_registry):
    name = "test_constant_encoder"
    register_encoder(name)(_Constant)
    assert get_encoder_factory(name) is _Constant
    enc = build_encoder(name, value=3.0, freeze=True)
    out = enc(torch.zeros(2, 3, 33, 65))
    assert {s: tuple(v.shape) for s, v in out.items()} == {
        4: (2, 2, 9, 17), 8: (2, 2, 5, 9), 16: (2, 2, 3, 5), 32: (2, 2, 2, 3)}
    assert torch.all(out[4] == 3.0)
    assert enc.frozen and not enc.value.requires_grad


def test_encoder_rejects_non_image_batches():
    enc = _Constant()
    with pytest.raises(ValueError, match=r"expects a \(B, 3, H, W\) image batch"):
        enc(torch.zeros(3, 32, 32))


def test_readme_example_for_adding_an_encoder(isolated_registry, tmp_path):
    """The README's 'Adding an encoder' code runs as written and gives working encoders."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Adding an encoder", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    assert {"convnext_t", "deit3_vits16"} <= set(list_encoders())
    for name in ("convnext_t", "deit3_vits16"):
        enc = build_encoder(name).eval()
        with torch.no_grad():
            out = enc(torch.randn(1, 3, 50, 70))
        assert {s: tuple(f.shape[-2:]) for s, f in out.items()} == {4: (13, 18), 8: (7, 9), 16: (4, 5), 32: (2, 3)}
        assert all(f.shape[1] == enc.out_channels[s] for s, f in out.items())
    # family="timm" loads timm-layout files strictly
    src = build_encoder("convnext_t")
    path = tmp_path / "convnext.safetensors"
    save_file({k: v.contiguous() for k, v in src.trunk.state_dict().items()}, str(path))
    dst = build_encoder("convnext_t", weights=path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(src.eval()(x)[32], dst.eval()(x)[32])
