"""Sensitivity (paper §A.1) and cross-dataset consistency (paper §A.2) from profile folders."""

from __future__ import annotations

import csv
import io

import pytest

from mgfusion.analysis import (
    AnalysisError,
    analyse_sensitivity,
    compare_datasets,
    default_profile,
    load_profile,
)
from tests.analysis import writers

D3, S2 = "dinov3_vitb16", "sam2_hiera_bplus"
BASE = {D3: ([0.73, 0.71, 0.65, 0.53], [1.27, 1.64, 2.33, 5.88]),
        S2: ([0.49, 0.44, 0.11, 0.41], [6.60, 8.59, 17.13, 12.47])}


def _sweep(tmp_path):
    """Baseline, sfc_grid=8 (values shift, rankings kept), r1=3 (SAM2's EF now peaks at OS32)."""
    base = writers.profile(tmp_path / "job0", BASE)
    grid8 = writers.profile(tmp_path / "job1", {D3: ([0.80, 0.78, 0.70, 0.60], [1.3, 1.7, 2.4, 6.0]),
                                                 S2: ([0.55, 0.50, 0.20, 0.45], [6.0, 8.0, 15.0, 11.0])},
                            hparams={"sfc_grid": 8})
    r1 = writers.profile(tmp_path / "job2", {D3: ([0.73, 0.71, 0.65, 0.53], [1.2, 1.5, 2.0, 5.0]),
                                              S2: ([0.49, 0.44, 0.11, 0.41], [6.0, 8.0, 12.0, 14.0])},
                         hparams={"r1": 3})
    return [load_profile(p) for p in (grid8, base, r1)]


def test_sensitivity_reports_rank_stability_and_kept_recommendations(tmp_path):
    profiles = _sweep(tmp_path)
    assert default_profile(profiles).folder == tmp_path / "job0"  # found by its default metric settings
    s = analyse_sensitivity(profiles)
    assert s.baseline.folder == tmp_path / "job0"
    by_label = {r.label: r for r in s.rows}
    assert set(by_label) == {"sfc_grid=8", "r1=3"}
    g8, r1 = by_label["sfc_grid=8"], by_label["r1=3"]
    assert g8.changes == {"sfc_grid": (16, 8)}
    assert all(c.spearman == pytest.approx(1.0) for c in g8.correlations.values())
    assert g8.keeps_stride and g8.keeps_pair
    # r1=3: SAM2's EF ranks OS16 and OS32 the other way round -> rho 0.8, the recommended stride moves to 32
    assert r1.correlations[(S2, "EF")].spearman == pytest.approx(0.8)
    assert r1.correlations[(S2, "SC")].spearman == pytest.approx(1.0)
    assert r1.recommendation.stride == 32 and not r1.keeps_stride and r1.keeps_pair
    assert s.kept("stride") == (1, 2) and s.kept("pair") == (2, 2)
    md = s.markdown()
    assert "- settings that keep the recommended stride: **1 of 2** (50%)" in md
    assert "| r1=3 | 1.00 | 1.00 | 1.00 | 0.80 | dinov3_vitb16 + sam2_hiera_bplus @ OS32 | **no** | yes |" in md
    assert f"`{tmp_path / 'job2'}`" in md and "r1: 2 → 3" in md
    rows = list(csv.DictReader(io.StringIO(s.recommendations_csv())))
    assert [(r["setting"], r["stride"], r["keeps_stride"]) for r in rows] == [
        ("baseline", "16", ""), ("sfc_grid=8", "16", "True"), ("r1=3", "32", "False")]


def test_sensitivity_refuses_other_images_duplicates_and_an_unknown_baseline(tmp_path):
    profiles = _sweep(tmp_path)
    other = load_profile(writers.profile(tmp_path / "coco", BASE, dataset="coco_2017_val", hparams={"r1": 4}))
    with pytest.raises(AnalysisError, match="differ in images"):
        analyse_sensitivity([*profiles, other])
    twin = load_profile(writers.profile(tmp_path / "twin", BASE, hparams={"r1": 3}))
    with pytest.raises(AnalysisError, match=f"{tmp_path / 'twin'} and {tmp_path / 'job2'} were profiled with the same"):
        analyse_sensitivity([*profiles, twin])
    without_default = [p for p in profiles if p.folder.name != "job0"]
    with pytest.raises(AnalysisError, match="0 of the 2 profiles use the default metric settings.*--baseline"):
        analyse_sensitivity(without_default)
    s = analyse_sensitivity(without_default, baseline=profiles[0])  # any job can be named the baseline
    assert s.baseline.folder == tmp_path / "job1" and [r.label for r in s.rows] == ["r1=3, sfc_grid=16"]


def test_paper_tables_5_and_9_are_consistent_across_datasets(tmp_path):
    a = load_profile(writers.profile(tmp_path / "cityscapes", writers.PAPER_TABLE5))
    b = load_profile(writers.profile(tmp_path / "coco", writers.PAPER_TABLE9, dataset="coco_2017_val"))
    r = compare_datasets(a, b)
    assert r.per_stride[(S2, "EF")].spearman == pytest.approx(1.0)  # ranks 1,2,4,3 on both
    assert r.per_stride[(S2, "SC")].spearman == pytest.approx(0.8)
    assert r.per_stride[("swin_b", "EF")].spearman == pytest.approx(0.0)  # Swin-B's EF ranking is not stable
    assert r.peak[(S2, "EF")] == (16, 16) and r.peak[("swin_b", "EF")] == (32, 8)
    assert r.across_encoders["SC"].spearman == pytest.approx(1.0)  # same encoder order by mean SC
    assert r.across_encoders["EF"].spearman == pytest.approx(0.9)  # Swin-B and DINOv3 swap by peak EF
    assert r.agrees == {"master": True, "auxiliary": True, "stride": True}
    assert (r.recommendations[0].master, r.recommendations[0].auxiliary, r.recommendations[0].stride) == (D3, S2, 16)
    md = r.markdown()
    assert "| agree | yes | yes | yes |" in md and "| swin_b | EF | 0.00 | 0.00 | 4 | 32 | 8 | **no** |" in md
    assert f"`{tmp_path / 'coco'}` (dataset coco_2017_val, 500 images)" in md
    assert "| sam2_hiera_bplus | B | 0.61 | 0.51 | 0.42 | 0.52 | 3.57 | 5.90 | 12.83 | 5.97 |" in md
    assert len(list(csv.DictReader(io.StringIO(r.csv())))) == 10


def test_cross_dataset_refuses_other_settings_other_encoders_and_the_same_images(tmp_path):
    a = load_profile(writers.profile(tmp_path / "a", BASE))
    b = load_profile(writers.profile(tmp_path / "b", BASE, dataset="coco_2017_val", hparams={"fc_cut": 0.2}))
    with pytest.raises(AnalysisError, match=r"other metric settings \(config.fc_cut: 0.15 vs 0.2\)"):
        compare_datasets(a, b)
    c = load_profile(writers.profile(tmp_path / "c", BASE, dataset="coco_2017_val",
                                     encoder_builds={S2: {"neck": "raw"}}))
    with pytest.raises(AnalysisError, match="encoder sam2_hiera_bplus differs between"):
        compare_datasets(a, c)
    with pytest.raises(AnalysisError, match="profiled the same images"):
        compare_datasets(a, load_profile(writers.profile(tmp_path / "d", BASE)))
    e = load_profile(writers.profile(tmp_path / "e", {"swin_b": BASE[D3]}, dataset="coco_2017_val"))
    with pytest.raises(AnalysisError, match="share no encoder"):
        compare_datasets(a, e)
