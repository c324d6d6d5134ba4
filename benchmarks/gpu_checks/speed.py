"""Speed section of gpu_check: the paper's D3S2 model (training s/iter and peak memory, inference images/s whole
image and sliding window), each master tuning mode, and the label-free metric suite on the device.

Training and whole-image inference are timed by ``benchmarks/train_speed.py``'s functions (warm-up excluded,
medians), so the figures mean the same as that benchmark's.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import statistics
import time
import traceback
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from .common import Context, build_trainer, compose_train, sync, trainable


def paper_overrides(ctx: Context, *extra: str) -> list[str]:
    """The paper's D3S2 model (the micro stand-in in the dry run) on synthetic crops, batch 3, AMP (fp32 on the
    CPU), the config's encoder weights or random-init opt-in, then the user's ``--override``s."""
    h, w = ctx.sizes.train_crop
    overrides = [*ctx.sizes.paper_model, "dataset=synthetic_panoptic", "solver=adamw_poly", "runtime=default",
                 f"device={ctx.device}", f"dataset.register.root={ctx.data_root}",
                 f"dataset.register.image_size={ctx.sizes.train_image}", "dataset.register.num_train=8",
                 "dataset.register.num_val=2", f"dataset.train_mapper.crop_size=[{h},{w}]", "solver.ims_per_batch=3",
                 f"runtime.num_workers={0 if ctx.dry_run else ctx.args.workers}", "runtime.tensorboard=false"]
    if ctx.device.type == "cpu":
        overrides.append("solver.amp.enabled=false")  # CPUs have no fp16 AMP; emulated bf16 is no speed figure
    return [*overrides, *weight_overrides(ctx), *ctx.args.override, *extra]


def weight_overrides(ctx: Context) -> list[str]:
    """Encoder weights when given; otherwise the config's opt-in for randomly initialised foundation encoders:
    every boolean key whose name contains ``random_init``, set to true."""
    args = ctx.args
    if args.master_weights or args.aux_weights:
        given = [("backbone.master.weights", args.master_weights), ("backbone.auxiliary.weights", args.aux_weights)]
        return [f"{key}={os.path.abspath(path)}" for key, path in given if path]
    probe = compose_train([*ctx.sizes.paper_model, f"output_dir={ctx.scratch}"])
    return [f"{key}=true" for key in random_init_keys(OmegaConf.to_container(probe, resolve=False))]


def random_init_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the boolean ``*random_init*`` keys in a plain config container."""
    if not isinstance(node, dict):
        return []
    keys = []
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if "random_init" in str(key) and isinstance(value, bool):
            keys.append(path)
        keys += random_init_keys(value, path)
    return keys


def measure_model(ctx: Context, name: str, overrides: list[str], *, iters: int, inference: bool) -> dict[str, Any]:
    """Training s/iter and peak memory; with ``inference`` also images/s at ``infer_size`` (whole image in fp32
    and under the training AMP policy, and the sliding window when ``mgfusion.inference`` provides it)."""
    import train_speed  # benchmarks/train_speed.py

    out_dir = ctx.scratch / ("speed_" + "".join(c if c.isalnum() else "_" for c in name))
    shutil.rmtree(out_dir, ignore_errors=True)
    trainer = build_trainer(overrides, out_dir)
    row: dict[str, Any] = {"name": name, "status": "ok", "precision": str(trainer.precision),
                           "crop": "x".join(map(str, ctx.sizes.train_crop)), "batch": trainer.cfg.solver.ims_per_batch,
                           "trainable_M": round(sum(p.numel() for _, p in trainable(trainer.model)) / 1e6, 2),
                           "overrides": [o for o in overrides if str(ctx.scratch) not in o]}
    row.update(train_speed.measure_training(trainer, warmup=ctx.sizes.warmup, iters=iters))
    if not inference:
        return row
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    images, size = ctx.sizes.infer_images, ctx.sizes.infer_size
    whole = train_speed.measure_inference(trainer, images=images, size=size)
    row["infer_size"] = whole["infer_size"]
    row["infer_fp32_images_per_s"] = whole["infer_images_per_s"]
    if trainer.precision.enabled:
        with trainer.precision.autocast():
            row["infer_amp_images_per_s"] = train_speed.measure_inference(
                trainer, images=images, size=size)["infer_images_per_s"]
    row.update(measure_sliding_window(ctx, trainer))
    if ctx.device.type == "cuda":
        row["infer_peak_mem_MB"] = torch.cuda.max_memory_allocated(ctx.device) / 2**20
    return row


