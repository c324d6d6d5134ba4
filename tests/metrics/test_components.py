"""Building blocks: config defaults (docs/metrics.md), selection, spectrum weights, k-means, silhouette, sampling."""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mgfusion.metrics import MetricConfig, list_variants, resolve_config
from mgfusion.metrics.concentration import CONCENTRATION_RULES
from mgfusion.metrics.config import CHOICES
from mgfusion.metrics.kmeans import kmeans_labels
from mgfusion.metrics.primitives import top_fraction_mask
from mgfusion.metrics.silhouette import (
    silhouette_from_masks,
    stratified_mask,
    valid_clusterings,
)
from mgfusion.metrics.spectrum import frequency_content
from mgfusion.metrics.structure import median_of_valid, sfc_grid_shape

from .conftest import same_partition

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def _doc_value(text: str):
    """A value as the hyperparameter table writes it: `name` strings, F/T booleans, Python literals."""
    text = text.replace("**", "").strip()
    if text.startswith("None"):  # "None -> max(2 r1, 3) = 4"
        return None
    if text.startswith("`") and text.endswith("`"):
        return text.strip("`")
    if text in ("F", "T"):
        return text == "T"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _hyperparameter_table() -> dict[str, tuple[str, str]]:
    """``{field: (default cell, reference / paper / corrected cell)}`` of docs/metrics.md's hyperparameter table."""
    lines = DOCS.read_text().splitlines()
    start = lines.index("| field | symbol | default | meaning | reference / paper / corrected |")
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = cells[0].strip("`")
        assert name not in rows, f"docs/metrics.md lists {name} twice"
        rows[name] = (cells[2], cells[4])
    return rows


def test_docs_table_states_every_default_and_variant_switch():
    """docs/metrics.md's hyperparameter table is the documentation of MetricConfig: one row per field, with the
    code's default and the value each registered variant resolves to (bold = differs from the default)."""
    table = _hyperparameter_table()
    fields = {f.name: f.default for f in dataclasses.fields(MetricConfig)}
    missing, unknown = sorted(set(fields) - set(table)), sorted(set(table) - set(fields))
    assert not missing and not unknown, f"docs/metrics.md's table: missing fields {missing}, unknown {unknown}"
    variants = {v: resolve_config(v) for v in list_variants()}
    for name, (default_cell, variant_cell) in table.items():
        assert _doc_value(default_cell) == fields[name], (name, default_cell, fields[name])
        if variant_cell == "same":
            cells = [default_cell] * len(variants)
        else:
            cells = [c.strip() for c in variant_cell.split(" / ")]
        assert len(cells) == len(variants), (name, variant_cell)
        for (variant, cfg), cell in zip(variants.items(), cells):
            value = _doc_value(cell)
            assert getattr(cfg, name) == value, (name, variant, cell)
            assert ("**" in cell) == (value != fields[name]), f"{name}: bold marks the non-default values ({cell})"


def test_resolve_config_derives_and_normalises():
    assert resolve_config("reference").outer_radius == 4
    assert resolve_config("reference", {"r1": 3}).outer_radius == 6  # r2 = max(2 r1, 3) unless given
    assert resolve_config("reference", {"r1": 3, "r2": 5}).outer_radius == 5
    assert resolve_config("corrected", {"scs_ks": [4, 5]}).scs_ks == (4, 5)
    assert list_variants() == ["reference", "paper", "corrected"]
    assert sorted(CONCENTRATION_RULES) == sorted(CHOICES["concentration"])
    with pytest.raises(ValueError, match=r"r2=1 must be >= r1=2"):
        resolve_config("reference", {"r2": 1})


def test_top_fraction_selects_exactly_and_breaks_ties_by_index():
    x = torch.zeros(2, 6, 6)
    x[0, 1:5, 1:5] = torch.tensor([[5.0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 2]])
    sel = top_fraction_mask(x, 0.25, border=1)  # |V| = 16 -> 4 pixels
    assert sel[0].sum() == 4 and sel[0, 1, 1] and sel[0, 4, 4]
    assert sel[0, 1, 2] and sel[0, 1, 3] and not sel[0, 1, 4]  # ties at 1: lowest row-major index first
    assert not sel[1].any()  # flat image: range < 1e-6 selects nothing
    assert not top_fraction_mask(torch.rand(1, 3, 3), 0.5, border=1).any()  # |V| = 1 < 4


