"""Master-auxiliary fusion: the paper's `replace` (docs/fusion.md), learnable extensions, gradients, preprocessing;
the tensor-level tests run on every device (tests/conftest.py)."""

import json

import pytest
import torch
import torch.nn.functional as F

from mgfusion.backbones import (
    FusionBackbone,
    build_encoder,
    build_injection,
    list_injections,
    match_channels,
)
from mgfusion.modeling.backbone import EncoderBackbone


def test_replace_subsamples_channels_evenly_and_resizes_bilinearly(device):
    op = build_injection("replace", master_channels=4, aux_channels=10)
    assert sum(p.numel() for p in op.parameters()) == 0
    master = torch.randn(2, 4, 6, 8, dtype=torch.bfloat16).to(device)
    aux = torch.randn(2, 10, 3, 4).to(device)
    out = op(master, aux)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 4, 6, 8)
    expected = F.interpolate(aux.bfloat16(), size=(6, 8), mode="bilinear", align_corners=False)[:, [0, 2, 5, 7]]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert torch.equal(op(torch.zeros_like(master), aux), out), "the master map is discarded"


def test_replace_pads_with_per_pixel_channel_mean():
    aux = torch.randn(1, 3, 5, 5)
    out = build_injection("replace", master_channels=5, aux_channels=3)(torch.randn(1, 5, 5, 5), aux)
    torch.testing.assert_close(out[:, :3], aux)
    mean = aux.mean(dim=1, keepdim=True)
    torch.testing.assert_close(out[:, 3:], mean.expand(-1, 2, -1, -1))
    # D3S2 at OS16: 448 SAM2 channels + 64 identical mean channels -> 512
    big = match_channels(torch.randn(1, 448, 2, 2), 512)
    assert big.shape[1] == 512 and torch.allclose(big[:, 448:], big[:, 448:449].expand(-1, 64, -1, -1))
    assert match_channels(torch.randn(1, 896, 2, 2), 512).shape[1] == 512


@pytest.mark.parametrize("name", ["add", "gated", "concat"])
def test_learnable_operators_are_identity_at_init_then_learn(name, device):
    torch.manual_seed(0)
    op = build_injection(name, master_channels=16, aux_channels=24).to(device)
    master, aux = torch.randn(2, 16, 8, 8).to(device), torch.randn(2, 24, 4, 4).to(device)
    torch.testing.assert_close(op(master, aux), master, rtol=1e-6, atol=1e-6)
    opt = torch.optim.SGD(op.parameters(), lr=0.1)
    target = torch.randn(2, 16, 8, 8).to(device)
    losses = []
    for _ in range(5):
        loss = F.mse_loss(op(master, aux), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], f"{name} did not learn: {losses}"
    assert not torch.allclose(op(master, aux), master)


def test_unknown_operator_lists_valid_ones():
    assert list_injections() == ["add", "concat", "gated", "replace"]
    with pytest.raises(KeyError, match="Registered injection operators: add, concat, gated, replace"):
        build_injection("sum", 4, 4)


def _micro_fusion(**kw):
    torch.manual_seed(0)
    return FusionBackbone(master=build_encoder("dinov3_micro16"), auxiliary=build_encoder("sam2_hiera_micro"), **kw)


def test_fusion_replaces_exactly_the_chosen_level(device):
    fb = _micro_fusion(inject={16: "replace"}).eval().to(device)
    x = torch.randn(2, 3, 64, 96).to(device)
    with torch.no_grad():
        out = fb(x)
        master = fb.master(x)
        aux = fb.auxiliary(x)
    assert fb.out_channels == fb.master.out_channels == {s: f.shape[1] for s, f in out.items()}
    for s in (4, 8, 32):
        torch.testing.assert_close(out[s], master[s])
    torch.testing.assert_close(out[16], match_channels(aux[16], 96))
    assert fb.last_injected == (16,)


def test_gradients_reach_master_never_auxiliary(device):
    fb = _micro_fusion(inject={16: "replace"}).train().to(device)
    assert fb.auxiliary.frozen and not fb.auxiliary.training and fb.master.training
    out = fb(torch.randn(2, 3, 64, 64).to(device))
    sum(f.float().square().mean() for f in out.values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in fb.auxiliary.parameters())
    replaced = fb.master.neck.proj["16"].weight
    assert replaced.grad is None and not replaced.requires_grad, "the replaced level's 1x1 conv is frozen (unused)"
    for s in ("4", "8", "32"):
        assert fb.master.neck.proj[s].weight.grad.abs().sum() > 0
    assert fb.master.trunk.patch_embed.proj.weight.grad.abs().sum() > 0


def test_multi_stride_injection_and_frozen_master():
    fb = _micro_fusion(inject={8: "add", 32: "concat"}, train_master=False)
    assert fb.inject_strides == (8, 32) and fb.master.frozen
    trainable = {n for n, p in fb.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("injectors.") for n in trainable)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out, master = fb(x), fb.master(x)
    for s in (4, 8, 16, 32):  # identity at init everywhere
        torch.testing.assert_close(out[s], master[s], rtol=1e-5, atol=1e-5)


