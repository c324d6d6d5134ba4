"""Rank correlations: the paper's own EF / AP-gain example, exact permutation p-values, ties, undefined cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from mgfusion.analysis import rank_correlation
from mgfusion.analysis.stats import MAX_EXACT_POINTS, exact_spearman_p

PAPER_EF = [6.21, 8.82, 17.89, 13.32]  # paper Table 7: SAM2's EF at OS4, 8, 16, 32
PAPER_GAIN = [2.8, 7.7, 11.1, 4.9]  # ... and the AP gain of injecting it into DINOv3 there


def test_paper_example_gives_the_papers_rho_and_p():
    c = rank_correlation(PAPER_EF, PAPER_GAIN)
    assert c.n == 4
    assert c.spearman == pytest.approx(0.8, abs=1e-12)
    assert c.spearman_p == pytest.approx(0.2, abs=1e-12)  # t-approximation: what the paper reports
    # exact: 8 of the 24 orderings have |rho| >= 0.8 (rho = 1 once, 0.8 three times, and their mirror images)
    assert c.spearman_p_exact == pytest.approx(8 / 24, abs=1e-12)
    assert c.kendall == pytest.approx(4 / 6, abs=1e-12)  # 5 concordant, 1 discordant pair (OS8 vs OS32)
    assert c.kendall_p == pytest.approx(8 / 24, abs=1e-12)
    assert c.min_p_exact == pytest.approx(2 / 24, abs=1e-12)
    assert c.sentence() == "Spearman ρ = 0.800 (p = 0.200, exact p = 0.333, n = 4); Kendall τ = 0.667 (p = 0.333)"
    assert "cannot give p below 0.083" in c.warning and "only 2 of the 24 orderings reach |ρ| = 1.000" in c.warning
    assert "can be significant at the 0.05 level" in c.warning


@pytest.mark.parametrize("n", [4, 5, 6])
def test_exact_p_matches_a_brute_force_enumeration_with_scipy(n):
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=n), rng.normal(size=n)
    observed = abs(stats.spearmanr(x, y).statistic)
    rhos = [abs(stats.spearmanr(x, y[list(perm)]).statistic) for perm in itertools.permutations(range(n))]
    p, min_p, max_rho = exact_spearman_p(x, y)
    assert p == pytest.approx(np.mean([r >= observed - 1e-12 for r in rhos]), abs=1e-12)
    assert min_p == pytest.approx(2 / math.factorial(n), abs=1e-12) and max_rho == pytest.approx(1.0)


def test_ties_use_average_ranks_and_limit_the_reachable_p():
    c = rank_correlation([1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    assert c.spearman == pytest.approx(stats.spearmanr([1, 1, 2, 3], [1, 2, 3, 4]).statistic)
    assert c.spearman == pytest.approx(0.9486832980505138)
    # with a tie in x, four orderings reach the largest |rho| (two orders of the tied pair, both directions)
    assert c.min_p_exact == pytest.approx(4 / 24) and c.spearman_p_exact == pytest.approx(4 / 24)


def test_five_points_carry_no_warning_and_can_be_significant():
    c = rank_correlation([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert c.spearman == pytest.approx(1.0) and c.warning is None
    assert c.spearman_p_exact == pytest.approx(2 / 120)


@pytest.mark.parametrize("x,y,reason", [
    ([1.0, 2.0], [2.0, 1.0], ">= 3 values"),
    ([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], "constant"),
    ([1.0, float("nan"), 2.0], [1.0, 2.0, 3.0], "non-finite"),
])
def test_undefined_cases_say_why(x, y, reason):
    c = rank_correlation(x, y)
    assert not c.defined and c.spearman is None and reason in c.undefined
    assert c.sentence().startswith(f"undefined for n = {len(x)}")


def test_many_points_skip_the_enumeration():
    n = MAX_EXACT_POINTS + 1
    c = rank_correlation(list(range(n)), list(range(n)))
    assert c.spearman == pytest.approx(1.0) and c.spearman_p_exact is None and c.warning is None
    with pytest.raises(ValueError, match="<= 9 values"):
        exact_spearman_p(list(range(n)), list(range(n)))
