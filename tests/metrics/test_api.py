"""Public API contract: outputs, determinism, batch independence, padding (valid_hw), pyramids, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mgfusion.metrics import (
    METRIC_KEYS,
    MetricSuite,
    api,
    compute_metrics,
    compute_pyramid_metrics,
    list_variants,
)

from .conftest import assert_metrics_match

EXTRA_KEYS = ("EC_chance", "NC_chance", "EC_lift", "NC_lift", "EF_lift", "SP_len")


def _batch(photos, stride=16, n=3, channels=12):
    """n real photos (coffee crops of one size) and matching image-correlated features."""
    photo = photos["coffee"][..., :384, :576]
    imgs = torch.cat([photo, photo.flip(-1), photo.flip(-2)][:n])
    h, w = 384 // stride, 576 // stride
    rgb = F.interpolate(imgs.float() / 255, size=(h, w), mode="area")
    gen = torch.Generator().manual_seed(0)
    feats = torch.cat([rgb, F.avg_pool2d(torch.randn(n, channels - 3, h, w, generator=gen), 3, 1, 1)], 1)
    return feats, imgs


@pytest.mark.parametrize("variant", list_variants())
def test_output_contract_and_determinism(photos, variant, device):
    cpu_feats, cpu_imgs = _batch(photos)
    feats, imgs = cpu_feats.to(device), cpu_imgs.to(device)
    out = compute_metrics(feats, imgs, stride=16, variant=variant)
    assert set(METRIC_KEYS + EXTRA_KEYS) <= set(out)
    for key, val in out.items():
        assert val.shape == (3,) and val.dtype == torch.float32 and val.device == feats.device, key
        assert torch.isfinite(val).all(), key
    assert ((out["SC"] - torch.sqrt(out["SFC"] * out["SCS"])).abs() < 1e-6).all()
    assert (out["EF"] * 100).round().ne(out["EF"] * 100).any()  # values are not rounded
    assert_metrics_match(compute_metrics(feats, imgs, stride=16, variant=variant), out, device, what="repeat")
    if device.type != "cpu":  # the accelerator computes what the CPU computes
        assert_metrics_match(out, compute_metrics(cpu_feats, cpu_imgs, stride=16, variant=variant), device,
                             what="vs CPU")


def test_independent_of_batch_composition_and_order(photos, device):
    feats, imgs = (t.to(device) for t in _batch(photos))
    full = compute_metrics(feats, imgs, stride=16, variant="corrected")
    order = torch.tensor([2, 0], device=device)
    part = compute_metrics(feats[order], imgs[order], stride=16, variant="corrected")
    single = compute_metrics(feats[1:2], imgs[1:2], stride=16, variant="corrected")
    assert_metrics_match(part, {k: v[order] for k, v in full.items()}, device, what="subset, reordered")
    assert_metrics_match(single, {k: v[1:2] for k, v in full.items()}, device, what="single image")


def test_seed_changes_only_the_stochastic_scs(photos):
    feats, imgs = _batch(photos, n=1)
    a = compute_metrics(feats, imgs, stride=16, seed=0)
    b = compute_metrics(feats, imgs, stride=16, seed=1)
    for key in ("SFC", "EC", "NC", "FC", "SP", "EF"):
        assert torch.equal(a[key], b[key]), key
    assert abs(a["SCS"].item() - b["SCS"].item()) < 0.02


def _padded_case(photos):
    """Image 0 is 192x296 (valid) padded to 256x320; features padded with junk. Image 1 fills the canvas."""
    big = photos["astronaut"][..., :256, :320]
    small = photos["chelsea"][..., :192, :296]
    canvas = torch.zeros(2, 3, 256, 320, dtype=torch.uint8)
    canvas[0, :, :192, :296] = small[0]
    canvas[1] = big[0]
    gen = torch.Generator().manual_seed(0)
    feats = 5.0 * torch.randn(2, 10, 32, 40, generator=gen)  # junk in the padded area
    f_small = F.avg_pool2d(torch.randn(1, 10, 24, 37, generator=gen), 3, 1, 1)
    f_small[:, :3] += F.interpolate(small.float() / 255, size=(24, 37), mode="area")
    feats[0, :, :24, :37] = f_small[0]
    return canvas, feats, small, f_small


def test_valid_hw_excludes_padding(photos, device):
    canvas, feats, small, f_small = (t.to(device) for t in _padded_case(photos))
    got = compute_metrics(feats, canvas, stride=8, variant="corrected", valid_hw=[(192, 296), (256, 320)])
    alone = compute_metrics(f_small, small, stride=8, variant="corrected")
    whole = compute_metrics(feats[1:], canvas[1:], stride=8, variant="corrected")
    naive = compute_metrics(feats, canvas, stride=8, variant="corrected")
    tol = (1e-5, 1e-6)
    assert_metrics_match({k: v[:1] for k, v in got.items()}, alone, device, cpu_tol=tol, what="padded image")
    assert_metrics_match({k: v[1:] for k, v in got.items()}, whole, device, cpu_tol=tol, what="full image")
    assert (naive["SFC"][0] - alone["SFC"][0]).abs() > 0.01  # without valid_hw the padding counts


def test_list_of_variable_size_images(photos, device):
    canvas, feats, small, _ = (t.to(device) for t in _padded_case(photos))
    as_list = compute_metrics(feats, [small[0], canvas[1]], stride=8, variant="reference", parts=("EF",))
    explicit = compute_metrics(feats, canvas, stride=8, variant="reference", parts=("EF",),
                               valid_hw=torch.tensor([[192, 296], [256, 320]], device=device))
    assert_metrics_match(as_list, explicit, device, cpu_tol=(1e-5, 1e-6))


def test_pyramid_matches_per_level_calls(photos, device):
    photo = photos["coffee"][..., :384, :576].to(device)
    gen = torch.Generator().manual_seed(0)
    pyramid = {s: torch.randn(1, 8, 384 // s, 576 // s, generator=gen).to(device) for s in (16, 32)}
    got = compute_pyramid_metrics(pyramid, photo, variant="paper")
    assert list(got) == [16, 32]
    for s, f in pyramid.items():
        assert_metrics_match(got[s], compute_metrics(f, photo, stride=s, variant="paper"), device, what=f"stride {s}")
    suite = MetricSuite(variant="paper")
    assert_metrics_match(suite.pyramid(pyramid, photo)[16], got[16], device, what="MetricSuite")
    assert "paper" in repr(suite)


def test_parts_images_and_dtypes(photos, device):
    feats, imgs = (t.to(device) for t in _batch(photos, n=2))
    sc_only = compute_metrics(feats, None, stride=16, parts=("SC",))
    assert set(sc_only) == {"SFC", "SCS", "SC"}
    ef_only = compute_metrics(feats, imgs, stride=16, parts=["EF"])
    assert "EF" in ef_only and "SFC" not in ef_only
    as_float = compute_metrics(feats, imgs.float() / 255.0, stride=16, parts=["EF"], image_range=1.0)
    assert_metrics_match(as_float, ef_only, device, what="float image")
    with torch.autocast(device.type, dtype=torch.bfloat16):  # the caller's autocast is switched off inside
        under_autocast = compute_metrics(feats, imgs, stride=16, parts=["EF"])
    assert_metrics_match(under_autocast, ef_only, device, what="autocast")
    bf16 = compute_metrics(feats.to(torch.bfloat16), imgs, stride=16)
    assert all(v.dtype == torch.float32 and v.device == feats.device and torch.isfinite(v).all()
               for v in bf16.values())
    # bfloat16 features are the float32 ones rounded to 8 mantissa bits, computed in float32: values move by < 1e-3
    full = compute_metrics(feats, imgs, stride=16)
    for key in full:
        torch.testing.assert_close(bf16[key], full[key], rtol=0.01, atol=0.01, msg=key)


def test_chunking_does_not_change_results(photos, monkeypatch, device):
    feats, imgs = (t.to(device) for t in _batch(photos))
    full = compute_metrics(feats, imgs, stride=16, variant="corrected")
    for name in ("_CHUNK_ELEMENTS", "_CHUNK_ELEMENTS_ACCELERATOR"):  # the CPU's budget and the accelerators'
        monkeypatch.setattr(api, name, feats[0].numel())  # one image per chunk
    chunked = compute_metrics(feats, imgs, stride=16, variant="corrected")
    assert_metrics_match(chunked, full, device, cpu_tol=(1e-6, 1e-7))


@pytest.mark.parametrize("kwargs,match", [
    ({"variant": "fancy"}, r"unknown metric variant 'fancy'.*reference.*paper.*corrected"),
    ({"q_fet": 0.1}, r"unknown metric hyper-parameter\(s\) \['q_fet'\].*q_feat"),
    ({"fc_map": "rgb"}, r"fc_map='rgb' is not valid.*pca.*l2"),
    ({"q_img": 1.5}, r"q_img must lie in \(0, 1\]"),
    ({"parts": ("SC", "XY")}, r"parts=.*subset of \['SC', 'EF'\]"),
    ({"stride": 0}, r"stride must be a positive integer"),
])
def test_bad_arguments_name_the_problem(kwargs, match):
    feats = torch.randn(1, 4, 16, 16)
    img = torch.zeros(1, 3, 128, 128, dtype=torch.uint8)
    args = {"stride": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        compute_metrics(feats, img, **args)
    if "stride" not in kwargs and "parts" not in kwargs:
        with pytest.raises(ValueError, match=match):
            MetricSuite(**kwargs)


def test_bad_inputs_name_the_problem():
    feats = torch.randn(2, 4, 16, 16)
    img = torch.zeros(2, 3, 128, 128, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"images must be \(B,3,H0,W0\) RGB with B=2"):
        compute_metrics(feats, img[:1], stride=8)
    with pytest.raises(ValueError, match=r"do not cover the same field of view"):
        compute_metrics(feats, img.transpose(2, 3)[..., :64], stride=8)
    with pytest.raises(ValueError, match=r"needs 17x16 feature cells at stride 8, but the features are 16x16"):
        compute_metrics(feats, img, stride=8, valid_hw=[(130, 128), (128, 128)])
    with pytest.raises(ValueError, match=r"images are required to compute EF"):
        compute_metrics(feats, None, stride=8)
    with pytest.raises(ValueError, match=r"features must be a \(B,C,H,W\) tensor"):
        compute_metrics(feats[0], img, stride=8)
    with pytest.raises(ValueError, match=r"valid_hw must hold one \(H0, W0\) pair per image"):
        compute_metrics(feats, img, stride=8, valid_hw=[(128, 128)])
    with pytest.raises(ValueError, match=r"same images; batch sizes per stride: \{8: 2, 16: 1\}"):
        compute_pyramid_metrics({8: feats, 16: feats[:1, :, :8, :8]}, img, parts=("SC",))


def test_variant_selectable_from_a_hydra_config(photos):
    instantiate = pytest.importorskip("hydra.utils").instantiate
    omegaconf = pytest.importorskip("omegaconf")
    node = omegaconf.OmegaConf.create({"_target_": "mgfusion.metrics.MetricSuite", "variant": "corrected",
                                       "parts": ["EF"], "q_feat": 0.2})
    suite = instantiate(node)
    feats, imgs = _batch(photos, n=1)
    want = compute_metrics(feats, imgs, stride=16, variant="corrected", parts=("EF",), q_feat=0.2)
    got = suite(feats, imgs, stride=16)
    assert suite.config.q_feat == 0.2 and suite.config.concentration == "corrected"
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_package_imports_only_torch_numpy_scipy_sklearn():
    import pathlib
    import subprocess
    import sys

    code = ("import sys, mgfusion.metrics as m; "
            "bad = [k for k in sys.modules if k.split('.')[0] in ('detectron2', 'timm', 'hydra') "
            "or (k.startswith('mgfusion.') and not k.startswith('mgfusion.metrics') "
            "and k not in ('mgfusion.utils', 'mgfusion.utils.registry'))]; print(bad)")
    root = pathlib.Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