@pytest.mark.parametrize("hw", [(9, 14), (16, 16), (15, 21)])
@pytest.mark.parametrize("grid", ["linspace", "fftfreq"])
def test_rfft_band_share_equals_full_spectrum(hw, grid):
    x = torch.rand(1, *hw, generator=torch.Generator().manual_seed(hw[0]), dtype=torch.float64).float()
    h, w = hw
    z = (x[0] - x.mean()) / x.std()
    z = z.clamp(z.mean() - 8, z.mean() + 8) * torch.outer(torch.hann_window(h, periodic=False),
                                                          torch.hann_window(w, periodic=False))
    p = torch.fft.fft2(z.double()).abs().square()
    if grid == "linspace":
        rr = torch.sqrt(torch.linspace(-1, 1, h)[:, None] ** 2 + torch.linspace(-1, 1, w)[None] ** 2)
        high = torch.roll(rr / rr.max() >= 0.15, (-(h // 2), -(w // 2)), (0, 1))
    else:
        high = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.fftfreq(w)[None] ** 2) / (0.5 * 2**0.5) >= 0.15
    want = (p * high).sum() / p.sum()
    assert frequency_content(x, grid=grid).item() == pytest.approx(want.item(), rel=1e-5)


def test_silhouette_matches_sklearn(device):
    from sklearn.metrics import silhouette_score

    gen = torch.Generator().manual_seed(0)
    pts = torch.randn(2, 300, 5, generator=gen)
    pts[0, :100] += 3.0
    labels = torch.randint(0, 4, (2, 2, 300), generator=gen)
    labels[0, 0, :100] = 0
    labels[0, 0, 100:] = torch.randint(1, 4, (200,), generator=gen)
    got = silhouette_from_masks(pts.to(device), labels.to(device), torch.ones_like(labels, dtype=torch.bool,
                                                                                  device=device), 4)
    assert got.device.type == device.type
    got = got.cpu()
    for g in range(2):
        for j in range(2):
            want = silhouette_score(pts[g].double().numpy(), labels[g, j].numpy())
            assert got[g, j].item() == pytest.approx(want, abs=1e-4)
    assert got[0, 0] > 0.15 > abs(got[1, 0].item())  # a real cluster vs random labels


def test_stratified_sample_sizes_follow_spec():
    gen = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.zeros(3000), torch.ones(990), torch.full((6,), 2), torch.full((4,), 3)]).long()
    labels = labels[torch.randperm(4000, generator=gen)].view(1, 1, -1)
    chosen = stratified_mask(labels, 4, 2000, gen)
    counts = [int((chosen & (labels == u)).sum()) for u in range(4)]
    assert counts == [1500, 495, 3, 2]  # max(2, round(2000 c / n)), capped at the cluster size
    assert chosen.sum() == sum(counts)
    small = stratified_mask(labels[..., :1500], 4, 2000, gen)
    assert small.all()  # n <= target: every point


def test_valid_clusterings_and_median():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]]])
    assert valid_clusterings(labels, 2).tolist() == [[True, False, False]]
    vals = torch.tensor([[0.1, 0.5, 0.3], [0.2, 0.4, 9.0], [1.0, 2.0, 3.0]])
    ok = torch.tensor([[True, True, True], [True, True, False], [False, False, False]])
    assert median_of_valid(vals, ok).tolist() == pytest.approx([0.3, 0.3, 0.0])  # numpy: mean of middle two


def test_kmeans_recovers_blobs_and_is_batch_independent(device):
    gen = torch.Generator().manual_seed(0)
    centres = 6.0 * torch.randn(2, 6, 8, generator=gen)
    truth = torch.randint(0, 6, (2, 600), generator=gen)
    cpu_pts = torch.stack([centres[g][truth[g]] for g in range(2)]) + 0.2 * torch.randn(2, 600, 8, generator=gen)
    pts = cpu_pts.to(device)
    labels = kmeans_labels(pts, (6, 4), seed=0)
    assert labels.shape == (2, 2, 600) and labels.dtype == torch.int64 and labels.device == pts.device
    labels = labels.cpu()
    for g in range(2):
        assert same_partition(truth[g], labels[g, 0])  # a bijection between true and found clusters
        assert set(labels[g, 1].tolist()) == {0, 1, 2, 3}
    alone = kmeans_labels(pts[1:], (6, 4), seed=0).cpu()
    if device.type == "cpu":
        assert torch.equal(alone[0], labels[1])
    else:  # other batch sizes may run other kernels: the same clustering, cluster ids aside
        assert all(same_partition(alone[0, j], labels[1, j]) for j in range(2))
        on_cpu = kmeans_labels(cpu_pts, (6, 4), seed=0)
        assert all(same_partition(on_cpu[g, j], labels[g, j]) for g in range(2) for j in range(2))


def test_sfc_cells_at_least_min_cell():
    assert sfc_grid_shape(16, 32, 16, 1) == (16, 16)
    assert sfc_grid_shape(16, 32, 16, 2) == (8, 16)
    assert sfc_grid_shape(128, 256, 16, 2) == (16, 16)
    assert sfc_grid_shape(1, 3, 16, 2) == (1, 1)
    assert math.prod(sfc_grid_shape(64, 64, 16, 2)) == 256
    assert np.isclose(resolve_config("corrected").sfc_min_cell, 2)
