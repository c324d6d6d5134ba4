"""Metric-guided selection rules: master / auxiliary pairing and the injection stride (paper §3.3).

This module depends on the standard library only, so the fusion backbone can read a saved profile and pick its
injection stride without importing the profiler (dependency direction: tools -> engine -> profiling -> backbones;
``mgfusion.backbones.fusion`` imports this leaf module and nothing else from ``mgfusion.profiling``).

The rules (stated in every recommendation as ``Recommendation.rule``):

* master: the encoder with the highest SC, summarised as the mean over strides of its mean SC (the paper leaves the
  summary open; see docs/differences.md);
* auxiliary: among the other encoders, the one with the highest peak EF (max over strides of its mean EF); with two
  encoders this is simply "the other one";
* stride: argmax over strides of the auxiliary's mean EF.

Ties: equal stride scores go to the smaller stride (the reference code's res2..res5 order); equal encoder scores go
to the encoder whose name sorts first, so a recommendation never depends on dictionary order. The reference variant
rounds per-image values to two decimals, so exact ties do happen in practice.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

# {encoder: {stride: {metric: {"mean": float, ...}}}} as written to summary.json["encoders"] (strides may be str)
Summary = Mapping[str, Mapping[Any, Mapping[str, Mapping[str, Any]]]]

RULE = ("master = highest mean-over-strides SC; auxiliary = highest peak EF among the others; stride = argmax of "
        "the auxiliary's EF; ties: smaller stride, then encoder name in sort order")


def argmax_stride(scores: Mapping[int, float]) -> int:
    """Stride with the highest score; ties go to the smallest stride (the reference's res2..res5 order).

    Args:
        scores: ``{stride: score}`` with finite scores (e.g. mean EF per output stride); strides may be strings.
    """
    if not scores:
        raise ValueError("argmax_stride needs at least one (stride, score) pair")
    bad = {s: v for s, v in scores.items() if not _finite(v)}
    if bad:
        raise ValueError(f"argmax_stride got non-finite scores {bad}")
    by_stride = {int(s): float(v) for s, v in scores.items()}
    return max(sorted(by_stride), key=lambda s: (by_stride[s], -s))


@dataclass
class Recommendation:
    """The recommended fusion and the evidence for it (SC means are over strides; EF per stride)."""

    master: str
    auxiliary: str
    stride: int
    master_sc: float
    auxiliary_sc: float
    auxiliary_ef: dict[int, float]
    rule: str = RULE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (stride keys as strings)."""
        d = asdict(self)
        d["auxiliary_ef"] = {str(k): v for k, v in self.auxiliary_ef.items()}
        return d


def _finite(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _means(summary: Summary, encoder: str, metric: str) -> dict[int, float]:
    """``{stride: mean}`` of ``metric`` for ``encoder``; a stride without a finite mean is an error."""
    out = {}
    for s, metrics in summary[encoder].items():
        v = (metrics.get(metric) or {}).get("mean")
        if not _finite(v):
            raise ValueError(f"encoder {encoder!r} has no finite mean {metric} at stride {s} (value {v!r}); "
                             "cannot recommend a pair")
        out[int(s)] = float(v)
    if not out:
        raise ValueError(f"encoder {encoder!r} has no profiled strides; cannot recommend a pair")
    return out


def recommend_pair(summary: Summary) -> Recommendation:
    """Choose master, auxiliary and injection stride from per-encoder, per-stride SC/EF means (rules: module doc).

    Args:
        summary: ``{encoder: {stride: {"SC": {"mean": ...}, "EF": {"mean": ...}}}}`` with at least two encoders.
    """
    if len(summary) < 2:
        raise ValueError(f"a recommendation needs at least two profiled encoders, got {sorted(summary)}")
    names = sorted(summary)
    sc = {e: _means(summary, e, "SC") for e in names}
    ef = {e: _means(summary, e, "EF") for e in names}
    mean_sc = {e: sum(v.values()) / len(v) for e, v in sc.items()}
    master = max(names, key=lambda e: mean_sc[e])  # max keeps the first maximal item: name order breaks ties
    others = [e for e in names if e != master]
    aux = max(others, key=lambda e: max(ef[e].values()))
    return Recommendation(master=master, auxiliary=aux, stride=argmax_stride(ef[aux]), master_sc=mean_sc[master],
                          auxiliary_sc=mean_sc[aux], auxiliary_ef=dict(sorted(ef[aux].items())))


def read_profile_ef(path: str | os.PathLike, encoder: str | None = None) -> tuple[str, dict[int, float]]:
    """Mean EF per stride of ``encoder`` from a profile ``summary.json`` written by ``tools/profile_encoders.py``.

    Args:
        path: the profile's ``summary.json`` or its run folder.
        encoder: encoder name in the profile; ``None`` = the profile's recommended auxiliary.

    Returns: ``(encoder_name, {stride: mean EF})``.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "summary.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"profile summary not found: {path} (run tools/profile_encoders.py first)")
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not a valid profile summary (JSON error: {e})") from None
    encoders = summary.get("encoders") if isinstance(summary, dict) else None
    if not isinstance(encoders, dict):
        raise ValueError(  # noqa: TRY004 - a malformed file is a bad value, not a wrong argument type
            f"{path} has no 'encoders' table; is it a summary.json of tools/profile_encoders.py?")
    if encoder is None:
        encoder = (summary.get("recommendation") or {}).get("auxiliary")
        if encoder is None:
            raise ValueError(f"{path} has no recommendation; pass the auxiliary encoder's name explicitly")
    if encoder not in encoders:
        raise KeyError(f"encoder {encoder!r} is not in profile {path}; profiled: {', '.join(sorted(encoders))}")
    return encoder, _means(encoders, encoder, "EF")


__all__ = ["RULE", "Recommendation", "Summary", "argmax_stride", "read_profile_ef", "recommend_pair"]
