"""Per-class AP tables grouped as in the paper's Table 4 (boundary-sensitive vs large rigid classes)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["CLASS_GROUPS", "grouped_class_markdown", "grouped_class_rows", "matching_groupings"]

# The paper's Table 4 groups of the Cityscapes thing classes (names as in cityscapesscripts / detectron2).
CLASS_GROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    "cityscapes": {
        "boundary-sensitive": ("person", "rider", "motorcycle", "bicycle"),
        "large rigid": ("car", "truck", "bus", "train"),
    },
}


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def _resolve_groups(groups: str | Mapping[str, Sequence[str]]) -> Mapping[str, Sequence[str]]:
    if isinstance(groups, str):
        if groups not in CLASS_GROUPS:
            raise ValueError(f"Unknown class grouping '{groups}'; valid: {sorted(CLASS_GROUPS)}")
        return CLASS_GROUPS[groups]
    return groups


def grouped_class_rows(
    results: Mapping[str, Mapping[str, Any]],
    groups: str | Mapping[str, Sequence[str]] = "cityscapes",
    *,
    task: str = "segm",
    metric: str = "AP",
) -> list[dict[str, Any]]:
    """Rows ``{"group", "class", <run>: value, ...}``: each class, then each group's mean, then the overall mean.

    Args:
        results: run name -> detectron2 evaluation results (e.g. ``{"D3S2": {"segm": {"AP-person": 34.4, ...}}}``).
        groups: a key of :data:`CLASS_GROUPS` or ``{group: [class, ...]}``.
        task, metric: read ``results[run][task][f"{metric}-{class}"]``.
    Means skip NaN (classes without ground truth); the overall mean is over all grouped classes.
    """
    group_map = _resolve_groups(groups)
    runs = list(results)

    def value(run: str, cls: str) -> float:
        scores = results[run].get(task)
        key = f"{metric}-{cls}"
        if scores is None or key not in scores:
            raise KeyError(f"Run '{run}' has no '{task}/{key}'; available: {sorted(scores or {})}")
        return float(scores[key])

    rows, all_values = [], {run: [] for run in runs}
    for group, classes in group_map.items():
        for cls in classes:
            row = {"group": group, "class": cls}
            for run in runs:
                row[run] = value(run, cls)
                all_values[run].append(row[run])
            rows.append(row)
        rows.append(
            {"group": group, "class": "average", **{run: _mean([value(run, c) for c in classes]) for run in runs}}
        )
    rows.append({"group": "all", "class": "average", **{run: _mean(all_values[run]) for run in runs}})
    return rows


def grouped_class_markdown(
    results: Mapping[str, Mapping[str, Any]],
    groups: str | Mapping[str, Sequence[str]] = "cityscapes",
    *,
    task: str = "segm",
    metric: str = "AP",
    digits: int = 1,
) -> str:
    """The rows of :func:`grouped_class_rows` as a Markdown table (one column per run, averages in bold)."""
    rows = grouped_class_rows(results, groups, task=task, metric=metric)
    runs = list(results)
    lines = ["| group | class | " + " | ".join(runs) + " |", "|---|---|" + "---:|" * len(runs)]
    for row in rows:
        cells = [f"{row[run]:.{digits}f}" if not math.isnan(row[run]) else "–" for run in runs]
        label = row["class"]
        if label == "average":
            label, cells = "**average**", [f"**{c}**" for c in cells]
        lines.append(f"| {row['group']} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def matching_groupings(results: Mapping[str, Any], *, task: str = "segm", metric: str = "AP") -> list[str]:
    """Names in :data:`CLASS_GROUPS` whose every class has a ``f"{metric}-{class}"`` entry in ``results[task]``."""
    scores = results.get(task) or {}
    return [name for name, groups in CLASS_GROUPS.items()
            if all(f"{metric}-{c}" in scores for classes in groups.values() for c in classes)]
