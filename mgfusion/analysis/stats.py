"""Rank correlations of a few paired values (per-stride metric vs per-stride gain), with honest p-values.

With the four output strides of the paper there are only four points per curve. A Spearman p-value from the usual
t-distribution approximation (what ``scipy.stats.spearmanr`` reports, and what the paper quotes: rho = 0.8,
p = 0.2 for its four EF / AP-gain pairs) assumes many points; the exact permutation test enumerates every ordering
of the points. With four points no ordering gives an exact two-sided p below 2/24 = 0.083, so no correlation of
four points can be significant at 0.05. :func:`rank_correlation` reports both p-values, Kendall's tau, the smallest
exact p these points could reach at all, and a warning below :data:`MIN_POINTS` points.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["MAX_EXACT_POINTS", "MIN_POINTS", "RankCorrelation", "exact_spearman_p", "rank_correlation"]

#: below this many points :func:`rank_correlation` attaches a warning (the paper correlates 4 strides).
MIN_POINTS = 5
#: exact permutation p-values enumerate n! orderings; above this many points only the approximation is given.
MAX_EXACT_POINTS = 9
_EPS = 1e-12  # orderings whose |rho| is within this of the observed one count as "at least as extreme"


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's rho and Kendall's tau (tau-b) of ``n`` paired values, or why they are undefined.

    ``spearman_p``: two-sided, t-distribution approximation (``scipy.stats.spearmanr``); ``spearman_p_exact``:
    two-sided exact permutation p (None above :data:`MAX_EXACT_POINTS` points); ``min_p_exact``: the smallest
    exact two-sided p any ordering of these values could give; ``kendall_p``: ``scipy.stats.kendalltau``
    (exact for small n without ties, else the normal approximation).
    """

    n: int
    spearman: float | None = None
    spearman_p: float | None = None
    spearman_p_exact: float | None = None
    kendall: float | None = None
    kendall_p: float | None = None
    min_p_exact: float | None = None
    undefined: str | None = None
    warning: str | None = None

    @property
    def defined(self) -> bool:
        """Whether the correlations could be computed (at least 3 points, neither sequence constant)."""
        return self.undefined is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return asdict(self)

    def sentence(self, digits: int = 3) -> str:
        """One line, e.g. ``Spearman ρ = 0.800 (p = 0.200, exact p = 0.333, n = 4); Kendall τ = 0.667 (p = 0.333)``."""
        if not self.defined:
            return f"undefined for n = {self.n} ({self.undefined})"
        exact = "" if self.spearman_p_exact is None else f", exact p = {self.spearman_p_exact:.{digits}f}"
        return (f"Spearman ρ = {self.spearman:.{digits}f} (p = {self.spearman_p:.{digits}f}{exact}, n = {self.n}); "
                f"Kendall τ = {self.kendall:.{digits}f} (p = {self.kendall_p:.{digits}f})")


def _average_ranks(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(v, method="average")


def _permutation_rhos(x: Sequence[float], y: Sequence[float]) -> tuple[float, np.ndarray]:
    """Observed Spearman rho and the rho of every ordering of ``y`` against ``x`` (n! values)."""
    rx = _average_ranks(np.asarray(x, dtype=float))
    ry = _average_ranks(np.asarray(y, dtype=float))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = math.sqrt(float(rx @ rx) * float(ry @ ry))
    perms = np.array(list(itertools.permutations(range(len(ry)))), dtype=np.int64)
    return float(rx @ ry) / norm, (ry[perms] @ rx) / norm


def exact_spearman_p(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """``(p, min_p, max_abs_rho)``: exact two-sided permutation p of Spearman's rho, the smallest p any ordering
    could give, and the largest |rho| any ordering reaches (1 without ties).

    Every ordering of ``y`` is equally likely under independence; ``p`` is the fraction of orderings whose |rho|
    is at least the observed one. Ties use average ranks. At most :data:`MAX_EXACT_POINTS` points.
    """
    if len(x) != len(y) or len(x) > MAX_EXACT_POINTS:
        raise ValueError(f"exact_spearman_p needs two equally long sequences of <= {MAX_EXACT_POINTS} values, got "
                         f"{len(x)} and {len(y)}")
    observed, rhos = _permutation_rhos(x, y)
    extreme = np.abs(rhos)
    p = float(np.mean(extreme >= abs(observed) - _EPS))
    min_p = float(np.mean(extreme >= extreme.max() - _EPS))
    return p, min_p, float(extreme.max())


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> RankCorrelation:
    """Spearman and Kendall correlation of paired values ``x[i]``, ``y[i]`` (see :class:`RankCorrelation`).

    Undefined (with the reason) for fewer than 3 points, a constant sequence or non-finite values; a warning is
    attached below :data:`MIN_POINTS` points.
    """
    from scipy.stats import kendalltau

    from mgfusion.metrics import spearman

    n = len(x)
    if len(y) != n:
        raise ValueError(f"rank_correlation needs paired values, got {n} and {len(y)}")
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        return RankCorrelation(n=n, undefined="non-finite values")
    try:
        rho, p = spearman(xs.tolist(), ys.tolist())
    except ValueError as e:
        return RankCorrelation(n=n, undefined=str(e))
    tau = kendalltau(xs, ys)
    p_exact = min_p = None
    warning = None
    if n <= MAX_EXACT_POINTS:
        p_exact, min_p, max_rho = exact_spearman_p(xs, ys)
        if n < MIN_POINTS:
            warning = _few_points_warning(n, min_p, max_rho)
    return RankCorrelation(n=n, spearman=rho, spearman_p=p, spearman_p_exact=p_exact, kendall=float(tau.statistic),
                           kendall_p=float(tau.pvalue), min_p_exact=min_p, warning=warning)


def _few_points_warning(n: int, min_p: float, max_rho: float) -> str:
    orderings = math.factorial(n)
    reaching = round(min_p * orderings)
    verdict = (f"so no correlation of {n} points can be significant at the 0.05 level" if min_p > 0.05 else
               "so only the most extreme orderings can be significant at the 0.05 level")
    return (f"only {n} points: an exact two-sided Spearman test on {n} points cannot give p below {min_p:.3f} "
            f"(only {reaching} of the {orderings} orderings reach |ρ| = {max_rho:.3f}), {verdict}. The "
            f"t-approximation p assumes many points and is optimistic here; read ρ as a description of {n} points, "
            f"not as evidence. Sweep more strides or settings (n >= {MIN_POINTS}) for a test.")
