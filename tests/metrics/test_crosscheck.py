"""Cross-check every variant against an independent, plainly written (slow) numpy implementation on small maps.

The plain code below follows docs/metrics.md (and the corrected variant's definitions in mgfusion.metrics' docstring)
literally: pixel loops, explicit padding, full complex FFT, all 8 shift directions. Images are given at feature
resolution, so no resize is involved (resizing is covered in test_api.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mgfusion.metrics import compute_metrics, resolve_config

# ----------------------------------------------------------------------------------------------- plain helpers


def p_sobel(x):
    h, w = x.shape
    xp = np.pad(x, 1, mode="edge")
    kx = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 4.0
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            patch = xp[i: i + 3, j: j + 3]
            out[i, j] = math.hypot((patch * kx).sum(), (patch * kx.T).sum())
    return out


def p_valid(h, w, border=1):
    v = np.zeros((h, w), bool)
    v[border: h - border, border: w - border] = True
    return v


def p_minmax(x, valid):
    vals = x[valid]
    lo, hi = vals.min(), vals.max()
    den = hi - lo if hi - lo > 1e-8 else 1.0
    return np.clip((x - lo) / den, 0, 1)


def p_top(x, q, valid):
    vals = x[valid]
    out = np.zeros(x.shape, bool)
    if vals.size < 4 or vals.max() - vals.min() < 1e-6:
        return out
    k = max(1, math.ceil(q * vals.size))
    flat_idx = np.flatnonzero(valid.ravel())
    out.ravel()[flat_idx[np.argsort(-vals, kind="stable")[:k]]] = True
    return out


def p_local_max(x):
    h, w = x.shape
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            out[i, j] = x[max(0, i - 1): i + 2, max(0, j - 1): j + 2].max()
    return out


def p_dilate(mask, r):
    h, w = mask.shape
    out = np.zeros_like(mask)
    for i in range(h):
        for j in range(w):
            out[i, j] = mask[max(0, i - r): i + r + 1, max(0, j - r): j + r + 1].any()
    return out


def p_cheb_distance(mask):
    pts = np.argwhere(mask)
    h, w = mask.shape
    out = np.full((h, w), np.inf)
    for i in range(h):
        for j in range(w):
            if len(pts):
                out[i, j] = np.max(np.abs(pts - [i, j]), axis=1).min()
    return out


def p_luminance(img01):
    lin = np.where(img01 <= 0.04045, img01 / 12.92, ((img01 + 0.055) / 1.055) ** 2.4)
    return np.clip(0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2], 0, 1)


def p_pca_map(f):
    c, h, w = f.shape
    x = f.reshape(c, -1).T.astype(np.float64)
    z = (x - x.mean(0)) / (x.std(0) + 1e-6)
    _, vecs = np.linalg.eigh(z.T @ z)
    p = z @ vecs[:, -1]
    rng = p.max() - p.min()
    return np.zeros((h, w)) if rng < 1e-8 else ((p - p.min()) / rng).reshape(h, w)


def p_zscore(x):
    return (x - x.mean()) / max(x.std(ddof=1), 1e-8)


def p_fc(m, grid, cut=0.15):
    h, w = m.shape
    z = p_zscore(m)
    z = np.clip(z, z.mean() - 8, z.mean() + 8) * np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2(z)) ** 2
    if grid == "linspace":
        power = np.roll(power, (h // 2, w // 2), axis=(0, 1))
        rr = np.sqrt(np.linspace(-1, 1, h)[:, None] ** 2 + np.linspace(-1, 1, w)[None, :] ** 2)
        rr = rr / rr.max()
    else:
        rr = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2) / (0.5 * math.sqrt(2))
    return power[rr >= cut].sum() / max(power.sum(), 1e-8)


def p_radii(h, w):
    r_max = max(1, int(0.6 * min(h, w)))
    radii = sorted({min(max(round(10 ** (t * math.log10(r_max))), 1), r_max) for t in np.linspace(0, 1, 16)})
    return radii


def p_sp(l2, stride, pad, units, interpolate, tau=0.5, kappa=64.0):
    h, w = l2.shape
    padded = np.pad(l2, 1, mode="constant" if pad == "zero" else "edge")
    box = np.array([[padded[i: i + 3, j: j + 3].mean() for j in range(w)] for i in range(h)])
    m = p_zscore(l2 - box)
    radii = p_radii(h, w)
    corr = []
    for r in radii:
        vals = []
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)):
            sx, sy = dx * r, dy * r
            a = m[max(0, -sy): h - max(0, sy), max(0, -sx): w - max(0, sx)].ravel()
            b = m[max(0, sy): h - max(0, -sy), max(0, sx): w - max(0, -sx)].ravel()
            a, b = a - a.mean(), b - b.mean()
            vals.append((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-8))
        corr.append(np.mean(vals))
    below = [i for i, c in enumerate(corr) if c < tau]
    if not below:
        length = float(radii[-1])
    elif interpolate:
        i = below[0]
        r0, c0 = (0.0, 1.0) if i == 0 else (radii[i - 1], corr[i - 1])
        length = r0 + (c0 - tau) / (c0 - corr[i]) * (radii[i] - r0)
    else:
        length = float(radii[below[0]])
    unit = stride if units == "image" else 1
    return kappa / (kappa + length * unit), length


def p_sfc(l2, grid=16, min_cell=1):
    h, w = l2.shape
    m = p_zscore(l2)
    gy, gx = max(1, min(grid, h // min_cell)), max(1, min(grid, w // min_cell))
    kh, kw = h // gy, w // gx
    means, variances = [], []
    for i in range(gy):
        for j in range(gx):
            cell = m[i * kh: (i + 1) * kh, j * kw: (j + 1) * kw]
            means.append(cell.mean())
            variances.append(cell.var())
    inter, intra = np.var(means), max(np.mean(variances), 1e-6)
    return inter / (inter + intra)


def p_concentration(rule, energy, strong, centre, valid, r1=2, r2=4):
    """EC, NC, EC_lift, NC_lift of one image (plain)."""
    core, outer = p_dilate(centre, r1), p_dilate(centre, r2)
    ring = outer & ~core & valid
    n_valid = valid.sum()
    if rule == "reference":
        total = max(energy[strong].sum(), 1e-8)
        ec = 1 - min(energy[strong & ~outer & valid].sum() / total, 1.0)
        nc = min(energy[strong & ring].sum() / total, 1.0)
        outer_share = energy[strong & outer & valid].sum() / total
        chances = ((outer & valid).sum() / n_valid, ring.sum() / n_valid)
        shares = (outer_share, nc)
    elif rule == "paper":
        total = max(energy[valid].sum(), 1e-8)
        ec = energy[core & valid].sum() / total
        nc = energy[ring].sum() / total
        chances = ((core & valid).sum() / n_valid, ring.sum() / n_valid)
        shares = (ec, nc)
    else:
        d = p_cheb_distance(centre)
        k1, k2 = np.clip(1 - d / (r1 + 1), 0, 1), np.clip(1 - d / (r2 + 1), 0, 1)
        total = max(energy[strong].sum(), 1e-8)
        shares = ((energy * k1)[strong].sum() / total, (energy * k2)[strong].sum() / total)
        chances = (k1[valid].mean(), k2[valid].mean())
        ec, nc = (float(np.clip((s - c) / (1 - c), 0, 1)) for s, c in zip(shares, chances))
    lifts = tuple(s / c if c > 0 else 1.0 for s, c in zip(shares, chances))
    return ec, nc, lifts[0], lifts[1]


def plain_metrics(feat, img01, variant, stride):
    """All EF factors + SFC of one image, written plainly. feat (C,H,W) float64, img01 (3,H,W)."""
    cfg = resolve_config(variant)
    h, w = feat.shape[1:]
    valid = p_valid(h, w)
    l2 = np.sqrt((feat**2).sum(0))
    pmap = p_pca_map(feat)
    gi = p_minmax(p_sobel(p_luminance(img01)), valid)
    centre = p_top(gi, 0.1, valid) & (gi >= p_local_max(gi) - 1e-6)
    graw = p_sobel(pmap)
    energy = np.where(valid, graw, 0.0)
    strong = p_top(p_minmax(graw, valid), 0.1, valid)
    ec, nc, ec_lift, nc_lift = p_concentration(cfg.concentration, energy, strong, centre, valid)
    fc = p_fc(pmap if cfg.fc_map == "pca" else l2, cfg.fc_grid)
    sp, length = p_sp(l2, stride, cfg.sp_pad, cfg.sp_units, cfg.sp_interpolate)
    ef = 100 * min(ec * nc * fc * sp, 1.0)
    return {"EC": ec, "NC": nc, "FC": fc, "SP": sp, "SP_len": length, "EF": ef, "EC_lift": ec_lift,
            "NC_lift": nc_lift, "SFC": p_sfc(l2, min_cell=cfg.sfc_min_cell)}


# --------------------------------------------------------------------------------------------------- the tests


def _inputs(photo, h, w, seed):
    """Small smooth random features correlated with a real photo, and the photo at feature resolution."""
    gen = torch.Generator().manual_seed(seed)
    img = F.interpolate(photo.float(), size=(h, w), mode="area").round().to(torch.uint8)
    img01 = img.float() / 255.0
    feat = F.avg_pool2d(torch.randn(2, 12, h, w, generator=gen), 3, 1, 1, count_include_pad=False)
    feat[:, :3] += 2.0 * img01
    feat[1] = feat[1].flip(-1)  # second image: features misaligned with the photo
    return feat, img.expand(2, -1, -1, -1)


_PLAIN: dict[tuple, dict[str, float]] = {}  # plain results per (variant, size, stride, image): shared by the devices


@pytest.mark.parametrize("variant", ["reference", "paper", "corrected"])
@pytest.mark.parametrize("hw,stride", [((24, 40), 16), ((17, 23), 32)])
def test_variant_matches_plain_implementation(photos, variant, hw, stride, device):
    feat, imgs = _inputs(photos["astronaut"], *hw, seed=hw[0])
    got = compute_metrics(feat.to(device), imgs.to(device), stride=stride, variant=variant, parts=("EF", "SC"))
    assert all(v.device.type == device.type for v in got.values())
    got = {k: v.cpu() for k, v in got.items()}
    for b in range(2):
        case = (variant, hw, stride, b)
        if case not in _PLAIN:
            _PLAIN[case] = plain_metrics(feat[b].double().numpy(), imgs[b].double().numpy() / 255.0, variant, stride)
        want = _PLAIN[case]
        for key, val in want.items():
            assert got[key][b].item() == pytest.approx(val, rel=2e-4, abs=2e-5), (variant, b, key)
        assert got["EF_lift"][b].item() == pytest.approx(want["EC_lift"] * want["NC_lift"], rel=1e-3)
    assert got["EF"][0] != got["EF"][1]


def test_plain_sp_reproduces_reference_quirk_and_corrected_differs():
    """Sanity of the plain SP itself: zero-padded high-pass gives length 1 on a smooth map; replicate does not."""
    yy, xx = np.mgrid[0:32, 0:48]
    smooth = 5.0 + np.sin(xx / 6.0) + np.cos(yy / 5.0)
    assert p_sp(smooth, 8, "zero", "feature", False)[1] == 1.0
    assert p_sp(smooth, 8, "replicate", "feature", False)[1] > 1.0


def _plain_scs(feat, ks=(6, 8, 10), seed=0):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    x = feat.reshape(feat.shape[0], -1).T.astype(np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    x = PCA(n_components=min(32, x.shape[1], x.shape[0] - 1), svd_solver="full").fit_transform(x)
    sil = [silhouette_score(x, KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)) for k in ks]
    return (float(np.median(sil)) + 1) / 2


def test_scs_matches_plain_sklearn_on_clustered_features():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1):  # sklearn's OpenMP k-means crawls on a shared 2-core machine
        _check_scs_against_plain()


def _check_scs_against_plain():
    gen = torch.Generator().manual_seed(3)
    centres = 4.0 * torch.randn(8, 20, generator=gen)
    labels = torch.randint(0, 8, (1, 24, 32), generator=gen)
    feat = centres[labels].permute(0, 3, 1, 2) + 0.3 * torch.randn(1, 20, 24, 32, generator=gen)
    want = _plain_scs(feat[0].numpy())
    torch_scs = compute_metrics(feat, None, stride=16, parts=("SC",))["SCS"].item()
    sk_scs = compute_metrics(feat, None, stride=16, parts=("SC",), scs_backend="sklearn")["SCS"].item()
    assert torch_scs == pytest.approx(want, abs=0.01)
    assert sk_scs == pytest.approx(want, abs=0.005)
    assert want > 0.7
