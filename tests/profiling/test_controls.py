"""Control rows (noise, pixels), EF_gt against ground-truth boundaries, and the paired verdict rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mgfusion.backbones import build_encoder
from mgfusion.metrics import compute_pyramid_metrics
from mgfusion.metrics.supervised import boundary_cells, segment_ids
from mgfusion.profiling.controls import noise_features, pixel_features
from mgfusion.profiling.features import FeatureMetrics, MetricScorer, select
from mgfusion.profiling.loader import ImageStream
from mgfusion.profiling.sources import resolve_source
from mgfusion.profiling.verdict import (
    EXCEEDS,
    NOT_EXCEEDS,
    TOO_FEW,
    compare_with_controls,
    paired_comparison,
    per_image_values,
    select_rows,
    warnings_for,
)

CPU = torch.device("cpu")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera", "cat", "hubble_deep_field")


def _photos(size: int = 128) -> torch.Tensor:
    from skimage import data

    arrays = [np.asarray(Image.fromarray(getattr(data, n)()).convert("RGB").resize((size, size))) for n in PHOTOS]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def test_noise_control_sits_at_chance():
    """Noise features put their edges where chance puts them: EC/NC lifts ~ 1, corrected EF ~ 0."""
    images = _photos()
    feats = noise_features(list(PHOTOS), torch.tensor([[128, 128]] * len(PHOTOS)), (128, 128), {4: 64, 8: 64},
                           seed=0, device=CPU)
    metrics = compute_pyramid_metrics(feats, images, variant="corrected")
    for s, m in metrics.items():
        for key in ("EC_lift", "NC_lift"):
            assert float(m[key].mean()) == pytest.approx(1.0, abs=0.15), (s, key)
        assert float(m["EF"].mean()) < 1.0, s


def test_control_features_are_per_image_and_exact():
    a = noise_features(["x", "y"], torch.tensor([[64, 64], [40, 56]]), (64, 64), {8: 5}, seed=3, device=CPU)[8]
    b = noise_features(["y"], torch.tensor([[40, 56]]), (40, 56), {8: 5}, seed=3, device=CPU)[8]
    assert a.shape == (2, 5, 8, 8) and b.shape == (1, 5, 5, 7)
    assert torch.equal(a[1, :, :5, :7], b[0]), "an image's noise does not depend on its batch"
    assert bool((a[1, :, 5:] == 0).all()) and bool((a[1, :, :, 7:] == 0).all())
    other = noise_features(["y"], torch.tensor([[40, 56]]), (40, 56), {8: 5}, seed=4, device=CPU)[8]
    assert not torch.equal(other, b) and float(b.std()) == pytest.approx(1.0, abs=0.2)

    images = torch.randint(0, 256, (2, 3, 48, 40), dtype=torch.uint8)
    valid = torch.tensor([[48, 40], [30, 36]])
    pix = pixel_features(images, valid, [16])[16]
    assert pix.shape == (2, 3, 3, 3)
    rgb = images.float() / 255
    assert torch.allclose(pix[0, :, 0, 0], rgb[0, :, :16, :16].mean(dim=(1, 2)))
    assert torch.allclose(pix[1, :, 1, 2], rgb[1, :, 16:30, 32:36].mean(dim=(1, 2))), "partial block: own pixels"
    assert bool((pix[1, :, 2] == 0).all()), "cells outside the image stay empty"


def test_boundary_cells_mark_both_sides_of_a_label_change():
    sem = torch.zeros(1, 8, 8, dtype=torch.long)
    sem[0, :, 4:] = 1
    inst = torch.full((1, 8, 8), -1, dtype=torch.long)
    inst[0, 1:3, 1:3] = 0  # an object on the left half
    grid = segment_ids(sem, inst)
    b = boundary_cells(grid)[0]
    assert b[:, 3].all() and b[:, 4].all() and not b[:, 6].any()
    assert b[1, 1] and b[0, 1] and not b[6, 1], "an object's outline against no-instance is a boundary"


@pytest.fixture(scope="module")
def synthetic_batches(tmp_path_factory):
    from mgfusion.data import register_synthetic

    register_synthetic(root=tmp_path_factory.mktemp("synthetic"))
    try:
        records = resolve_source(dataset="mgf_synthetic_val_panoptic", max_images=12)
        batches = list(ImageStream(records, batch_size=4, resolution=None, max_size=None, num_workers=0))
    finally:
        register_synthetic()  # back to the default root for other tests
    return [b for b in batches if b["ids"]]


def _label_features(part, strides, shift: int = 0) -> dict[int, torch.Tensor]:
    """One-hot of each pixel's (semantic, instance) segment, average-pooled to the grid; ``shift`` cells rolled."""
    seg = segment_ids(part.sem, part.inst)
    onehot = F.one_hot(seg, int(seg.max()) + 1).permute(0, 3, 1, 2).float()
    out = {}
    for s in strides:
        f = F.avg_pool2d(onehot, s, stride=s, ceil_mode=True)
        out[s] = torch.roll(f, shifts=(shift, shift), dims=(2, 3)) if shift else f
    return out


