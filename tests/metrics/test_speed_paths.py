"""The fast paths of the metric suite give the results of the plain computations they replace.

Leading eigenpairs by verified subspace iteration vs ``eigh``, block-symmetric Gram matrices vs ``bmm``, the SCS
subsample's Gram taken from the full pass vs a direct computation, block-symmetric silhouette sums, separable
dilation, k-means on the flat centre axis (batch independence, check frequency), registries.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from mgfusion.metrics import compute_metrics, eigen, kmeans, list_variants
from mgfusion.metrics.concentration import CONCENTRATION_RULES, edge_concentration
from mgfusion.metrics.config import VARIANTS, register_variant, resolve_config
from mgfusion.metrics.gram import block_edges, gram
from mgfusion.metrics.pca import centre_channels, principal_scores
from mgfusion.metrics.primitives import dilate
from mgfusion.metrics.structure import scs_sample_indices
from mgfusion.utils.registry import RegistryError

from .conftest import same_partition


def _low_rank_plus_noise(b: int, m: int, rank: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    basis = torch.randn(b, m, rank, generator=gen) * torch.linspace(6.0, 1.0, rank)
    x = torch.cat([basis, 0.05 * torch.randn(b, m, 4 * m, generator=gen)], dim=-1)
    return torch.bmm(x, x.transpose(1, 2))


@pytest.mark.parametrize("m", [300, 512])
def test_subspace_iteration_matches_eigh(m, device):
    cpu_sym = _low_rank_plus_noise(2, m, 20, seed=m)
    sym = cpu_sym.to(device)
    assert m > eigen.EXACT_MAX_DIM
    vals, vecs = eigen.leading_eigenpairs(sym, 32)
    assert vals.device == sym.device and vecs.dtype == torch.float32
    vals, vecs = vals.cpu(), vecs.cpu()
    ref_vals, ref_vecs = torch.linalg.eigh(cpu_sym.double())
    ref_vals, ref_vecs = ref_vals.flip(-1)[:, :32], ref_vecs.flip(-1)[:, :, :32]
    torch.testing.assert_close(vals[:, :20].double(), ref_vals[:, :20], rtol=1e-5, atol=1e-3)  # signal part
    lead_cos = (vecs[:, :, 0].double() * ref_vecs[:, :, 0]).sum(1).abs()
    assert (lead_cos > 1 - 1e-6).all()  # the leading vector is exact to float32 (the EF's PCA map)
    # the signal subspace (20 directions) is found; the rest lies in the flat noise floor
    proj = torch.linalg.matrix_norm(vecs[:, :, :20].double().transpose(1, 2) @ ref_vecs[:, :, :20]) ** 2
    assert (proj > 20 - 1e-4).all()
    alone_vals, alone_vecs = eigen.leading_eigenpairs(sym[1:], 32)
    if device.type == "cpu":  # batch independent
        assert torch.equal(alone_vals, vals[1:]) and torch.equal(alone_vecs, vecs[1:])
    else:  # (another batch size may run other kernels)
        torch.testing.assert_close(alone_vals.cpu(), vals[1:], rtol=1e-5, atol=1e-3)
        assert ((alone_vecs[:, :, 0].cpu() * vecs[1:, :, 0]).sum(1).abs() > 1 - 1e-5).all()


def test_flat_spectrum_falls_back_to_eigh(device):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 400, 410, generator=gen).to(device)  # pure noise: eigenvalues too close for the iteration
    sym = torch.bmm(x, x.transpose(1, 2))
    vals, vecs = eigen.leading_eigenpairs(sym, 4)
    ref_vals, ref_vecs = torch.linalg.eigh(sym)
    ref_vals, ref_vecs = ref_vals.flip(-1)[:, :4], ref_vecs.flip(-1)[:, :, :4]
    if device.type == "cpu":
        assert torch.equal(vals, ref_vals) and torch.equal(vecs, ref_vecs)
    else:
        torch.testing.assert_close(vals, ref_vals, rtol=1e-6, atol=0.0)
        assert ((vecs * ref_vecs).sum(1).abs() > 1 - 1e-5).all()  # eigenvectors up to their sign


@pytest.mark.parametrize("m,k", [(7, 9), (112, 300), (224, 64), (448, 100), (900, 33)])
def test_block_symmetric_gram_equals_bmm(m, k, device):
    x = torch.randn(2, m, k, generator=torch.Generator().manual_seed(m)).to(device)
    torch.testing.assert_close(gram(x), torch.bmm(x, x.transpose(1, 2)), rtol=1e-5, atol=1e-4)
    edges = block_edges(m)
    sizes = [b - a for a, b in itertools.pairwise(edges)]
    assert edges[0] == 0 and edges[-1] == m and (len(sizes) == 1 or min(sizes) >= 48)


def test_subsample_pca_route_equals_the_direct_one(device):
    gen = torch.Generator().manual_seed(1)
    feats = (3.0 + torch.randn(2, 112, 40, 128, generator=gen)).to(device)  # 5120 pixels > 4096: SCS subsamples
    sub = scs_sample_indices(40 * 128, 4096, 0, feats.device)
    cf = centre_channels(feats, subsample=sub)
    plain = centre_channels(feats)
    torch.testing.assert_close(cf.gram, plain.gram, rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(cf.std, plain.std, rtol=1e-5, atol=1e-6)
    cols = feats.flatten(2)[:, :, sub]
    cols = cols - cols.mean(dim=2, keepdim=True)
    torch.testing.assert_close(cf.sub_cols, cols, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cf.sub_gram, torch.bmm(cols, cols.transpose(1, 2)), rtol=1e-4, atol=1e-1)
    fast = principal_scores(cf, 8, index=sub)
    direct = principal_scores(plain, 8, index=sub)  # the previous route: gather, re-centre, own covariance
    cos = (F.normalize(fast, dim=1) * F.normalize(direct, dim=1)).sum(1).abs()
    assert (cos > 1 - 1e-4).all()


def test_separable_dilation_equals_square_max_pool(device):
    mask = (torch.rand(3, 40, 57, generator=torch.Generator().manual_seed(2)) > 0.97).to(device)
    for r in (1, 2, 4, 6):
        k = 2 * r + 1
        want = F.max_pool2d(mask.unsqueeze(1).float(), k, stride=1, padding=r).squeeze(1) > 0
        assert torch.equal(dilate(mask, r), want), r


def test_kmeans_without_convergence_checks_gives_the_same_labels(monkeypatch, device):
    gen = torch.Generator().manual_seed(4)
    centres = 5.0 * torch.randn(3, 6, 8, generator=gen)
    pts = centres[:, torch.randint(0, 6, (900,), generator=gen)] + torch.randn(3, 900, 8, generator=gen)
    checked = kmeans.kmeans_labels(pts, (4, 6), max_iter=15)
    if device.type != "cpu":  # accelerators never check: their clustering is the CPU's, cluster ids aside
        unchecked = kmeans.kmeans_labels(pts.to(device), (4, 6), max_iter=15).cpu()
        assert all(same_partition(unchecked[g, j], checked[g, j]) for g in range(3) for j in range(2))
        return
    original = kmeans._Lloyd.__init__

    def no_checks(self, *args, **kwargs):  # as on accelerators: every step runs, converged runs stay frozen
        original(self, *args, **kwargs)
        self.check = False

    monkeypatch.setattr(kmeans._Lloyd, "__init__", no_checks)
    assert torch.equal(kmeans.kmeans_labels(pts, (4, 6), max_iter=15), checked)
    assert torch.equal(kmeans.kmeans_labels(pts[2:], (4, 6), max_iter=15)[0], checked[2])


def test_kmeans_screening_on_a_point_subset_finds_the_blobs(device):
    gen = torch.Generator().manual_seed(5)
    centres = 8.0 * torch.randn(2, 6, 10, generator=gen)
    truth = torch.randint(0, 6, (2, 2000), generator=gen)
    pts = torch.stack([centres[g][truth[g]] for g in range(2)]) + 0.5 * torch.randn(2, 2000, 10, generator=gen)
    pts = pts.to(device)
    labels = kmeans.kmeans_labels(pts, (6,), screen_points=500).cpu()
    for g in range(2):
        assert same_partition(truth[g], labels[g, 0])
    alone = kmeans.kmeans_labels(pts[1:], (6,), screen_points=500).cpu()
    assert torch.equal(alone[0], labels[1]) if device.type == "cpu" else same_partition(alone[0, 0], labels[1, 0])


def test_scs_screen_points_reaches_the_kmeans(monkeypatch):
    """``scs_screen_points`` (docs/differences.md, D19) is what the SCS k-means screens on; 0 = all pixels."""
    from mgfusion.metrics import structure

    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs["screen_points"])
        return kmeans.kmeans_labels(*args, **kwargs)

    monkeypatch.setattr(structure, "kmeans_labels", spy)
    feats = torch.randn(1, 8, 80, 64, generator=torch.Generator().manual_seed(6))  # 5120 pixels: 4096 clustered
    default = compute_metrics(feats, None, stride=8, parts=("SC",))["SCS"]
    full = compute_metrics(feats, None, stride=8, parts=("SC",), scs_screen_points=0)["SCS"]
    assert seen == [1024, 0]
    assert abs(default.item() - full.item()) < 0.01  # noise: both settings find the same (flat) clustering quality


def test_metric_registries():
    assert CONCENTRATION_RULES.names() == ["corrected", "paper", "reference"]
    e = torch.rand(1, 8, 8)
    with pytest.raises(RegistryError, match=r"unknown concentration rule 'referense'\. Did you mean 'reference'"):
        edge_concentration("referense", e, e > 0.5, e > 0.9, border=1, r1=1, r2=2)
    with pytest.raises(RegistryError, match=r"'reference' is already registered"):
        CONCENTRATION_RULES.register("reference", lambda *a: {})
    with pytest.raises(ValueError, match=r"unknown metric variant 'corected'.*did you mean 'corrected'"):
        resolve_config("corected")
    with pytest.raises(RegistryError, match=r"metric variant 'paper' is already registered"):
        register_variant("paper", {"fc_map": "l2"})
    with pytest.raises(ValueError, match=r"fc_map='rgb' is not valid"):
        register_variant("broken", {"fc_map": "rgb"})
    register_variant("test_l2_fc", {"fc_map": "l2"})
    try:
        assert list_variants() == ["reference", "paper", "corrected", "test_l2_fc"]
        feats = torch.randn(1, 6, 16, 16, generator=torch.Generator().manual_seed(0))
        img = torch.zeros(1, 3, 128, 128, dtype=torch.uint8)
        got = compute_metrics(feats, img, stride=8, variant="test_l2_fc", parts=("EF",))
        want = compute_metrics(feats, img, stride=8, fc_map="l2", parts=("EF",))
        assert all(torch.equal(got[k], want[k]) for k in want)
    finally:
        VARIANTS.unregister("test_l2_fc")
    assert list_variants() == ["reference", "paper", "corrected"]


def test_iterative_pca_gives_the_exact_ef(photos, helpers, monkeypatch, device):
    """Features with more channels than EXACT_MAX_DIM go through the subspace iteration; EF as with ``eigh``."""
    photo = photos["astronaut"][..., :384, :512]
    base = helpers.image_features(photo, 16, channels=24, seed=3)  # (1,24,24,32)
    gen = torch.Generator().manual_seed(1)
    mix = torch.randn(300, 24, generator=gen)
    feats = torch.einsum("oc,bchw->bohw", mix, base) + 0.01 * torch.randn(1, 300, 24, 32, generator=gen)
    feats, photo = feats.to(device), photo.to(device)
    fast = compute_metrics(feats, photo, stride=16)
    monkeypatch.setattr(eigen, "EXACT_MAX_DIM", 10_000)
    exact = compute_metrics(feats, photo, stride=16)
    for key in ("EF", "EC", "NC", "FC", "SP", "SFC"):
        assert fast[key].item() == pytest.approx(exact[key].item(), rel=1e-4, abs=1e-5), key
    assert fast["SCS"].item() == pytest.approx(exact["SCS"].item(), abs=0.01)
