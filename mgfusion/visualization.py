"""Pictures people would rather look at than read: prediction overlays (detectron2's Visualizer) and training curves."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch


def draw_prediction(image_rgb: np.ndarray, output: Mapping[str, Any], metadata: Any, *,
                    task: str | None = None, score_threshold: float = 0.5) -> np.ndarray:
    """Overlay one model output on its image with detectron2's ``Visualizer``.

    Args:
        image_rgb: (H, W, 3) uint8 RGB at the output's resolution.
        output: a detectron2 model output dict (``panoptic_seg`` / ``instances`` / ``sem_seg``).
        metadata: the dataset's detectron2 ``Metadata`` (class names, colours).
        task: ``panoptic`` | ``instance`` | ``semantic``; default: the richest one present in ``output``.
        score_threshold: instances below this score are not drawn.

    Returns: (H, W, 3) uint8 RGB overlay.
    """
    from detectron2.utils.visualizer import ColorMode, Visualizer

    vis = Visualizer(image_rgb, metadata, scale=1.0, instance_mode=ColorMode.IMAGE)
    task = task or next(t for t, k in (("panoptic", "panoptic_seg"), ("instance", "instances"),
                                       ("semantic", "sem_seg")) if k in output)
    if task == "panoptic":
        seg, info = output["panoptic_seg"]
        drawn = vis.draw_panoptic_seg(seg.to("cpu"), info)
    elif task == "instance":
        inst = output["instances"].to("cpu")
        drawn = vis.draw_instance_predictions(inst[inst.scores >= score_threshold])
    elif task == "semantic":
        drawn = vis.draw_sem_seg(output["sem_seg"].argmax(dim=0).to("cpu"))
    else:
        raise ValueError(f"unknown task {task!r}; valid: panoptic, instance, semantic")
    return drawn.get_image()


def save_overlay_grid(panels: Sequence[tuple[str, np.ndarray]], path: str | os.PathLike, *, columns: int = 4) -> None:
    """Save titled RGB panels as one PNG grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(panels) // columns))
    cols = min(columns, max(1, len(panels)))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, img) in zip(axes.ravel(), panels):
        ax.imshow(img)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def plot_training_curves(metrics_json: str | os.PathLike, path: str | os.PathLike,
                         keys: Sequence[str] = ("total_loss", "loss_ce", "loss_mask", "loss_dice", "lr")) -> list[str]:
    """Plot scalars from detectron2's ``metrics.json`` (one JSON object per line) against iteration.

    Returns the keys that were found and plotted.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, tuple[list[int], list[float]]] = {}
    with open(metrics_json, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            it = row.get("iteration")
            for k in keys:
                if it is not None and isinstance(row.get(k), (int, float)):
                    xs, ys = series.setdefault(k, ([], []))
                    xs.append(int(it))
                    ys.append(float(row[k]))
    found = [k for k in keys if k in series]
    if not found:
        return []
    fig, axes = plt.subplots(1, len(found), figsize=(3.4 * len(found), 3.0), squeeze=False)
    for ax, k in zip(axes[0], found):
        xs, ys = series[k]
        ax.plot(xs, ys, marker="." if len(xs) < 50 else None)
        ax.set_title(k)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if k != "lr" and min(ys) > 0:
            ax.set_yscale("log")
    fig.tight_layout()
    save_figure(fig, path)
    return found


def save_figure(fig, path: str | os.PathLike) -> None:
    """Save a matplotlib figure atomically (temp file + rename) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def image_to_rgb_array(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 RGB tensor -> (H, W, 3) uint8 numpy array."""
    return image.permute(1, 2, 0).contiguous().cpu().numpy().astype(np.uint8)
