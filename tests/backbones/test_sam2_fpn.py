"""SAM2 Hiera + SAM2's FPN neck (the paper's SAM2 baseline): the neck's definition, strict loading of the official
checkpoints (trunk and neck), the authors' duplicated stride-16 level (B9) and its use in Mask2Former."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mgfusion.backbones import (
    CheckpointMismatchError,
    FusionBackbone,
    SAM2FpnEncoder,
    SAM2FpnNeck,
    build_encoder,
)

MANIFESTS = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoint_manifests"
#: a scaled-down Hiera (stages 32/64/128/256 channels) for fast CPU checks of the same code path
MICRO = {"embed_dim": 32, "num_heads": 1, "stages": (1, 1, 2, 1), "global_att_blocks": (3,)}


def _micro(**kwargs) -> SAM2FpnEncoder:
    torch.manual_seed(0)
    return build_encoder("sam2_hiera_t_fpn", timm_kwargs=MICRO, neck_channels=48, **kwargs)


def _up2(x: torch.Tensor) -> torch.Tensor:
    """Nearest x2 upsampling written as repetition: every pixel becomes a 2x2 block."""
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def test_neck_is_sams2_fpn_laterals_with_top_down_into_stride_16_only():
    torch.manual_seed(0)
    chans = (8, 16, 24, 40)
    neck = SAM2FpnNeck(chans, d_model=12)
    stages = [torch.randn(2, c, 32 // 2**i, 48 // 2**i) for i, c in enumerate(chans)]
    out = neck(stages)

    def lateral(level):
        conv = neck.lateral(level).conv
        assert conv.in_channels == chans[level]
        return F.conv2d(stages[level], conv.weight, conv.bias)

    expected = [lateral(0), lateral(1), lateral(2) + _up2(lateral(3)), lateral(3)]
    for level, (o, e) in enumerate(zip(out, expected)):
        assert o.shape == (2, 12, 32 // 2**level, 48 // 2**level)
        torch.testing.assert_close(o, e)
    # the released checkpoints' order: convs.0 is the stride-32 lateral, convs.3 the stride-4 one
    assert [neck.convs[k].conv.in_channels for k in range(4)] == [40, 24, 16, 8]
    # top-down everywhere (SAM2's default when fpn_top_down_levels is not given) chains the upsampling down
    full = SAM2FpnNeck(chans, d_model=12, top_down_levels=range(4))
    full.load_state_dict(neck.state_dict())
    p = full(stages)
    torch.testing.assert_close(p[1], lateral(1) + _up2(expected[2]))
    torch.testing.assert_close(p[0], lateral(0) + _up2(p[1]))
    with pytest.raises(ValueError, match=r"top_down_levels \[4\] out of range for 4 levels"):
        SAM2FpnNeck(chans, top_down_levels=(2, 4))


def test_encoder_pyramid_is_the_neck_over_the_trunk_stages():
    enc = _micro().eval()
    x = torch.randn(1, 3, 100, 132)  # padded to 128x160 inside
    with torch.no_grad():
        out = enc(x)
        stages = enc.trunk.forward_intermediates(F.pad(x, (0, 28, 0, 28)), indices=4, norm=False, output_fmt="NCHW",
                                                 intermediates_only=True)
        ref = enc.neck(stages)
    assert enc.trunk_channels == {4: 32, 8: 64, 16: 128, 32: 256} and enc.out_channels == dict.fromkeys((4, 8, 16, 32), 48)
    for s, r in zip((4, 8, 16, 32), ref):
        assert out[s].shape == (1, 48, math.ceil(100 / s), math.ceil(132 / s))
        torch.testing.assert_close(out[s], r[..., : out[s].shape[-2], : out[s].shape[-1]])


def _load_manifest(fname: str) -> dict:
    with gzip.open(MANIFESTS / f"{fname}.json.gz", "rt") as f:
        return json.load(f)


def test_official_checkpoint_loads_trunk_and_neck_strictly(tmp_path):
    """Every key of the released file, in its {"model": ...} wrapping: the trunk keys load into the trunk, the
    image_encoder.neck.convs.k keys into the matching laterals (distinct values per key show where each went). The
    SAM2 (2.0) files hold the same trunk and neck keys (test below; trunk: test_official_manifests.py)."""
    fname = "sam2.1_hiera_tiny.pt"
    manifest = _load_manifest(fname)
    assert manifest["wrapping"] == "model"
    state = {}
    for key, shape in manifest["keys"].items():
        dtype = getattr(torch, manifest["dtypes"].get(key, "float32"))
        value = 0.0
        if key.startswith("image_encoder.neck.convs."):
            k = int(key.split(".")[3])
            value = (k + 1) * (10.0 if key.endswith("weight") else 1.0)
        state[key] = torch.full((), value, dtype=dtype).expand(shape)
    neck_keys = [k for k in state if k.startswith("image_encoder.neck.")]
    assert len(neck_keys) == 8
    path = tmp_path / fname
    torch.save({"model": state}, path)

    enc = build_encoder("sam2_hiera_t_fpn", weights=str(path))  # strict: any key difference raises
    trunk = [k for k, v in enc.trunk.state_dict().items() if v.is_floating_point() and bool(v.ne(0).any())]
    assert trunk == [], f"trunk tensors not overwritten by the checkpoint: {trunk[:5]}"
    for level, (chans, k) in enumerate(zip((96, 192, 384, 768), (3, 2, 1, 0))):
        conv = enc.neck.lateral(level).conv
        assert conv.in_channels == chans and conv.out_channels == 256
        assert bool((conv.weight == 10.0 * (k + 1)).all()) and bool((conv.bias == k + 1).all()), level


def _official_micro_file(enc: SAM2FpnEncoder, path: Path, *, neck: bool = True) -> Path:
    """The micro encoder's state in the official SAM2 layout (trunk under image_encoder.trunk., SAM2's MLP names)."""
    sd = {"image_encoder.trunk." + k.replace("mlp.fc1", "mlp.layers.0").replace("mlp.fc2", "mlp.layers.1"): v
          for k, v in enc.trunk.state_dict().items()}
    if neck:
        sd.update({"image_encoder.neck." + k: v for k, v in enc.neck.state_dict().items()})
    sd["sam_mask_decoder.iou_token.weight"] = torch.zeros(1, 256)  # the rest of SAM2: dropped
    torch.save({"model": sd}, path)
    return path


def test_loaded_encoder_reproduces_the_saved_one(tmp_path):
    src = _micro().eval()
    path = _official_micro_file(src, tmp_path / "sam2.1_hiera_micro.pt")
    torch.manual_seed(1)  # another random init, overwritten by the file
    dst = build_encoder("sam2_hiera_t_fpn", timm_kwargs=MICRO, neck_channels=48, weights=str(path)).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = src(x), dst(x)
    assert all(torch.equal(a[s], b[s]) for s in (4, 8, 16, 32))


def test_files_without_the_neck_or_with_another_width_are_refused(tmp_path):
    src = _micro()
    trunk_only = _official_micro_file(src, tmp_path / "trunk_only.pt", neck=False)
    with pytest.raises(CheckpointMismatchError, match=r"(?s)missing keys \(8\): image_encoder\.neck\.convs\.0\.conv"
                                                      r"\.bias.*trunk-only file"):
        build_encoder("sam2_hiera_t_fpn", timm_kwargs=MICRO, neck_channels=48, weights=str(trunk_only))
    full = _official_micro_file(src, tmp_path / "full.pt")
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatches \(8\): image_encoder\.neck\.convs\.0\.conv"
                                                      r"\.bias: checkpoint \(48,\) vs model \(64,\)"):
        build_encoder("sam2_hiera_t_fpn", timm_kwargs=MICRO, neck_channels=64, weights=str(full))
    with pytest.raises(ValueError, match="hold the trunk only.*official SAM2/SAM2.1 checkpoint"):
        build_encoder("sam2_hiera_t_fpn", weights="hub")


def test_reproduce_b9_hands_the_stride_16_level_on_as_stride_32():
    x = torch.randn(2, 3, 100, 132)
    plain, b9 = _micro().eval(), _micro(reproduce_b9=True).eval()
    with torch.no_grad():
        p, q = plain(x), b9(x)
    for s in (4, 8, 16):
        assert torch.equal(p[s], q[s])
    assert q[32] is q[16] and q[32].shape[-2:] == (7, 9)  # the stride-16 grid, the true stride-32 level is gone
    assert p[32].shape[-2:] == (4, 5) and b9.out_channels[32] == 48
    # the stride-16 lateral feeds two outputs now, so no level owns it alone
    assert len(plain.level_only_parameters(16)) == 2 and b9.level_only_parameters(16) == []
    assert plain.level_only_parameters(32) == []  # the stride-32 lateral also feeds stride 16 (top-down)
    assert [len(b9.level_only_parameters(s)) for s in (4, 8)] == [2, 2]
    with pytest.raises(ValueError, match="reproduce_b9.*single-encoder baseline option only"):
        FusionBackbone(master=b9, auxiliary="dinov3_micro16", inject={16: "replace"})


@pytest.mark.parametrize("stride", [16, 32])
def test_fpn_master_in_a_fusion_trains_exactly_the_parameters_that_get_gradients(stride):
    """With `replace`, the parameters only the discarded level used are frozen; all others receive gradients."""
    fb = FusionBackbone(master=_micro(), auxiliary=build_encoder("dinov3_micro16", neck="raw"),
                        inject={stride: "replace"}).train()
    out = fb(torch.randn(1, 3, 64, 96))
    sum(f.float().square().mean() for f in out.values()).backward()
    neck = {n: p for n, p in fb.master.neck.named_parameters()}
    trainable = {n for n, p in neck.items() if p.requires_grad}
    with_grad = {n for n, p in neck.items() if p.grad is not None and bool(p.grad.abs().sum() > 0)}
    assert trainable == with_grad
    frozen = {"convs.1.conv.weight", "convs.1.conv.bias"} if stride == 16 else set()
    assert set(neck) - trainable == frozen


def test_freeze_covers_trunk_and_neck():
    enc = build_encoder("sam2_hiera_t_fpn", timm_kwargs=MICRO, freeze=True)
    assert enc.frozen and not any(p.requires_grad for p in enc.parameters())
    assert not enc.train().neck.training


@pytest.mark.parametrize("size", ["tiny", "small", "base_plus", "large"])
def test_sam2_and_sam21_releases_share_the_neck(size):
    """The neck keys and shapes of each SAM2 release equal its SAM2.1 twin's (so loading one covers both)."""
    def neck(fname):
        return {k: v for k, v in _load_manifest(fname)["keys"].items() if k.startswith("image_encoder.neck.")}

    a, b = neck(f"sam2_hiera_{size}.pt"), neck(f"sam2.1_hiera_{size}.pt")
    assert len(a) == 8 and a == b
