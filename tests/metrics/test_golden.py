"""Golden test: ``variant="reference"`` against outputs of the authors' own metric functions.

The fixtures (tests/fixtures/reference_metrics/, README there) hold small feature maps, images and what the authors'
code returned on them. Tolerances are far tighter than the project's stated bounds (SFC 1e-3, SCS 0.05, EF 0.06)
wherever the computation is the same algorithm; observed maxima when the fixtures were made: SFC 6e-8, EF 1.1e-5
(slow path) / 2.5e-5 (fast path), FC 1.2e-7, EC*NC 1.5e-7, PCA map 1.5e-6, SCS 0 with the sklearn backend and
0.015 with the torch k-means (a different clustering algorithm: the stated 0.05 applies).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mgfusion.metrics import aggregate, compute_metrics, pca_map, resolve_config
from mgfusion.metrics.edges import image_centerlines
from mgfusion.metrics.primitives import (
    luminance,
    minmax_in_interior,
    sobel_magnitude,
    to_unit_rgb,
    top_fraction_mask,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "reference_metrics"
META = json.loads((FIXTURES / "reference_metrics.json").read_text())
CASES = sorted(META["cases"])


@pytest.fixture(scope="module")
def arrays():
    with np.load(FIXTURES / "reference_metrics.npz") as z:
        return {k: z[k] for k in z.files}


def _inputs(arrays, name):
    case = META["cases"][name]
    feats = torch.from_numpy(arrays[f"{name}/features"].astype(np.float32))[None]
    image = torch.from_numpy(np.ascontiguousarray(arrays[f"images/{case['image']}"].transpose(2, 0, 1)))[None]
    return feats, image, case


@pytest.fixture(scope="module")
def ours(arrays):
    """mgfusion's reference metrics per case: the default (torch) SCS and the sklearn SCS backend."""
    out = {}
    for name in CASES:
        feats, image, case = _inputs(arrays, name)
        res = compute_metrics(feats, image, stride=case["stride"], variant="reference")
        res["SCS_sklearn"] = compute_metrics(feats, None, stride=case["stride"], variant="reference", parts=("SC",),
                                             scs_backend="sklearn")["SCS"]
        out[name] = {k: float(v[0]) for k, v in res.items()}
    return out


def test_fixture_arrays_match_their_description(arrays):
    """Every case's arrays exist with the shapes its JSON entry states, the maps cover the feature grid, the image
    covers it at the case's stride, and nothing is stored that no case uses."""
    assert META["source"]["commit"].startswith("d90aea9") and (FIXTURES / "README.md").is_file()
    used = set()
    for name in CASES:
        case = META["cases"][name]
        c, h, w = case["features_shape"]
        image = f"images/{case['image']}"
        assert arrays[f"{name}/features"].shape == (c, h, w), name
        assert arrays[image].shape == tuple(case["image_shape"]) and arrays[image].dtype == np.uint8, name
        h0, w0 = case["image_shape"][:2]
        assert (-(-h0 // case["stride"]), -(-w0 // case["stride"])) == (h, w), name  # ceil(H0 / stride)
        for key in ("pca_map", "strong_edges", "centerlines"):
            assert arrays[f"{name}/{key}"].shape == (h, w), (name, key)
        used |= {f"{name}/{k}" for k in ("features", "pca_map", "strong_edges", "centerlines")} | {image}
    assert sorted(arrays) == sorted(used)


@pytest.mark.parametrize("name", CASES)
def test_sfc_matches(ours, name):
    assert ours[name]["SFC"] == pytest.approx(META["cases"][name]["SFC"], abs=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_scs_matches(ours, name):
    ref = META["cases"][name]["SCS"]
    assert ours[name]["SCS_sklearn"] == pytest.approx(ref, abs=1e-4)  # same algorithm, same generator draws
    assert ours[name]["SCS"] == pytest.approx(ref, abs=0.05)  # batched torch k-means (docs/metrics.md, SCS)


@pytest.mark.parametrize("name", CASES)
def test_ef_and_factors_match(ours, name):
    ref, got = META["cases"][name], ours[name]
    assert got["EF"] == pytest.approx(ref["EF"], abs=1e-3)
    assert got["EF"] == pytest.approx(ref["EF_fast"], abs=1e-3)
    assert got["FC"] == pytest.approx(ref["FC"], abs=1e-5)
    assert got["SP_len"] == ref["SCL"] == ref["SCL_in_EF"]  # feature pixels (docs/differences.md, B2)
    assert got["SP"] == pytest.approx(64.0 / (64.0 + ref["SCL"]), abs=1e-6)
    if ref["FC"] > 0:  # EF = 100 * EC * NC * FC * SP: the concentration part on its own
        assert got["EC"] * got["NC"] == pytest.approx(ref["EF"] / 100.0 / (ref["FC"] * got["SP"]), abs=1e-5)


def test_sp_length_is_not_always_one(ours):
    """The fixtures include a map without the border artefact (docs/differences.md, B1), so SP_len is exercised."""
    assert {ours[n]["SP_len"] for n in CASES} >= {1.0, 2.0}


@pytest.mark.parametrize("name", CASES)
def test_intermediate_maps_match(arrays, name):
    """The PCA map (up to its arbitrary sign), strong feature edges and image centerlines, pixel for pixel."""
    feats, image, _ = _inputs(arrays, name)
    h, w = feats.shape[-2:]
    cfg = resolve_config("reference")
    pmap = pca_map(feats)[0].numpy()
    ref = arrays[f"{name}/pca_map"]
    assert min(np.abs(pmap - ref).max(), np.abs(1.0 - pmap - ref).max()) < 1e-5
    strong = top_fraction_mask(minmax_in_interior(sobel_magnitude(pca_map(feats)), cfg.border), cfg.q_feat,
                               cfg.border)[0].numpy()
    np.testing.assert_array_equal(strong, arrays[f"{name}/strong_edges"])
    centre = image_centerlines(luminance(to_unit_rgb(image), (h, w)), cfg)[0].numpy()
    np.testing.assert_array_equal(centre, arrays[f"{name}/centerlines"])


@pytest.mark.parametrize("name", CASES)
def test_rounded_aggregate_matches_the_authors_rounded_outputs(ours, name):
    """aggregate(..., "reference") rounds per image to 2 decimals, as the authors' entry points return
    (docs/differences.md, B8)."""
    ref, got = META["cases"][name], ours[name]
    agg = aggregate({"EF": [got["EF"]], "SFC": [got["SFC"]], "SCS": [got["SCS_sklearn"]]}, variant="reference")
    assert agg["EF"]["mean"] == pytest.approx(ref["EF_rounded"], abs=1e-6)
    assert agg["EF"]["mean"] == pytest.approx(ref["EF_fast_rounded"], abs=1e-6)
    assert agg["EF"]["mean"] == pytest.approx(ref["suite_rounded"]["FCD"], abs=1e-6)
    assert agg["SFC"]["mean"] == pytest.approx(ref["suite_rounded"]["SFC"], abs=1e-6)
    assert agg["SCS"]["mean"] == pytest.approx(ref["suite_rounded"]["SCS"], abs=1e-6)
