"""Direction tests of the corrected variant on real CC0 photos (scikit-image), with the reference for contrast."""

from __future__ import annotations

import pytest
import torch

from mgfusion.metrics import compute_metrics

PHOTOS = ("astronaut", "coffee", "chelsea")


def _ef(feats, photo, stride, variant="corrected"):
    imgs = photo.expand(feats.shape[0], -1, -1, -1)
    return compute_metrics(feats, imgs, stride=stride, variant=variant, parts=("EF",))


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("builder", ["image_features", "edge_features"])
def test_edge_features_beat_smoothed_copies_and_noise(photos, helpers, name, builder):
    photo = photos[name]
    aligned = getattr(helpers, builder)(photo, 8)
    noise = torch.randn(aligned.shape, generator=torch.Generator().manual_seed(1))
    feats = torch.cat([aligned, helpers.blur(aligned, 1.0), helpers.blur(aligned, 2.0), noise])
    out = _ef(feats, photo, 8)
    ef, lift = out["EF"], out["EF_lift"]
    assert ef[0] > ef[1] > ef[2], ef
    assert ef[0] > 5 * ef[3] and ef[0] > 1.0, ef
    assert lift[0] > lift[1] > lift[2] > lift[3], lift


def test_noise_scores_at_chance(photos):
    lifts, ec_lifts, nc_lifts, efs, ref_efs = [], [], [], [], []
    for i, name in enumerate(PHOTOS):
        photo = photos[name]
        for stride in (4, 8, 16):
            h, w = -(-photo.shape[-2] // stride), -(-photo.shape[-1] // stride)
            noise = torch.randn(4, 16, h, w, generator=torch.Generator().manual_seed(10 * i + stride))
            out = _ef(noise, photo, stride)
            lifts.append(out["EF_lift"])
            ec_lifts.append(out["EC_lift"])
            nc_lifts.append(out["NC_lift"])
            efs.append(out["EF"])
            ref_efs.append(_ef(noise, photo, stride, "reference")["EF"])
    assert torch.cat(lifts).mean().item() == pytest.approx(1.0, abs=0.1)
    assert torch.cat(ec_lifts).mean().item() == pytest.approx(1.0, abs=0.1)
    assert torch.cat(nc_lifts).mean().item() == pytest.approx(1.0, abs=0.05)
    assert torch.cat(efs).mean().item() < 0.5  # chance-corrected EC/NC: unrelated features score about 0
    assert torch.cat(ref_efs).mean().item() > 5.0  # the reference rewards noise (docs/metrics.md, corrected variant)


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("stride", [4, 8])
def test_alignment_is_rewarded(photos, helpers, name, stride):
    photo = photos[name]
    aligned = helpers.image_features(photo, stride)
    feats = torch.cat([helpers.shift(aligned, d) for d in range(5)])
    ef = _ef(feats, photo, stride)["EF"]
    assert all(ef[d] < ef[d - 1] for d in range(1, 5)), ef  # highest at 0, lower at every larger shift
    lift = _ef(feats, photo, stride)["EF_lift"]
    assert all(lift[d] < lift[0] for d in range(1, 5)), lift
    ref = _ef(feats, photo, stride, "reference")["EF"]
    assert ref[3] > ref[0], ref  # the reference peaks 3-4 cells from the edges (docs/metrics.md, corrected variant)


def test_piecewise_smooth_regions_beat_noise_in_sc(photos, helpers):
    photo = photos["coffee"]
    regions = helpers.image_features(photo, 16)  # piecewise-smooth: the photo's colour regions
    noise = torch.randn(regions.shape, generator=torch.Generator().manual_seed(2))
    feats = torch.cat([regions + 0.02 * noise, noise])
    for variant in ("corrected", "reference"):
        out = compute_metrics(feats, None, stride=16, variant=variant, parts=("SC",))
        assert out["SC"][0] > out["SC"][1] + 0.2, (variant, out["SC"])
        assert out["SFC"][0] > out["SFC"][1] and out["SCS"][0] > out["SCS"][1]


@pytest.mark.parametrize("hw", [(16, 16), (16, 32)])  # OS32 of 512x512 and of 512x1024 inputs
def test_os32_noise_does_not_saturate_sfc(hw):
    noise = torch.randn(4, 32, *hw, generator=torch.Generator().manual_seed(0))
    cor = compute_metrics(noise, None, stride=32, variant="corrected", parts=("SC",))["SFC"]
    ref = compute_metrics(noise, None, stride=32, variant="reference", parts=("SC",))["SFC"]
    assert (cor < 0.45).all() and (cor > 0.1).all(), cor  # 2x2 cells: about 1/4 for i.i.d. noise
    if hw == (16, 16):
        assert (ref > 0.999).all()  # the 16x16 grid makes every cell one pixel: intra floored (docs/metrics.md, SFC)
