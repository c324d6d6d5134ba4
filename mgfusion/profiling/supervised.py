"""The supervised check of the label-free SC (the paper's RQ4): SC against SC_gt per encoder and stride.

SC_gt is mgfusion's reconstruction of the paper's supervised counterpart (see docs/metrics.md, SC_gt); it is
computed per image by :class:`~mgfusion.profiling.features.FeatureMetrics` when the source has labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mgfusion.metrics import spearman

NOTE = "SC_gt is mgfusion's reconstruction of the paper's supervised counterpart (docs/metrics.md), not the authors' code."


def _spearman(pairs: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Spearman's rho of (metric, label score) pairs, or the reason it is undefined (n < 3, constant values)."""
    try:
        rho, p = spearman([a for a, _ in pairs], [b for _, b in pairs])
    except ValueError as e:
        return {"rho": None, "p": None, "n": len(pairs), "undefined": str(e)}
    return {"rho": rho, "p": p, "n": len(pairs)}


def rq4_report(summary: Mapping[str, Mapping[int, Mapping[str, Mapping[str, float]]]]) -> dict[str, Any] | None:
    """Mean SC and SC_gt per encoder, Spearman across encoders and across (encoder, stride); None without SC_gt."""
    pairs = {e: {s: (m["SC"]["mean"], m["SC_gt"]["mean"]) for s, m in d.items() if "SC_gt" in m}
             for e, d in summary.items()}
    pairs = {e: v for e, v in pairs.items() if v}
    if not pairs:
        return None
    per_encoder = {e: (float(np.mean([a for a, _ in v.values()])), float(np.mean([b for _, b in v.values()])))
                   for e, v in pairs.items()}
    return {
        "per_encoder": {e: {"SC": a, "SC_gt": b} for e, (a, b) in per_encoder.items()},
        "note": NOTE,
        "spearman_encoders": _spearman(list(per_encoder.values())),
        "spearman_encoder_stride": _spearman([ab for v in pairs.values() for ab in v.values()]),
    }


def rq4_markdown(rq4: Mapping[str, Any]) -> str:
    """``supervised_rq4.md``: the per-encoder table and both correlations."""
    lines = ["| Encoder | SC | SC_gt |", "|---|---|---|"]
    for e, v in rq4["per_encoder"].items():
        lines.append(f"| {e} | {v['SC']:.3f} | {v['SC_gt']:.3f} |")
    for key in ("spearman_encoders", "spearman_encoder_stride"):
        r = rq4[key]
        if r["rho"] is None:
            lines.append(f"\n{key}: undefined for n = {r['n']} ({r['undefined']})")
        else:
            lines.append(f"\n{key}: rho = {r['rho']:.3f}, p = {r['p']:.3g}, n = {r['n']}")
    lines.append(f"\n{rq4['note']}")
    return "\n".join(lines) + "\n"
