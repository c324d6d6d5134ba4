"""RQ4: EF per stride against the fused runs' AP gain over the master-only run, from run and profile folders."""

from __future__ import annotations

import csv
import io

import pytest

from mgfusion.analysis import (
    AnalysisError,
    correlate_ef_gain,
    ef_gain_from_runs,
    load_profile,
    load_run,
    load_runs,
)
from tests.analysis import writers

D3, S2 = "dinov3_vitb16", "sam2_hiera_bplus"
PAPER_EF = [6.21, 8.82, 17.89, 13.32]  # paper Table 7
SETTING_B = [27.1, 32.0, 35.4, 29.2]  # paper Table 6, frozen DINOv3 + frozen SAM2
FROZEN_D3 = 24.3  # paper Table 4: frozen DINOv3 alone; SETTING_B - FROZEN_D3 = +2.8 / +7.7 / +11.1 / +4.9


def _folders(tmp_path, *, baseline_solver=None, baseline_encoder=D3, strides=writers.STRIDES, frozen=True):
    for s, ap in zip(writers.STRIDES, SETTING_B):
        if s in strides:
            writers.fused_run(tmp_path / "fused" / f"os{s}", master=D3, auxiliary=S2, stride=s, ap=ap,
                              train_master=False)
    base = writers.single_run(tmp_path / "base", encoder=baseline_encoder, ap=FROZEN_D3, freeze=frozen,
                              solver=baseline_solver)
    sc = [0.5, 0.4, 0.1, 0.4]
    prof = writers.profile(tmp_path / "profile", {S2: (sc, PAPER_EF), D3: ([0.7] * 4, [1.0, 2.0, 3.0, 4.0])})
    return load_profile(prof), load_runs([tmp_path / "fused"])[0], load_run(base)


def test_paper_example_from_run_folders(tmp_path):
    profile, fused, base = _folders(tmp_path)
    r = ef_gain_from_runs(profile, fused, base)
    assert r.encoder == S2 and r.strides == [4, 8, 16, 32]
    assert [round(g, 6) for g in r.gain.values()] == [2.8, 7.7, 11.1, 4.9]
    c = r.correlation
    assert (round(c.spearman, 12), round(c.spearman_p, 12), c.n) == (0.8, 0.2, 4)
    md = r.markdown()
    assert "| 16 | 17.89 | 35.40 | +11.10 |" in md
    assert "**Spearman ρ = 0.800 (p = 0.200, exact p = 0.333, n = 4); Kendall τ = 0.667 (p = 0.333)**" in md
    assert "> **Warning: only 4 points: an exact two-sided Spearman test on 4 points cannot give p below 0.083" in md
    assert f"| master only | `{tmp_path / 'base'}` |" in md and f"| OS16 | `{tmp_path / 'fused' / 'os16'}` |" in md
    assert f"EF from profile `{tmp_path / 'profile'}`" in md
    rows = list(csv.DictReader(io.StringIO(r.correlation_csv())))
    assert float(rows[0]["spearman"]) == pytest.approx(0.8) and rows[0]["n"] == "4" and rows[0]["warning"]


def test_correlate_is_shift_invariant_and_needs_ef_for_every_stride():
    a = correlate_ef_gain(dict(zip(writers.STRIDES, PAPER_EF)), dict(zip(writers.STRIDES, SETTING_B)), FROZEN_D3)
    b = correlate_ef_gain(dict(zip(writers.STRIDES, PAPER_EF)), dict(zip(writers.STRIDES, SETTING_B)), 0.0)
    assert a.correlation == b.correlation
    with pytest.raises(AnalysisError, match=r"strides \[64\] have fused results but no EF"):
        correlate_ef_gain({4: 1.0}, {4: 30.0, 64: 31.0}, 20.0)


def test_baseline_under_other_settings_is_refused_unless_accepted(tmp_path):
    profile, fused, base = _folders(tmp_path, baseline_solver={"max_iter": 1000})
    with pytest.raises(AnalysisError, match=r"trained under other settings.*\n  solver.max_iter: fused 90000, "
                                            r"master-only 1000\n.*--ignore-key KEY"):
        ef_gain_from_runs(profile, fused, base)
    r = ef_gain_from_runs(profile, fused, base, ignore_keys=["solver.max_iter"])
    assert r.correlation.n == 4


def test_baseline_of_another_encoder_or_a_fused_baseline_is_refused(tmp_path):
    profile, fused, base = _folders(tmp_path, baseline_encoder="dinov2_vitb14")
    with pytest.raises(AnalysisError, match="trains dinov2_vitb14, but the fused runs' master is dinov3_vitb16"):
        ef_gain_from_runs(profile, fused, base)
    with pytest.raises(AnalysisError, match="is a fused run"):
        ef_gain_from_runs(profile, fused, fused[0])


def test_fine_tuned_baseline_for_frozen_fused_masters_is_refused(tmp_path):
    profile, fused, base = _folders(tmp_path, frozen=False)
    with pytest.raises(AnalysisError, match=r"master is frozen \(backbone.train_master=false\) but the master-only "
                                            r"run .* fine-tuned its encoder \(backbone.freeze=false\)"):
        ef_gain_from_runs(profile, fused, base)


def test_several_settings_or_missing_strides_are_refused(tmp_path):
    profile, fused, base = _folders(tmp_path, strides=(4, 8, 16))
    with pytest.raises(AnalysisError, match=r"EF at strides \[32\] but there is no fused run there"):
        ef_gain_from_runs(profile, fused, base)
    r = ef_gain_from_runs(profile, fused, base, allow_missing=True)
    assert r.strides == [4, 8, 16] and r.missing == [32] and r.correlation.spearman == pytest.approx(1.0)
    more = fused + [load_run(writers.fused_run(tmp_path / "ft", master=D3, auxiliary=S2, stride=8, ap=1.0))]
    with pytest.raises(AnalysisError, match="form 2 settings.*\n  A: backbone.train_master=true\n  B: "):
        ef_gain_from_runs(profile, more, base, allow_missing=True)
