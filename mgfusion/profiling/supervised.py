"""The supervised checks of the label-free metrics, when the image source has labels.

* SC against SC_gt (the paper's RQ4): per encoder and across (encoder, stride). SC_gt is mgfusion's reconstruction
  of the paper's supervised counterpart (docs/metrics.md, SC_gt).
* EF against EF_gt (ours, docs/metrics.md, EF_gt): at each stride, Spearman's rho over images between the
  label-free EF and EF_gt, per encoder and pooled over the encoders' (encoder, image) pairs, so a user can check on
  their own labelled data that EF follows the alignment of the features' edges with the true segment boundaries.

Both are computed per image by :class:`~mgfusion.profiling.features.MetricScorer` when the source has labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mgfusion.metrics import spearman

from .verdict import per_image_values

NOTE = "SC_gt is mgfusion's reconstruction of the paper's supervised counterpart (docs/metrics.md), not the authors' code."
EF_NOTE = ("EF_gt (docs/metrics.md): the corrected EC/NC of the features' strong PCA-map edges with the ground-truth "
           "segment boundaries in place of the image edges; 0 = chance, 100 = all edge energy on the boundaries.")


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


def ef_gt_report(records: Iterable[Mapping[str, Any]], *, encoders: Sequence[str], image_ids: Sequence[str]
                 ) -> dict[str, Any] | None:
    """Per stride: mean EF / EF_gt and Spearman(EF, EF_gt) over images per encoder, and pooled over encoders.

    Returns ``{"per_stride": {stride: {"per_encoder": {enc: {"EF", "EF_gt", "rho", "p", "n"}}, "pooled": {...}}},
    "note"}``, or None when no record has EF_gt.
    """
    values = per_image_values(records, rows=encoders, image_ids=image_ids, metrics=("EF", "EF_gt"))
    out: dict[int, dict[str, Any]] = {}
    for enc in encoders:
        for s, m in values.get(enc, {}).items():
            if "EF" not in m or "EF_gt" not in m:
                continue
            both = np.isfinite(m["EF"]) & np.isfinite(m["EF_gt"])
            pairs = list(zip(m["EF"][both].tolist(), m["EF_gt"][both].tolist()))
            if not pairs:
                continue
            entry = out.setdefault(s, {"per_encoder": {}, "pairs": []})
            entry["per_encoder"][enc] = {"EF": float(np.mean([a for a, _ in pairs])),
                                         "EF_gt": float(np.mean([b for _, b in pairs])), **_spearman(pairs)}
            entry["pairs"] += pairs
    if not out:
        return None
    per_stride = {s: {"per_encoder": v["per_encoder"], "pooled": _spearman(v["pairs"])} for s, v in sorted(out.items())}
    return {"per_stride": per_stride, "note": EF_NOTE}


def _rho(r: Mapping[str, Any]) -> str:
    if r["rho"] is None:
        return f"undefined (n = {r['n']})"
    return f"{r['rho']:.3f} (p = {r['p']:.2g}, n = {r['n']})"


def rq4_markdown(rq4: Mapping[str, Any] | None, ef: Mapping[str, Any] | None = None) -> str:
    """``supervised_rq4.md``: SC vs SC_gt (per-encoder table, both correlations) and EF vs EF_gt per stride."""
    lines: list[str] = []
    if rq4:
        lines += ["| Encoder | SC | SC_gt |", "|---|---|---|"]
        for e, v in rq4["per_encoder"].items():
            lines.append(f"| {e} | {v['SC']:.3f} | {v['SC_gt']:.3f} |")
        for key in ("spearman_encoders", "spearman_encoder_stride"):
            r = rq4[key]
            if r["rho"] is None:
                lines.append(f"\n{key}: undefined for n = {r['n']} ({r['undefined']})")
            else:
                lines.append(f"\n{key}: rho = {r['rho']:.3f}, p = {r['p']:.3g}, n = {r['n']}")
        lines.append(f"\n{rq4['note']}")
    if ef:
        lines += ["", "## EF vs EF_gt (Spearman over images, per stride)", "",
                  "| OS | Encoder | mean EF | mean EF_gt | Spearman rho (EF, EF_gt) |", "|---|---|---|---|---|"]
        for s, d in ef["per_stride"].items():
            for e, v in d["per_encoder"].items():
                lines.append(f"| {s} | {e} | {v['EF']:.2f} | {v['EF_gt']:.2f} | {_rho(v)} |")
            lines.append(f"| {s} | pooled | | | {_rho(d['pooled'])} |")
        lines.append(f"\n{ef['note']}")
    return "\n".join(lines).lstrip("\n") + "\n"