def test_each_encoder_sees_its_own_normalization_and_resolution():
    aux = build_encoder("sam2_hiera_micro")
    aux.pixel_mean, aux.pixel_std = (10.0, 20.0, 30.0), (2.0, 4.0, 8.0)
    fb = FusionBackbone(master=build_encoder("dinov3_micro16"), auxiliary=aux, inject={16: "replace"},
                        aux_input_size=48)
    raw = torch.rand(1, 3, 64, 96) * 255
    mean_m, std_m = torch.tensor(fb.master.pixel_mean).view(1, 3, 1, 1), torch.tensor(fb.master.pixel_std).view(1, 3, 1, 1)
    x = (raw - mean_m) / std_m
    xa = fb.auxiliary_input(x)
    assert xa.shape[-2:] == (32, 48), "long side resized to aux_input_size"
    expected = (raw - torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)) / torch.tensor([2.0, 4.0, 8.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(xa, F.interpolate(expected, size=(32, 48), mode="bilinear", align_corners=False),
                               rtol=1e-4, atol=1e-4)
    out = fb.eval()(x)
    assert out[16].shape == (1, 96, 4, 6), "aux features are resized to the master's grid"


def test_stride_from_profile_is_argmax_of_auxiliary_ef(tmp_path):
    summary = {
        "encoders": {
            "sam2_hiera_micro": {"4": {"EF": {"mean": 6.6}}, "8": {"EF": {"mean": 8.6}},
                                 "16": {"EF": {"mean": 17.1}}, "32": {"EF": {"mean": 12.5}}},
            "dinov3_micro16": {"4": {"EF": {"mean": 1.3}}, "8": {"EF": {"mean": 1.6}},
                               "16": {"EF": {"mean": 2.3}}, "32": {"EF": {"mean": 5.9}}},
        },
        "recommendation": {"master": "dinov3_micro16", "auxiliary": "sam2_hiera_micro", "stride": 16},
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    fb = FusionBackbone(master="dinov3_micro16", auxiliary="sam2_hiera_micro", inject_from_profile=tmp_path)
    assert fb.inject_strides == (16,) and "sam2_hiera_micro" in fb.profile_source
    rev = FusionBackbone(master="sam2_hiera_micro", auxiliary="dinov3_micro16",
                         inject_from_profile=tmp_path / "summary.json", operator="add")
    assert rev.inject_strides == (32,) and rev.injector(32).op_name == "add"
    with pytest.raises(KeyError, match="profiled: dinov3_micro16, sam2_hiera_micro"):
        FusionBackbone(master="dinov3_micro16", auxiliary="sam2_hiera_micro", inject_from_profile=tmp_path,
                       profile_encoder="swin_b")


def test_fusion_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="needs `inject`"):
        _micro_fusion()
    with pytest.raises(ValueError, match=r"valid strides: \(4, 8, 16, 32\)"):
        _micro_fusion(inject={12: "replace"})
    with pytest.raises(FileNotFoundError, match="run tools/profile_encoders.py"):
        _micro_fusion(inject_from_profile="/nonexistent/summary.json")


def test_fusion_inside_detectron2_adapter(device):
    bb = EncoderBackbone(encoder=_micro_fusion(inject={16: "replace"})).eval().to(device)
    with torch.no_grad():
        out = bb(torch.randn(1, 3, 96, 64).to(device))
    for name, spec in bb.output_shape().items():
        assert out[name].shape[1] == spec.channels and out[name].shape[-1] == 64 // spec.stride


def test_dynamic_stride_reproduction_picks_argmax_of_batch_reference_ef():
    """The authors' per-batch rule (docs/differences.md, B10): replace the aux level whose batch-summed reference EF
    is highest."""
    from mgfusion.metrics import compute_metrics

    torch.manual_seed(0)
    fb = FusionBackbone(master=build_encoder("dinov3_micro16"), auxiliary=build_encoder("sam2_hiera_micro"),
                        dynamic_stride=True).eval()
    assert fb.inject_strides == (4, 8, 16, 32) and "dynamic" in repr(fb)
    from skimage import data

    img = torch.from_numpy(data.astronaut()[::4, ::4].copy()).permute(2, 0, 1)[None].float()  # (1,3,128,128)
    mean = torch.tensor(fb.pixel_mean).view(1, 3, 1, 1)
    std = torch.tensor(fb.pixel_std).view(1, 3, 1, 1)
    x = (img - mean) / std
    with torch.no_grad():
        out = fb(x)
        aux = fb.auxiliary(x)
    ef = {s: float(compute_metrics(aux[s], img, stride=s, variant="reference", parts=("EF",),
                                   image_range=255.0)["EF"].sum())
          for s in (4, 8, 16, 32)}
    chosen = max(sorted(ef), key=lambda s: (ef[s], -s))
    assert fb.last_injected == (chosen,)
    torch.testing.assert_close(out[chosen], match_channels(aux[chosen], fb.out_channels[chosen]))
    for s in (4, 8, 16, 32):
        if s != chosen:
            torch.testing.assert_close(out[s], fb.master(x)[s])