def measure_sliding_window(ctx: Context, trainer: Any) -> dict[str, Any]:
    """Images/s of sliding-window semantic inference (windows of the training crop, 1/3 overlap) through
    ``mgfusion.inference.TestTimeModel``, when this checkout has it."""
    import train_speed  # benchmarks/train_speed.py

    if importlib.util.find_spec("mgfusion.inference") is None:
        return {"sliding_window": "skipped: mgfusion.inference is not in this checkout"}
    inference = importlib.import_module("mgfusion.inference")
    if not hasattr(inference, "TestTimeModel"):
        return {"sliding_window": "skipped: mgfusion.inference has no TestTimeModel"}
    window = list(ctx.sizes.train_crop)
    model = inference.TestTimeModel(trainer.model, {"mode": "slide", "window": window}, crop_size=window)
    # train_speed.measure_inference times ``.model`` on ``.cfg``'s first test set on ``.device``
    timed = SimpleNamespace(model=model, cfg=trainer.cfg, device=trainer.device)
    out = train_speed.measure_inference(timed, images=ctx.sizes.infer_images, size=ctx.sizes.infer_size)
    return {"infer_slide_fp32_images_per_s": out["infer_images_per_s"], "sliding_window": model.config.describe()}


def speed_paper_model(ctx: Context) -> Iterator[dict[str, Any]]:
    """Training and inference speed of the paper's model (the micro stand-in in the dry run)."""
    name = "d3s2" if not ctx.dry_run else "micro_d3s2 (dry-run stand-in)"
    yield measure_model(ctx, name, paper_overrides(ctx), iters=ctx.sizes.train_iters, inference=True)


def speed_tuning_modes(ctx: Context) -> Iterator[dict[str, Any]]:
    """Training speed of each master tuning mode (``backbone.master.tuning``), when the config has the key."""
    probe = compose_train([*ctx.sizes.paper_model, f"output_dir={ctx.scratch}"])
    if OmegaConf.select(probe, "backbone.master.tuning", default=None) is None:
        yield {"name": "tuning modes", "status": "skipped",
               "detail": "backbone.master.tuning is not in this checkout's backbone config"}
        return
    for mode in ctx.args.tuning_modes:
        try:
            yield measure_model(ctx, f"tuning={mode}", paper_overrides(ctx, f"backbone.master.tuning={mode}"),
                                iters=ctx.sizes.tuning_iters, inference=False)
        except Exception as e:  # noqa: BLE001 (one failing mode, e.g. a missing package, must not hide the others)
            traceback.print_exc()
            yield {"name": f"tuning={mode}", "status": "error", "detail": f"{type(e).__name__}: {e}"}


def metric_inputs(ctx: Context) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """``benchmarks/metrics_speed.py``'s photo and structured SAM2-shaped pyramid (``metrics_batch`` images,
    512x1024); the dry run average-pools both by ``metrics_shrink`` and keeps a quarter of the channels."""
    import metrics_speed  # benchmarks/metrics_speed.py

    images = metrics_speed.photo(ctx.sizes.metrics_batch)
    feats = metrics_speed.pyramid("structured", images)
    k = ctx.sizes.metrics_shrink
    if k > 1:
        images = F.avg_pool2d(images.float(), k).round().to(torch.uint8)
        feats = {s: F.avg_pool2d(f[:, : f.shape[1] // 4], k) for s, f in feats.items()}
    return images, feats


def speed_metrics(ctx: Context) -> Iterator[dict[str, Any]]:
    """The metric suite on the device, batched over images and the 4 levels, and its values against the CPU's."""
    from mgfusion.metrics import compute_pyramid_metrics

    images, feats = metric_inputs(ctx)
    dev_images, dev_feats = images.to(ctx.device), {s: f.to(ctx.device) for s, f in feats.items()}
    times = []
    for i in range(2 if ctx.dry_run else 4):  # the first call is a warm-up
        sync(ctx.device)
        start = time.perf_counter()
        values = compute_pyramid_metrics(dev_feats, dev_images)
        sync(ctx.device)
        if i:
            times.append(time.perf_counter() - start)
    cpu_values = compute_pyramid_metrics(feats, images)
    names = sorted(set.intersection(*(set(v) for v in cpu_values.values())))
    diffs = {n: max(float((values[s][n].cpu().double() - cpu_values[s][n].double()).abs().max()) for s in feats)
             for n in names}
    median = statistics.median(times)
    yield {"name": "metrics (compute_pyramid_metrics, reference variant)", "status": "ok",
           "images": ctx.sizes.metrics_batch, "levels": len(feats), "image_size": "x".join(map(str, images.shape[-2:])),
           "s_per_batch": median, "s_per_image": median / ctx.sizes.metrics_batch,
           "max_abs_diff_vs_cpu": {k: float(f"{v:.3g}") for k, v in diffs.items()}}


SECTIONS = {"paper model": speed_paper_model, "tuning modes": speed_tuning_modes, "metrics": speed_metrics}