def test_ground_truth_features_score_highest_ef_gt_and_pass_the_controls(synthetic_batches):
    """On the synthetic dataset: features made of the label map align with its boundaries (EF_gt near 100), beat the
    noise control and copies shifted by one or two cells image by image, and the noise sits at chance.

    The synthetic segments are flat, distinctly coloured surfaces, so features that follow the colours align with
    the boundaries as well: the pooled pixels and even a random-init encoder score EF_gt near 100 here too (which
    is what the pixel and random-init controls are for)."""
    strides = (4, 8)  # 128 px images: 32x32 and 16x16 grids (coarser grids have too few interior cells)
    scorer = MetricScorer(variant="corrected", metric_hparams={}, seed=0)
    torch.manual_seed(0)
    encoder = FeatureMetrics("micro", build_encoder("sam2_hiera_micro", freeze=True), scorer, amp=False, device=CPU)
    records, ids = [], []
    for batch in synthetic_batches:
        keep = range(len(batch["ids"]))
        part = select(batch, keep, CPU)
        ids += part.ids
        records += scorer.records("labels", "encoder", _label_features(part, strides), part)
        records += scorer.records("shifted1", "encoder", _label_features(part, strides, shift=1), part)
        records += scorer.records("shifted2", "encoder", _label_features(part, strides, shift=2), part)
        noise = noise_features(part.ids, part.valid_hw, tuple(part.images.shape[-2:]), dict.fromkeys(strides, 64),
                               seed=0, device=CPU)
        records += scorer.records("control:noise", "control", noise, part)
        records += scorer.records("control:pixels", "control", pixel_features(part.images, part.valid_hw, strides),
                                  part)
        records += encoder(batch, keep).records
    rows = ["labels", "shifted1", "shifted2", "control:noise", "control:pixels", "micro"]
    values = per_image_values(records, rows=rows, image_ids=ids, metrics=("EF_gt", "EF_gt_lift"))
    mean = {r: {s: float(np.nanmean(values[r][s]["EF_gt"])) for s in strides} for r in rows}
    for s in strides:
        assert mean["labels"][s] > 90.0
        assert mean["labels"][s] > max(mean[r][s] for r in ("shifted1", "shifted2", "control:noise")) + 50.0, mean
        assert mean["shifted1"][s] > mean["shifted2"][s] - 5.0, "shifting further does not bring them back"
        assert min(mean["control:pixels"][s], mean["micro"][s]) > 85.0, "colour-driven features align here too"
        lift = np.nanmean(values["control:noise"][s]["EF_gt_lift"])
        assert lift == pytest.approx(1.0, abs=0.15), "noise edges fall on the boundaries as often as chance says"
    assert mean["control:noise"][4] < 3.0
    verdicts = compare_with_controls(values, encoders=["labels"], metrics=("EF_gt",),
                                     controls={"labels": ["control:noise", "shifted1", "shifted2"]})
    assert len(verdicts) == 6 and all(v["verdict"] == EXCEEDS and v["wins"] == v["n"] == 12 for v in verdicts)
    assert not warnings_for(verdicts, what="labels")
    shifted = compare_with_controls(values, encoders=["shifted1"], metrics=("EF_gt",),
                                    controls={"shifted1": ["labels"]})
    assert all(v["verdict"] == NOT_EXCEEDS and v["wins"] == 0 for v in shifted)
    line = warnings_for(select_rows(shifted, "shifted1", 4), what="shifted1 at OS4")
    assert len(line) == 1 and line[0].startswith("shifted1 at OS4: EF_gt does NOT exceed labels (above it on 0 of 12")


def test_paired_comparison_verdicts():
    enc = np.arange(8.0) + 1.0
    low = np.arange(8.0)
    r = paired_comparison(enc, low)
    assert (r["wins"], r["losses"], r["n"], r["verdict"]) == (8, 0, 8, EXCEEDS)
    assert r["sign_p"] == pytest.approx(0.5 ** 8) and r["wilcoxon_p"] < 0.01
    four = np.where(np.arange(8) < 4, enc, np.nan)  # images without a value are left out of the pairs
    assert paired_comparison(four, low)["n"] == 4 and paired_comparison(four, low)["verdict"] == TOO_FEW
    assert paired_comparison(low, enc)["verdict"] == NOT_EXCEEDS
    tied = paired_comparison(enc, enc)
    assert tied["ties"] == 8 and tied["sign_p"] is None and tied["verdict"] == TOO_FEW
    mixed = low + np.where(np.arange(8) < 5, 1.0, -1.0)  # 5 wins, 3 losses
    r = paired_comparison(mixed, low)
    assert (r["wins"], r["losses"], r["verdict"]) == (5, 3, NOT_EXCEEDS) and r["sign_p"] == pytest.approx(93 / 256)
    line = warnings_for([{**r, "encoder": "e", "stride": 8, "metric": "EF", "control": "control:noise"}],
                        what="aux at OS8")
    assert line == [("aux at OS8: EF does NOT exceed control:noise (above it on 5 of 8 images, sign-test p = 0.36 "
                     ">= 0.05; means 3.750 vs 3.500)")]
