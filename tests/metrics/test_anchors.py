"""Known answers (docs/metrics.md, known answers), invariances and degenerate inputs, for every variant."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from mgfusion.metrics import METRIC_KEYS, compute_metrics, list_variants
from mgfusion.metrics.precision import shift_radii

VARIANTS = list_variants()


def _rand_image(h, w, seed=0):
    return (torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8)


@pytest.mark.parametrize("variant", VARIANTS)
def test_constant_features_score_zero(variant):
    img = _rand_image(256, 256)
    for feat in (torch.zeros(1, 8, 32, 32), torch.full((1, 8, 32, 32), 3.7)):
        out = compute_metrics(feat, img, stride=8, variant=variant)
        assert out["SFC"].item() == 0.0 and out["SCS"].item() == 0.0 and out["SC"].item() == 0.0
        assert out["EF"].item() == 0.0
        assert all(torch.isfinite(out[k]).all() for k in out)


def test_piecewise_constant_grid_gives_sfc_one():
    gen = torch.Generator().manual_seed(0)
    cells = torch.randn(1, 4, 16, 16, generator=gen)
    feat = F.interpolate(cells, scale_factor=4, mode="nearest")  # 64x64, constant on the 16x16 SFC grid
    for variant in VARIANTS:
        sfc = compute_metrics(feat, None, stride=8, variant=variant, parts=("SC",))["SFC"].item()
        assert sfc == pytest.approx(1.0, abs=2e-6), variant  # intra hits the 1e-6 floor
    noise = torch.randn(1, 4, 64, 64, generator=gen)
    assert compute_metrics(noise, None, stride=8, parts=("SC",))["SFC"].item() < 0.2


@pytest.mark.parametrize("hw,radii", [
    ((128, 256), (1, 2, 3, 4, 6, 8, 10, 13, 18, 24, 32, 43, 57, 76)),
    ((64, 128), (1, 2, 3, 4, 5, 7, 9, 11, 14, 18, 23, 30, 38)),
    ((32, 64), (1, 2, 3, 4, 5, 6, 7, 9, 11, 13, 16, 19)),
    ((16, 32), tuple(range(1, 10))),
])
def test_sp_radii_lists(hw, radii):
    assert shift_radii(*hw) == radii


def _smooth_features(h=32, w=48, c=6, seed=0):
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    phases = torch.rand(c, 2, generator=torch.Generator().manual_seed(seed)) * 6
    chans = [4.0 + torch.sin(xx / 7.0 + p[0]) + torch.cos(yy / 5.0 + p[1]) for p in phases]
    return torch.stack(chans)[None]


def test_reference_sp_quirk_length_one_on_smooth_maps():
    feat = _smooth_features()
    img = _rand_image(256, 384)
    ref = compute_metrics(feat, img, stride=8, variant="reference", parts=("EF",))
    assert ref["SP_len"].item() == 1.0
    assert ref["SP"].item() == pytest.approx(64 / 65)
    paper = compute_metrics(feat, img, stride=8, variant="paper", parts=("EF",))
    assert paper["SP"].item() == pytest.approx(64 / (64 + 8))  # same length, in image pixels
    cor = compute_metrics(feat, img, stride=8, variant="corrected", parts=("EF",))
    assert cor["SP_len"].item() > 2.0
    assert cor["SP"].item() < 64 / (64 + 2 * 8)


def test_corrected_sp_varies_with_sharpness(helpers):
    gen = torch.Generator().manual_seed(1)
    sharp = F.interpolate(torch.randn(1, 8, 8, 12, generator=gen), scale_factor=4, mode="nearest")  # 32x48
    img = _rand_image(256, 384)
    sps, refs = [], []
    for sigma in (0.0, 1.0, 2.0, 4.0):
        feat = sharp if sigma == 0 else helpers.blur(sharp, sigma)
        sps.append(compute_metrics(feat, img, stride=8, variant="corrected", parts=("EF",))["SP"].item())
        refs.append(compute_metrics(feat, img, stride=8, variant="reference", parts=("EF",))["SP"].item())
    assert all(a > b for a, b in itertools.pairwise(sps)), sps
    assert max(refs) - min(refs) < 1e-6  # the reference's SP does not see sharpness (bug B1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_invariances(variant, photos):
    img = photos["coffee"]
    gen = torch.Generator().manual_seed(0)
    base = F.interpolate(img.float() / 255, size=(25, 38), mode="area")
    feat = torch.cat([base, F.avg_pool2d(torch.randn(1, 9, 25, 38, generator=gen), 3, 1, 1)], 1)
    ref = compute_metrics(feat, img, stride=16, variant=variant)
    perm = torch.randperm(12, generator=gen)
    for name, other in {"rescale": 7.5 * feat, "permute": feat[:, perm], "negation (PCA sign flip)": -feat}.items():
        out = compute_metrics(other, img, stride=16, variant=variant)
        for key in METRIC_KEYS:
            assert out[key].item() == pytest.approx(ref[key].item(), rel=1e-4, abs=1e-5), (name, key)


def test_pca_sign_flip_leaves_edge_quantities_unchanged(photos):
    from mgfusion.metrics.config import resolve_config
    from mgfusion.metrics.edges import edge_fidelity, image_centerlines
    from mgfusion.metrics.primitives import luminance, to_unit_rgb

    gen = torch.Generator().manual_seed(0)
    pmap = F.avg_pool2d(torch.rand(1, 1, 30, 40, generator=gen), 3, 1, 1)[:, 0]
    l2 = torch.rand(1, 30, 40, generator=gen)
    img = photos["chelsea"]
    for variant in VARIANTS:
        cfg = resolve_config(variant)
        centre = image_centerlines(luminance(to_unit_rgb(img), (30, 40)), cfg)
        a = edge_fidelity(pmap, l2, centre, stride=16, cfg=cfg)
        b = edge_fidelity(1.0 - pmap, l2, centre, stride=16, cfg=cfg)
        for key in ("EC", "NC", "FC", "EF"):
            assert a[key].item() == pytest.approx(b[key].item(), rel=1e-5, abs=1e-6), (variant, key)


@pytest.mark.parametrize("variant", VARIANTS)
def test_degenerate_inputs_return_defined_values(variant):
    one = compute_metrics(torch.randn(2, 5, 1, 1), _rand_image(32, 32).expand(2, -1, -1, -1), stride=32,
                          variant=variant)
    assert all(torch.isfinite(v).all() for v in one.values())
    assert torch.equal(one["SFC"], torch.zeros(2)) and torch.equal(one["SCS"], torch.zeros(2))
    assert torch.equal(one["EF"], torch.zeros(2))
    uniform = torch.full((1, 3, 128, 128), 128, dtype=torch.uint8)
    out = compute_metrics(torch.randn(1, 6, 16, 16), uniform, stride=8, variant=variant)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert out["EF"].item() == 0.0
    assert out["EF_lift"].item() == 1.0  # no image edges: nothing to align to, reported at chance


def test_nonfinite_features_raise_or_are_zeroed():
    feat = torch.randn(3, 4, 16, 16)
    feat[1, 2, 3, 4] = float("nan")
    feat[2, 0, 0, 0] = float("inf")
    img = _rand_image(128, 128).expand(3, -1, -1, -1)
    with pytest.raises(ValueError, match=r"NaN/Inf.*\[1, 2\]"):
        compute_metrics(feat, img, stride=8)
    out = compute_metrics(feat, img, stride=8, nonfinite="zero")
    assert all(torch.isfinite(v).all() for v in out.values())
    clean = feat.clone()
    clean[1, 2, 3, 4] = 0.0
    clean[2, 0, 0, 0] = 0.0
    assert torch.equal(out["EF"], compute_metrics(clean, img, stride=8)["EF"])


def test_reference_ec_nc_ordering_and_ranges(photos):
    img = photos["astronaut"]
    feat = torch.randn(1, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    out = compute_metrics(feat, img, stride=16, variant="reference", parts=("EF",))
    assert 0.0 <= out["NC"].item() <= out["EC"].item() <= 1.0  # ring is part of the outer region
    assert 0.0 <= out["EF"].item() <= 100.0
    assert math.isclose(out["EF"].item(), 100 * (out["EC"] * out["NC"] * out["FC"] * out["SP"]).item(), rel_tol=1e-5)
