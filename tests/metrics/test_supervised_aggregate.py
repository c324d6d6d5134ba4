"""Supervised counterparts (our reconstruction), Spearman helper and dataset aggregation (docs/metrics.md)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mgfusion.metrics import aggregate, compute_metrics, sc_gt, spearman
from mgfusion.metrics.supervised import downsample_labels


def _segments(seed=0, h=24, w=32, stride=8, n_seg=5):
    """Blocky GT label maps at image resolution and features constant per segment (+ a noise copy)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, n_seg, (1, 1, h // 4, w // 4), generator=gen).float()
    grid = F.interpolate(coarse, size=(h, w), mode="nearest")[:, 0].long()  # (1,h,w) on the feature grid
    labels = grid.repeat_interleave(stride, 1).repeat_interleave(stride, 2)  # (1,h*s,w*s)
    centres = 3.0 * torch.randn(n_seg, 16, generator=gen)
    feats = centres[grid].permute(0, 3, 1, 2) + 0.05 * torch.randn(1, 16, h, w, generator=gen)
    noise = torch.randn(1, 16, h, w, generator=gen)
    return torch.cat([feats, noise]), labels.repeat(2, 1, 1)


def test_sc_gt_separates_label_aligned_features_from_noise():
    feats, labels = _segments()
    out = sc_gt(feats, stride=8, semantic=labels, instance=labels)
    assert out["SFC_gt"][0] > 0.95 and out["SCS_gt"][0] > 0.8 and out["SC_gt"][0] > 0.9
    assert out["SFC_gt"][1] < 0.1 and out["SC_gt"][1] < 0.3
    assert torch.allclose(out["SC_gt"], torch.sqrt(out["SFC_gt"] * out["SCS_gt"]))


def test_sc_gt_ignores_unlabelled_pixels_and_handles_one_segment():
    feats, labels = _segments()
    masked = labels.clone()
    masked[:, :, 128:] = 255  # right half unlabelled
    out = sc_gt(feats[:1], stride=8, semantic=masked[:1])
    assert out["SFC_gt"].item() > 0.95
    single = sc_gt(feats[:1], stride=8, semantic=torch.zeros_like(labels[:1]))
    assert single["SCS_gt"].item() == 0.0 and single["SC_gt"].item() == 0.0
    with pytest.raises(ValueError, match="at least one of semantic= or instance="):
        sc_gt(feats, stride=8)
    with pytest.raises(ValueError, match=r"do not match a 24x32 feature grid at stride 8"):
        sc_gt(feats, stride=8, semantic=labels[:, :100])


def test_downsample_labels_majority_and_padding():
    lab = torch.tensor([[[1, 1, 2, 2, 2], [1, 3, 2, 2, 255], [255, 255, 4, 4, 4]]])
    grid = downsample_labels(lab, (2, 3), stride=2, ignore_label=255)
    assert grid.tolist() == [[[1, 2, 2], [255, 4, 4]]]  # padding and 255 never win the vote


def _spearman_by_definition(x, y) -> tuple[float, float]:
    """rho = Pearson correlation of the average ranks (ties share their mean rank); two-sided p from Student's t
    with n - 2 degrees of freedom."""
    from scipy.stats import rankdata
    from scipy.stats import t as student_t

    rx, ry = rankdata(x), rankdata(y)  # "average" ranks
    rho = float(np.corrcoef(rx, ry)[0, 1])
    n = len(rx)
    if abs(rho) == 1.0:
        return rho, 0.0
    t_stat = rho * math.sqrt((n - 2) / (1.0 - rho * rho))
    return rho, float(2 * student_t.sf(abs(t_stat), n - 2))


def _exact_permutation_p(x, y) -> float:
    """Two-sided exact p of rho: the share of all orderings of y whose |rho| reaches the observed one (no ties)."""
    rho = _spearman_by_definition(x, y)[0]
    rhos = [_spearman_by_definition(x, perm)[0] for perm in itertools.permutations(y)]
    return sum(abs(r) >= abs(rho) - 1e-12 for r in rhos) / len(rhos)


@pytest.mark.parametrize("n", [5, 12, 40])
def test_spearman_equals_its_definition_with_ties(n):
    rng = np.random.default_rng(n)
    x = rng.integers(0, 4, n).astype(float)  # many ties
    y = x + rng.integers(-2, 3, n)  # correlated, with ties of its own
    rho, p = spearman(x.tolist(), torch.from_numpy(y))  # lists and tensors alike
    want_rho, want_p = _spearman_by_definition(x, y)
    assert rho == pytest.approx(want_rho, abs=1e-12) and p == pytest.approx(want_p, rel=1e-9, abs=1e-15)
    assert spearman(x, -y)[0] == pytest.approx(-rho, abs=1e-12)  # reversed ranking
    assert spearman(np.exp(x), y) == pytest.approx((rho, p))  # ranks only: any increasing map of x


def test_spearman_p_is_the_t_approximation_as_in_the_paper():
    """The paper's EF per stride vs the AP gain of injecting SAM2 there (docs/metrics.md, supervised counterparts):
    rho = 0.8 and p = 0.2 for n = 4 is Student's t approximation (scipy's convention); the exact permutation p of
    the same data is 1/3 (8 of the 24 orderings reach |rho| >= 0.8)."""
    ef, ap_gain = [6.21, 8.82, 17.89, 13.32], [2.8, 7.7, 11.1, 4.9]
    rho, p = spearman(ef, ap_gain)
    assert rho == pytest.approx(0.8) and p == pytest.approx(0.2)
    assert _exact_permutation_p(ef, ap_gain) == pytest.approx(1 / 3)
    # a perfect ranking of n = 3 (the paper's Table 7 SC vs SC_gt): rho = 1 and p = 0 under the approximation
    assert spearman([0.75, 0.68, 0.56], [0.46, 0.36, 0.09]) == (pytest.approx(1.0), pytest.approx(0.0))
    assert _exact_permutation_p([0.75, 0.68, 0.56], [0.46, 0.36, 0.09]) == pytest.approx(1 / 3)


def test_spearman_rejects_what_it_cannot_rank():
    with pytest.raises(ValueError, match=r">= 3 values, got 2 and 2"):
        spearman([1, 2], [2, 1])
    with pytest.raises(ValueError, match=r"equally long sequences of >= 3 values, got 4 and 3"):
        spearman([1, 2, 3, 4], [1, 2, 3])
    with pytest.raises(ValueError, match="undefined for a constant sequence"):
        spearman([1, 2, 3], [5, 5, 5])


def test_aggregate_reference_rounds_per_image_then_mean():
    vals = {"EF": torch.tensor([0.004, 0.004, 1.006]), "SC": [0.333, 0.334, 0.335]}
    ref = aggregate(vals, "reference")
    assert ref["EF"]["mean"] == pytest.approx(0.34)  # (0 + 0 + 1.01) / 3 = 0.3367 -> 0.34 (bug B8 kept)
    assert ref["SC"]["mean"] == pytest.approx(0.33) and ref["SC"]["count"] == 3
    cor = aggregate([{"EF": torch.tensor([0.004, 0.004])}, {"EF": torch.tensor([1.006])}], "corrected")
    assert cor["EF"]["mean"] == pytest.approx(1.014 / 3)
    assert cor["EF"]["std"] == pytest.approx(torch.tensor([0.004, 0.004, 1.006], dtype=torch.float64).std(
        unbiased=False).item())
    assert cor["EF"]["count"] == 3
    with pytest.raises(ValueError, match="unknown metric variant"):
        aggregate(vals, "fancy")
    with pytest.raises(ValueError, match="non-finite"):
        aggregate({"EF": [1.0, float("nan")]}, "paper")


def test_aggregate_accepts_compute_metrics_outputs(photos):
    photo = photos["astronaut"]
    feats = torch.randn(2, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    out = compute_metrics(feats, photo.expand(2, -1, -1, -1), stride=16, parts=("EF",))
    agg = aggregate([out, out], "paper")
    assert agg["EF"]["count"] == 4
    assert agg["EF"]["mean"] == pytest.approx(out["EF"].double().mean().item(), rel=1e-6)


def test_pca_map_is_the_first_component_in_unit_range():
    from mgfusion.metrics import pca_map

    torch.manual_seed(0)
    base = torch.linspace(0, 1, 12).view(1, 1, 1, 12).expand(2, 1, 10, 12)
    feats = torch.cat([3 * base, -2 * base, 0.01 * torch.randn(2, 1, 10, 12)], dim=1)
    m = pca_map(feats)
    assert m.shape == (2, 10, 12)
    assert m.flatten(1).amin(1).tolist() == [0.0, 0.0] and m.flatten(1).amax(1).tolist() == [1.0, 1.0]  # min-max
    corr = torch.corrcoef(torch.stack([m[0].flatten(), base[0, 0].flatten()]))[0, 1]
    assert corr.abs() > 0.95, "the map follows the dominant (ramp) component, up to sign"
    assert torch.equal(pca_map(torch.ones(1, 4, 5, 5)), torch.zeros(1, 5, 5))
