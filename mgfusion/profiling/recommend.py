"""Metric-guided pairing (paper §3.3, SPEC §4): master = structure-strong, auxiliary = edge-strong, stride = argmax EF.

* master: the encoder with the highest SC, summarised as the mean over strides of its mean SC (SPEC §4 leaves the
  summary open; the mean over strides is our choice, stated in the output).
* auxiliary: among the others, the encoder with the highest peak EF (max over strides of its mean EF); with two
  encoders this is simply "the other one".
* stride: argmax over strides of the auxiliary's mean EF (ties to the smaller stride, as the reference code).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from omegaconf import OmegaConf

from mgfusion.backbones.fusion import argmax_stride
from mgfusion.utils.io import atomic_write_text

# {encoder: {stride: {metric: {"mean": float, ...}}}}
Summary = Mapping[str, Mapping[int, Mapping[str, Mapping[str, float]]]]


@dataclass
class Recommendation:
    """The recommended fusion and the evidence for it."""

    master: str
    auxiliary: str
    stride: int
    master_sc: float
    auxiliary_sc: float
    auxiliary_ef: dict[int, float]
    rule: str = ("master = highest mean-over-strides SC; auxiliary = highest peak EF among the others; "
                 "stride = argmax of the auxiliary's EF")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["auxiliary_ef"] = {str(k): v for k, v in self.auxiliary_ef.items()}
        return d


def recommend_pair(summary: Summary) -> Recommendation:
    """Choose master, auxiliary and injection stride from per-encoder, per-stride SC/EF means."""
    if len(summary) < 2:
        raise ValueError(f"a recommendation needs at least two profiled encoders, got {sorted(summary)}")
    sc = {e: sum(v[s]["SC"]["mean"] for s in v) / len(v) for e, v in summary.items()}
    master = max(sorted(sc), key=lambda e: sc[e])
    others = [e for e in sorted(summary) if e != master]
    peak_ef = {e: max(summary[e][s]["EF"]["mean"] for s in summary[e]) for e in others}
    aux = max(others, key=lambda e: peak_ef[e])
    ef = {int(s): float(summary[aux][s]["EF"]["mean"]) for s in summary[aux]}
    return Recommendation(master=master, auxiliary=aux, stride=argmax_stride(ef), master_sc=sc[master],
                          auxiliary_sc=sc[aux], auxiliary_ef=ef)


def fusion_config(rec: Recommendation, *, weights: Mapping[str, str | None] | None = None,
                  operator: str = "replace") -> dict[str, Any]:
    """A ``configs/backbone``-style Hydra node building the recommended :class:`FusionBackbone`."""
    weights = dict(weights or {})

    def node(name: str) -> dict[str, Any]:
        return {"_target_": "mgfusion.backbones.build_encoder", "name": name, "weights": weights.get(name),
                "strict": True}

    return {
        "_target_": "mgfusion.backbones.build_fusion_backbone",
        "master": node(rec.master),
        "auxiliary": node(rec.auxiliary),
        "fusion": {"stride": rec.stride, "operator": operator, "from_profile": None, "profile_encoder": None,
                   "dynamic": False},
        "train_master": True,
        "aux_input_size": None,
    }


def write_fusion_config(path: str | os.PathLike, rec: Recommendation, **kwargs: Any) -> None:
    """Write the recommended fusion as a Hydra YAML node, with the evidence in a header comment."""
    ef = ", ".join(f"OS{s}: {v:.2f}" for s, v in sorted(rec.auxiliary_ef.items()))
    header = (
        "# Recommended by tools/profile_encoders.py (metric-guided pairing, paper 3.3 / SPEC 4).\n"
        f"# master {rec.master} (mean SC {rec.master_sc:.3f}) + frozen auxiliary {rec.auxiliary} "
        f"(mean SC {rec.auxiliary_sc:.3f}),\n# injected at stride {rec.stride} = argmax of the auxiliary's EF ({ef}).\n"
        "# Use it: copy into configs/backbone/ and train with backbone=<file name>, or pass its values as overrides.\n"
    )
    body = OmegaConf.to_yaml(OmegaConf.create(fusion_config(rec, **kwargs)))
    atomic_write_text(path, header + body)
