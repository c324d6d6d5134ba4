"""fp16 training of the pixel decoder in both precision settings against fp32 (docs/mask2former_head.md).

Three runs of the micro fused model with the study head (the paper's 256-d ``mask2former`` in the full run) on the
synthetic data, from the same initialisation and in the same data order: fp32; fp16 (GradScaler) with the pixel
decoder in float32 (``model.pixel_decoder.precision=fp32``, the original Mask2Former's); fp16 with the pixel decoder
under autocast (``precision=autocast``). Per iteration: total loss, unscaled unclipped gradient norms of the model and
of the pixel decoder, loss scale, skipped steps. The comparison gives, per setting, the final loss and the medians of
the relative loss difference and of the gradient-norm ratios to the fp32 run.
"""

from __future__ import annotations

import io
import math
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from detectron2.utils.events import EventStorage

from mgfusion.utils.io import atomic_write_bytes

from .common import (
    Context,
    amp_overrides,
    build_trainer,
    cpu_fp16_stand_in,
    micro_overrides,
    result,
    run_steps,
    trainable,
)

#: (label, training precision, model.pixel_decoder.precision); the first is the baseline.
SETTINGS = [("fp32", "fp32", "fp32"), ("fp16, pixel decoder fp32", "fp16", "fp32"),
            ("fp16, pixel decoder autocast", "fp16", "autocast")]


def precision_study(ctx: Context) -> dict[str, Any]:
    """Run the three settings and compare them (see the module docstring)."""
    iters = ctx.args.study_iters or ctx.sizes.study_iters
    runs = []
    for label, dtype, decoder_precision in SETTINGS:
        forced = cpu_fp16_stand_in(ctx, dtype)
        overrides = micro_overrides(ctx, *amp_overrides("fp32" if forced else dtype),
                                    f"model.pixel_decoder.precision={decoder_precision}", f"solver.max_iter={iters}",
                                    model=ctx.sizes.study_model)
        start = time.perf_counter()
        trainer = build_trainer(overrides, ctx.scratch / f"study_{dtype}_{decoder_precision}", precision=forced)
        error = None
        with EventStorage(0) as storage:
            try:
                records = run_steps(trainer, iters, storage, desc=label if iters >= 20 else None)
            except FloatingPointError as e:  # detectron2 stops on a non-finite loss
                records, error = [], str(e)
        runs.append({
            "setting": label, "precision": str(trainer.precision), "pixel_decoder": decoder_precision,
            "seconds": round(time.perf_counter() - start, 2), "error": error,
            "losses": [r.loss for r in records], "grad_norms": [r.grad_norm for r in records],
            "pixel_decoder_grad_norms": [r.pixel_decoder_grad_norm for r in records],
            "loss_scales": [r.loss_scale for r in records], "skipped": [r.skipped for r in records],
            "parameters_finite": all(bool(torch.isfinite(p).all()) for _, p in trainable(trainer.model)),
        })  # fmt: skip
    return {"status": "ok", "iterations": iters, "model": f"fusion_micro_d3s2 + {ctx.sizes.study_model}",
            "image_size": ctx.sizes.micro_image, "settings": [s[0] for s in SETTINGS], "runs": runs,
            "comparison": compare_runs(runs)}


def median_rel_diff(values: list[float], reference: list[float]) -> float | None:
    """Median of |v - r| / |r| over the finite pairs (None without any)."""
    pairs = [(v, r) for v, r in zip(values, reference) if math.isfinite(v) and math.isfinite(r) and r != 0]
    return statistics.median(abs(v - r) / abs(r) for v, r in pairs) if pairs else None


def median_ratio(values: list[float], reference: list[float], keep: list[bool]) -> float | None:
    """Median of v / r over the kept pairs with finite values and a positive reference (None without any)."""
    pairs = [v / r for v, r, k in zip(values, reference, keep) if k and math.isfinite(v) and math.isfinite(r) and r > 0]
    return statistics.median(pairs) if pairs else None


def compare_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run: final loss (mean of the last 10 %), median relative loss difference to the first run (over all and
    over the first 20 iterations), median ratios of its total and pixel-decoder gradient norms to the first run's
    (over its applied steps), skipped steps and non-finite losses."""
    base = runs[0]
    rows = []
    for run in runs:
        n = min(len(run["losses"]), len(base["losses"]))
        first = min(20, n)
        applied = [not s for s in run["skipped"][:n]]
        rows.append({
            "setting": run["setting"], "iterations": n,
            "final_loss": statistics.fmean(run["losses"][n - max(1, n // 10):n]) if n else None,
            "loss_rel_diff_median": median_rel_diff(run["losses"][:n], base["losses"][:n]),
            "loss_rel_diff_first20": median_rel_diff(run["losses"][:first], base["losses"][:first]),
            "grad_norm_ratio_median": median_ratio(run["grad_norms"], base["grad_norms"], applied),
            "pd_grad_norm_ratio_median": median_ratio(run["pixel_decoder_grad_norms"],
                                                      base["pixel_decoder_grad_norms"], applied),
            "skipped_steps": sum(run["skipped"]),
            "nonfinite_losses": sum(not math.isfinite(x) for x in run["losses"]) + (1 if run["error"] else 0),
        })  # fmt: skip
    return rows


def study_checks(study: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Verdict per fp16 run: all iterations ran with finite losses and parameters, at most half skipped."""
    for run in study["runs"][1:]:
        n, skipped = len(run["losses"]), sum(run["skipped"])
        ok = (run["error"] is None and n == study["iterations"] and all(math.isfinite(x) for x in run["losses"])
              and run["parameters_finite"] and skipped <= n // 2)
        yield result(f"precision_study[{run['setting']}]", ok, skipped, None,
                     f"{n} iterations, {skipped} skipped by the GradScaler, parameters finite: "
                     f"{run['parameters_finite']}" + (f", error: {run['error']}" if run["error"] else ""),
                     run["seconds"])


def plot_study(study: dict[str, Any], path: Path) -> None:
    """Loss and gradient-norm curves of the runs (PNG at ``path``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    keys = [("losses", "total loss"), ("grad_norms", "gradient norm (unscaled, before clipping)"),
            ("pixel_decoder_grad_norms", "pixel-decoder gradient norm")]
    for ax, (key, title) in zip(axes, keys):
        for run in study["runs"]:
            values = [v if math.isfinite(v) and not s else math.nan for v, s in zip(run[key], run["skipped"])]
            ax.plot(range(len(values)), values, label=run["setting"], linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        if key != "losses":
            ax.set_yscale("log")
    axes[0].legend()
    fig.suptitle(f"{study['model']}, {study['image_size']} px synthetic data: fp16 pixel decoder in fp32 vs autocast")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
