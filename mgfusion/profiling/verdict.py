"""Is an encoder's SC/EF above its controls? Paired per-image comparisons and the verdicts of a profile.

For an encoder row E, a control row K, a metric M and a stride s, the images where both rows have a finite value
are paired: ``wins`` = images with ``M_E > M_K``, ``losses`` = ``M_E < M_K``, ``ties`` = equal. Two one-sided
tests of "E is above K":

* the sign test: ``P(X >= wins)`` for ``X ~ Binomial(wins + losses, 1/2)`` (ties dropped), distribution-free;
* Wilcoxon's signed-rank test on ``M_E - M_K`` (zero differences dropped; scipy's exact or normal approximation).

Verdict (``alpha`` = ``controls.alpha``, default 0.05):

* ``exceeds``: ``wins > losses`` and the sign test's p < alpha;
* ``too few images``: even ``wins + losses`` wins out of ``wins + losses`` could not reach p < alpha
  (``0.5 ** n >= alpha``, i.e. n < 5 at alpha = 0.05), so nothing can be concluded;
* ``does not exceed``: otherwise.

Per-image values are the stored, unrounded ones (the reference variant's table rounding is not applied).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

EXCEEDS, NOT_EXCEEDS, TOO_FEW = "exceeds", "does not exceed", "too few images"
#: metrics compared with the controls
VERDICT_METRICS = ("EF", "SC")

# {row: {stride: {metric: (N,) float64 array over the profile's images, NaN where missing}}}
PerImage = dict[str, dict[int, dict[str, np.ndarray]]]


def per_image_values(records: Iterable[Mapping[str, Any]], *, rows: Sequence[str], image_ids: Sequence[str],
                     metrics: Sequence[str] = VERDICT_METRICS) -> PerImage:
    """``{row: {stride: {metric: (N,) array}}}`` of the stored values of ``rows``, aligned with ``image_ids``
    (NaN where a value is missing or not finite); 8 bytes per value, so large profiles fit in memory."""
    position = {iid: i for i, iid in enumerate(image_ids)}
    names = set(rows)
    out: PerImage = {r: {} for r in rows}
    for rec in records:
        i = position.get(rec["image_id"])
        if rec["encoder"] not in names or i is None:
            continue
        for s, m in rec["metrics"].items():
            per = out[rec["encoder"]].setdefault(int(s), {})
            for key in metrics:
                v = m.get(key)
                if v is not None:
                    per.setdefault(key, np.full(len(position), np.nan))[i] = float(v)
    return out


def paired_comparison(encoder: np.ndarray, control: np.ndarray, *, alpha: float = 0.05) -> dict[str, Any]:
    """Compare per-image values of an encoder with a control (aligned arrays, NaN = missing; rules: module doc).

    Returns ``{"n", "wins", "losses", "ties", "mean_encoder", "mean_control", "mean_difference", "sign_p",
    "wilcoxon_p", "verdict"}`` (p-values None when undefined, e.g. no untied pair).
    """
    from scipy.stats import binomtest, wilcoxon

    a, b = np.asarray(encoder, dtype=float), np.asarray(control, dtype=float)
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    d = a - b
    n = int(both.sum())
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    untied = wins + losses
    sign_p = float(binomtest(wins, untied, 0.5, alternative="greater").pvalue) if untied else None
    wilcoxon_p = float(wilcoxon(d[d != 0], alternative="greater").pvalue) if untied else None
    if untied == 0 or 0.5 ** untied >= alpha:
        verdict = TOO_FEW
    elif wins > losses and sign_p < alpha:
        verdict = EXCEEDS
    else:
        verdict = NOT_EXCEEDS
    return {"n": n, "wins": wins, "losses": losses, "ties": n - untied,
            "mean_encoder": float(a.mean()) if n else None, "mean_control": float(b.mean()) if n else None,
            "mean_difference": float(d.mean()) if n else None, "sign_p": sign_p, "wilcoxon_p": wilcoxon_p,
            "verdict": verdict}


def compare_with_controls(values: PerImage, *, encoders: Sequence[str], controls: Mapping[str, Sequence[str]],
                          alpha: float = 0.05, metrics: Sequence[str] = VERDICT_METRICS) -> list[dict[str, Any]]:
    """One comparison row per (encoder, stride, metric, control).

    Args:
        values: :func:`per_image_values` of the encoder and control rows.
        controls: ``{encoder: [control rows it is compared with]}``.
    """
    rows = []
    for enc in encoders:
        for s in sorted(values.get(enc, {})):
            for metric in metrics:
                mine = values[enc][s].get(metric)
                for ctl in controls.get(enc, []):
                    theirs = values.get(ctl, {}).get(s, {}).get(metric)
                    if mine is not None and theirs is not None:
                        rows.append({"encoder": enc, "stride": s, "metric": metric, "control": ctl,
                                     **paired_comparison(mine, theirs, alpha=alpha)})
    return rows


def select_rows(rows: Iterable[Mapping[str, Any]], encoder: str, stride: int) -> list[dict[str, Any]]:
    """The comparison rows of ``encoder`` at ``stride``."""
    return [dict(r) for r in rows if r["encoder"] == encoder and int(r["stride"]) == int(stride)]


def warnings_for(rows: Iterable[Mapping[str, Any]], *, what: str, alpha: float = 0.05) -> list[str]:
    """One warning line per metric with a comparison that is not ``exceeds``; ``what`` names encoder and stride.

    E.g. ``aux at OS16: EF does NOT exceed control:noise (above it on 3 of 8 images, sign-test p = 0.86 >= 0.05;
    means 12.1 vs 13.0)``; all failed controls of a metric share its line.
    """
    failed: dict[str, list[str]] = {}
    for r in rows:
        if r["verdict"] == EXCEEDS:
            continue
        if r["verdict"] == TOO_FEW:
            reason = f"too few images to tell: {r['wins'] + r['losses']} untied pairs"
        else:
            reason = f"above it on {r['wins']} of {r['n']} images, sign-test p = {_p(r['sign_p'])} >= {alpha:g}"
        failed.setdefault(r["metric"], []).append(
            f"{r['control']} ({reason}; means {_num(r['mean_encoder'])} vs {_num(r['mean_control'])})")
    return [f"{what}: {metric} does NOT exceed " + ", ".join(items) for metric, items in failed.items()]


def verdict_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of comparison rows."""
    head = "| Encoder | OS | Metric | Control | Encoder mean | Control mean | Wins / n | Sign p | Wilcoxon p | Verdict |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['encoder']} | {r['stride']} | {r['metric']} | {r['control']} | {_num(r['mean_encoder'])} "
                     f"| {_num(r['mean_control'])} | {r['wins']} / {r['n']} | {_p(r['sign_p'])} | "
                     f"{_p(r['wilcoxon_p'])} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def _p(v: float | None) -> str:
    return "–" if v is None else f"{v:.2g}"
