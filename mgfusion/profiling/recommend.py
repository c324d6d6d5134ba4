"""Turn a :class:`~mgfusion.profiling.selection.Recommendation` into a Hydra backbone config (``recommended_fusion.yaml``).

The selection rules themselves live in :mod:`mgfusion.profiling.selection` (dependency-free).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

from mgfusion.utils.io import atomic_write_text

from .selection import Recommendation, recommend_pair

__all__ = ["Recommendation", "fusion_config", "recommend_pair", "write_fusion_config"]


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
        "# Recommended by tools/profile_encoders.py (metric-guided pairing, paper 3.3; rules: mgfusion/profiling/selection.py).\n"
        f"# master {rec.master} (mean SC {rec.master_sc:.3f}) + frozen auxiliary {rec.auxiliary} "
        f"(mean SC {rec.auxiliary_sc:.3f}),\n# injected at stride {rec.stride} = argmax of the auxiliary's EF ({ef}).\n"
        "# Use it: copy into configs/backbone/ and train with backbone=<file name>, or pass its values as overrides.\n"
    )
    body = OmegaConf.to_yaml(OmegaConf.create(fusion_config(rec, **kwargs)))
    atomic_write_text(path, header + body)
