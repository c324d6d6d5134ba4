"""Known answers (docs/metrics.md, known answers), invariances and degenerate inputs, for every variant."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from mgfusion.metrics import METRIC_KEYS, compute_metrics, list_variants
from mgfusion.metrics.precision import shift_radii

from .conftest import accelerator_tolerance, assert_metrics_match

VARIANTS = list_variants()


def _rand_image(h, w, seed=0):
    return (torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8)


@pytest.mark.parametrize("variant", VARIANTS)
def test_constant_features_score_zero(variant, device):
    img = _rand_image(256, 256).to(device)
    for feat in (torch.zeros(1, 8, 32, 32, device=device), torch.full((1, 8, 32, 32), 3.7, device=device)):
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
def test_invariances(variant, photos, device):
    cpu_img = photos["coffee"]
    gen = torch.Generator().manual_seed(0)
    base = F.interpolate(cpu_img.float() / 255, size=(25, 38), mode="area")
    cpu_feat = torch.cat([base, F.avg_pool2d(torch.randn(1, 9, 25, 38, generator=gen), 3, 1, 1)], 1)
    perm = torch.randperm(12, generator=gen)
    feat, img = cpu_feat.to(device), cpu_img.to(device)
    ref = compute_metrics(feat, img, stride=16, variant=variant)
    for name, other in {"rescale": 7.5 * feat, "permute": feat[:, perm.to(device)],
                        "negation (PCA sign flip)": -feat}.items():
        out = compute_metrics(other, img, stride=16, variant=variant)
        for key in METRIC_KEYS:
            rel, abs_ = (1e-4, 1e-5) if device.type == "cpu" else accelerator_tolerance(key)
            assert out[key].item() == pytest.approx(ref[key].item(), rel=rel, abs=abs_), (name, key)
    if device.type != "cpu":
        assert_metrics_match(ref, compute_metrics(cpu_feat, cpu_img, stride=16, variant=variant), device,
                             what="vs CPU")


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
def test_degenerate_inputs_return_defined_values(variant, device):
    one = compute_metrics(torch.randn(2, 5, 1, 1).to(device), _rand_image(32, 32).expand(2, -1, -1, -1).to(device),
                          stride=32, variant=variant)
    assert all(torch.isfinite(v).all() for v in one.values())
    zeros = torch.zeros(2, device=device)
    assert torch.equal(one["SFC"], zeros) and torch.equal(one["SCS"], zeros) and torch.equal(one["EF"], zeros)
    uniform = torch.full((1, 3, 128, 128), 128, dtype=torch.uint8, device=device)
    out = compute_metrics(torch.randn(1, 6, 16, 16).to(device), uniform, stride=8, variant=variant)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert out["EF"].item() == 0.0
    assert out["EF_lift"].item() == 1.0  # no image edges: nothing to align to, reported at chance


def test_nonfinite_features_raise_or_are_zeroed(device):
    feat = torch.randn(3, 4, 16, 16)
    feat[1, 2, 3, 4] = float("nan")
    feat[2, 0, 0, 0] = float("inf")
    clean = feat.clone()
    clean[1, 2, 3, 4] = 0.0
    clean[2, 0, 0, 0] = 0.0
    feat, clean = feat.to(device), clean.to(device)
    img = _rand_image(128, 128).expand(3, -1, -1, -1).to(device)
    with pytest.raises(ValueError, match=r"NaN/Inf.*\[1, 2\]"):
        compute_metrics(feat, img, stride=8)
    out = compute_metrics(feat, img, stride=8, nonfinite="zero")
    assert all(torch.isfinite(v).all() for v in out.values())
    assert_metrics_match(out, compute_metrics(clean, img, stride=8), device, what="non-finite entries zeroed")


def _one_centerline_case():
    """15x15 map, V = rows/cols 1..13, image centerline = column 7 of V; four strong feature-edge pixels in row 5 at
    Chebyshev distance d = 0, 2, 3, 5 from it with energies 4, 2, 1, 3, and one weak pixel (d = 6, energy 5)."""
    energy = torch.zeros(1, 15, 15)
    strong = torch.zeros(1, 15, 15, dtype=torch.bool)
    for col, e in ((7, 4.0), (9, 2.0), (10, 1.0), (12, 3.0)):
        energy[0, 5, col] = e
        strong[0, 5, col] = True
    energy[0, 9, 1] = 5.0
    centre = torch.zeros(1, 15, 15, dtype=torch.bool)
    centre[0, 1:14, 7] = True
    return energy, strong, centre


@pytest.mark.parametrize("rule,want", [
    # outer O = cols 3..11 (d <= 4), core K = cols 5..9 (d <= 2), ring = O \ K; strong energy T = 10.
    # EC = 1 - far share = 1 - 3/10, NC = ring share = 1/10; chances = area shares of O (9 of 13 columns) and of the
    # ring (4 of 13); EC_lift uses the energy share inside O (7/10).
    ("reference", {"EC": 0.7, "NC": 0.1, "EC_chance": 9 / 13, "NC_chance": 4 / 13,
                   "EC_lift": 0.7 / (9 / 13), "NC_lift": 0.1 / (4 / 13)}),
    # all energy in V counts (T = 15, the weak pixel too): EC = core share 6/15, NC = ring share 1/15; chances =
    # area shares of K (5 of 13 columns) and of the ring (4 of 13).
    ("paper", {"EC": 6 / 15, "NC": 1 / 15, "EC_chance": 5 / 13, "NC_chance": 4 / 13,
               "EC_lift": (6 / 15) / (5 / 13), "NC_lift": (1 / 15) / (4 / 13)}),
    # kernels k_r(d) = max(0, 1 - d / (r + 1)): k_2 = 1, 1/3, 0, 0 and k_4 = 1, 3/5, 2/5, 0 at d = 0, 2, 3, 5;
    # shares (4 + 2/3) / 10 and (4 + 6/5 + 2/5) / 10; chances = mean kernel over V's columns (d = |col - 7|):
    # k_2 -> (1 + 2 (2/3 + 1/3)) / 13 = 3/13, k_4 -> (1 + 2 (4 + 3 + 2 + 1) / 5) / 13 = 5/13;
    # EC, NC = (share - chance) / (1 - chance).
    ("corrected", {"EC": (14 / 30 - 3 / 13) / (10 / 13), "NC": (0.56 - 5 / 13) / (8 / 13), "EC_chance": 3 / 13,
                   "NC_chance": 5 / 13, "EC_lift": (14 / 30) / (3 / 13), "NC_lift": 0.56 / (5 / 13)}),
])
def test_concentration_rules_on_a_hand_built_edge(rule, want):
    from mgfusion.metrics.concentration import edge_concentration

    energy, strong, centre = _one_centerline_case()
    got = edge_concentration(rule, energy, strong, centre, border=1, r1=2, r2=4)
    for key, value in want.items():
        assert got[key].item() == pytest.approx(value, rel=1e-6), key
