"""Dataset-level aggregation of per-image metric values (docs/metrics.md, aggregation).

``reference`` reproduces the authors' ``mean_metrics_per_stage``: every per-image value is rounded to 2 decimals
first (docs/differences.md, B8: tiny EF values become 0), the mean of the rounded values is rounded to 2 decimals
again. The other variants report the plain mean, the population std and the count of the unrounded values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from mgfusion.metrics.config import VARIANTS

__all__ = ["aggregate", "concat_values"]

Values = torch.Tensor | np.ndarray | Sequence[float]


def _round2(x: np.ndarray) -> np.ndarray:
    """Round half to even at 2 decimals in float32, as ``torch.Tensor.round(decimals=2)`` does."""
    return torch.as_tensor(np.asarray(x, dtype=np.float32)).round(decimals=2).numpy().astype(np.float64)


def concat_values(batches: Sequence[Mapping[str, Values]]) -> dict[str, np.ndarray]:
    """Concatenate per-batch dicts ``{name: (B,) values}`` into ``{name: (N,) float64 array}``."""
    out: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        for key, val in batch.items():
            arr = val.detach().cpu().double().numpy() if isinstance(val, torch.Tensor) else np.asarray(val, float)
            out.setdefault(key, []).append(arr.reshape(-1))
    return {k: np.concatenate(v) for k, v in out.items()}


def aggregate(per_image_values: Mapping[str, Values] | Sequence[Mapping[str, Values]],
              variant: str = "reference") -> dict[str, dict[str, float]]:
    """``{name: {"mean", "std", "count"}}`` over images for every metric name.

    ``per_image_values``: ``{name: (N,) values}`` or a list of such dicts (one per batch), e.g. the outputs of
    ``compute_metrics``. Raises ValueError on an unknown variant, empty input or non-finite values.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown metric variant {variant!r}; valid variants: {list(VARIANTS)}")
    if isinstance(per_image_values, Mapping):
        per_image_values = [per_image_values]
    values = concat_values(per_image_values)
    if not values:
        raise ValueError("nothing to aggregate: no metric values given")
    result = {}
    for key, arr in values.items():
        if arr.size == 0:
            raise ValueError(f"no values for metric {key!r}")
        if not np.isfinite(arr).all():
            raise ValueError(f"metric {key!r} has non-finite per-image values")
        if variant == "reference":
            arr = _round2(arr)
            mean = float(_round2(np.array([arr.mean()]))[0])
        else:
            mean = float(arr.mean())
        result[key] = {"mean": mean, "std": float(arr.std()), "count": int(arr.size)}
    return result
