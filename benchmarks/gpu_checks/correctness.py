"""Correctness checks of gpu_check: deformable attention vs the CPU float64 reference, optimizer steps in fp32 /
fp16 / bf16 with a GradScaler checkpoint round trip, inference on the device vs the CPU, and a 1-process group.

Each check is a generator of result rows (``common.result``); tolerances are relative errors
max |device - reference| / max(1, max |reference|) unless stated otherwise.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage
from omegaconf import OmegaConf

from mgfusion.engine import (
    Precision,
    Trainer,
    build_model,
    build_test_loader,
    build_train_loader,
    register_datasets,
)
from mgfusion.modeling import DEFORM_ATTN_IMPLS, MSDeformAttn, ms_deform_attn
from mgfusion.modeling.deform_attn import ms_deform_attn_reference
from mgfusion.utils.device import resolve_device
from mgfusion.utils.io import atomic_write_text

from .common import (
    Context,
    amp_overrides,
    build_trainer,
    compose_train,
    cpu_fp16_stand_in,
    micro_overrides,
    rel_error,
    result,
    run_steps,
    step_object,
    trainable,
)

TOL_DEFORM_FP64 = 1e-10
TOL_DEFORM_FP32 = 1e-4  # measured 2e-6 .. 4e-6 on a CPU
TOL_DEFORM_AUTOCAST = 5e-2
TOL_INFER_REL = 1e-4  # class and mask logits (measured 2e-6 for CPU float32 vs float64)
TOL_INFER_SEM = 1e-4  # semantic scores, absolute
TOL_DDP_GRAD = 1e-5  # DDP vs plain gradients (the same kernels; atomics may reorder sums on a GPU)
TRAIN_STEPS = 3  # applied optimizer steps per precision
MAX_FP16_STEPS = 24  # the GradScaler skips steps while it backs off from 2**16 (about 8 on the micro model)


# ---- deformable attention -------------------------------------------------------------------------------------------
def deform_attn_inputs(shapes: tuple[tuple[int, int], ...], queries: int, seed: int = 0) -> list[torch.Tensor]:
    """float64 CPU (value (2, N, 8, 32), sampling locations, attention weights), points partly outside the maps."""
    gen = torch.Generator().manual_seed(seed)
    batch, heads, dim, points = 2, 8, 32, 4
    tokens = sum(h * w for h, w in shapes)
    value = torch.randn(batch, tokens, heads, dim, generator=gen, dtype=torch.float64)
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=gen, dtype=torch.float64) * 1.2 - 0.1
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=gen, dtype=torch.float64)
    return [value, locations, weights / weights.sum((-1, -2), keepdim=True)]


def check_deform_attn(ctx: Context) -> Iterator[dict[str, Any]]:
    """Both implementations in float64 and float32 on the device against the CPU float64 reference: forward and
    the gradients of value, sampling locations and attention weights."""
    shapes = list(ctx.sizes.deform_shapes)
    inputs = deform_attn_inputs(ctx.sizes.deform_shapes, ctx.sizes.deform_queries)
    batch, _, heads, dim = inputs[0].shape
    grad_out = torch.randn(batch, ctx.sizes.deform_queries, heads * dim, generator=torch.Generator().manual_seed(1),
                           dtype=torch.float64)
    ref_in = [t.clone().requires_grad_() for t in inputs]
    reference = ms_deform_attn_reference(ref_in[0], shapes, ref_in[1], ref_in[2])
    ref_grads = torch.autograd.grad(reference, ref_in, grad_out)
    for impl in DEFORM_ATTN_IMPLS.names():
        for dtype, tol in ((torch.float64, TOL_DEFORM_FP64), (torch.float32, TOL_DEFORM_FP32)):
            start = time.perf_counter()
            ours_in = [t.to(ctx.device, dtype).requires_grad_() for t in inputs]
            out = ms_deform_attn(ours_in[0], shapes, ours_in[1], ours_in[2], impl=impl)
            grads = torch.autograd.grad(out, ours_in, grad_out.to(ctx.device, dtype))
            errors = {"forward": rel_error(out, reference)}
            for name, grad, ref in zip(("value", "locations", "weights"), grads, ref_grads):
                errors[f"grad_{name}"] = rel_error(grad, ref)
            worst = max(errors.values())
            yield result(f"deform_attn[{impl},{str(dtype).removeprefix('torch.')}]", worst <= tol, worst, tol,
                         "; ".join(f"{k} {v:.1e}" for k, v in errors.items()) + f"; computed on {out.device}",
                         time.perf_counter() - start)


def check_deform_attn_autocast(ctx: Context) -> Iterator[dict[str, Any]]:
    """The attention module under the device's fp16 / bf16 autocast against its own float32 output."""
    shapes = list(ctx.sizes.deform_shapes)
    tokens = sum(h * w for h, w in shapes)
    for impl in DEFORM_ATTN_IMPLS.names():
        for dtype in (torch.float16, torch.bfloat16):
            start = time.perf_counter()
            torch.manual_seed(0)
            module = MSDeformAttn(64, num_heads=8, num_levels=len(shapes), num_points=4, impl=impl).to(ctx.device)
            x = torch.randn(2, tokens, 64, device=ctx.device)
            ref_points = torch.rand(1, tokens, 2, device=ctx.device)
            with torch.no_grad():
                expected = module(x, ref_points, x, shapes)
            xi = x.clone().requires_grad_()
            with torch.autocast(ctx.device.type, dtype=dtype):
                out = module(xi, ref_points, xi, shapes)
            (grad,) = torch.autograd.grad(out.float().square().sum(), xi)
            err = rel_error(out.float(), expected)
            finite = bool(torch.isfinite(out).all()) and bool(torch.isfinite(grad).all())
            ok = out.dtype == dtype and finite and err <= TOL_DEFORM_AUTOCAST
            yield result(f"deform_attn[{impl},autocast {str(dtype).removeprefix('torch.')}]", ok, err,
                         TOL_DEFORM_AUTOCAST, f"output {out.dtype}, output and input gradient finite: {finite}",
                         time.perf_counter() - start)


# ---- optimizer steps ------------------------------------------------------------------------------------------------
def check_train_step(ctx: Context, dtype: str) -> Iterator[dict[str, Any]]:
    """Optimizer steps of the micro fused Mask2Former in ``dtype`` through the engine's Trainer; fp16 adds the
    checkpoint round trip of the GradScaler."""
    name = f"train_step[{dtype}]"
    if dtype == "bf16" and ctx.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        yield result(name, None, detail=f"{torch.cuda.get_device_name(ctx.device)} has no bf16 support")
        return
    start = time.perf_counter()
    forced = cpu_fp16_stand_in(ctx, dtype)
    overrides = micro_overrides(ctx, *amp_overrides("fp32" if forced else dtype))
    out_dir = ctx.scratch / f"train_{dtype}"
    trainer = build_trainer(overrides, out_dir, precision=forced)
    initial = {n: p.detach().clone() for n, p in trainable(trainer.model)}
    with EventStorage(0) as storage:
        if step_object(trainer).grad_scaler is None:
            records = run_steps(trainer, TRAIN_STEPS, storage)
        else:
            records = run_steps(trainer, MAX_FP16_STEPS, storage, until_applied=TRAIN_STEPS)
    applied = [r for r in records if not r.skipped]
    params_finite = all(bool(torch.isfinite(p).all()) for _, p in trainable(trainer.model))
    changed = any(not torch.equal(initial[n], p) for n, p in trainable(trainer.model))
    ok = (all(math.isfinite(r.loss) for r in records) and params_finite and changed and len(applied) == TRAIN_STEPS
          and all(math.isfinite(r.grad_norm) for r in applied))
    stand_in = " (dry-run stand-in: solver.amp refuses fp16 on a CPU)" if forced else ""
    detail = (f"precision {trainer.precision}{stand_in}; losses {[round(r.loss, 3) for r in records]}; "
              f"grad norms {[f'{r.grad_norm:.3g}' for r in records]}; applied {len(applied)} of {len(records)} steps; "
              f"parameters finite {params_finite}, updated {changed}")
    if records[-1].loss_scale is not None:
        detail += f"; loss scale {records[-1].loss_scale:g}"
    yield result(name, ok, records[-1].loss, None, detail, time.perf_counter() - start)
    if dtype == "fp16":
        yield from check_scaler_round_trip(ctx, trainer, overrides, out_dir, forced)


def check_scaler_round_trip(ctx: Context, trainer: Trainer, overrides: list[str], out_dir: Path,
                            forced: Precision | None) -> Iterator[dict[str, Any]]:
    """Save with the engine's checkpointer, resume in a new Trainer: GradScaler state, weights and iteration are
    restored and one more step stays finite."""
    start = time.perf_counter()
    name = "train_step[fp16 checkpoint round trip]"
    scaler = step_object(trainer).grad_scaler
    if scaler is None:
        yield result(name, False, detail=f"no GradScaler under precision {trainer.precision}")
        return
    saved = scaler.state_dict()
    fresh = torch.amp.GradScaler(ctx.device.type).state_dict()
    trainer.checkpointer.save(f"{trainer.checkpointer.file_prefix}_{trainer.iter:07d}")
    resumed = build_trainer([*overrides, "resume=true"], out_dir, precision=forced)
    restored = step_object(resumed).grad_scaler.state_dict()
    weights_equal = all(torch.equal(a, b) for a, b in zip(trainer.model.state_dict().values(),
                                                           resumed.model.state_dict().values()))
    with EventStorage(resumed.start_iter) as storage:
        (record,) = run_steps(resumed, 1, storage, start=resumed.start_iter)
    ok = (restored == saved and saved != fresh and weights_equal and resumed.start_iter == trainer.iter + 1
          and math.isfinite(record.loss))
    yield result(name, ok, detail=f"saved scaler {saved}; restored equal: {restored == saved}; differs from a fresh "
                 f"scaler: {saved != fresh}; weights equal: {weights_equal}; resumed at iteration {resumed.start_iter};"
                 f" next loss {record.loss:.3f}", seconds=time.perf_counter() - start)


# ---- inference ------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def tf32_disabled() -> Iterator[None]:
    """True float32 matmuls and convolutions on CUDA (TF32 keeps 10 mantissa bits)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def eval_outputs(model: torch.nn.Module, batch: list[dict], input_dtype: torch.dtype | None = None
                 ) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """(the transformer decoder's raw outputs, the per-image results) of ``model(batch)`` in eval mode; with
    ``input_dtype`` the backbone input is cast to it (the float64 reference run)."""
    raw: dict[str, torch.Tensor] = {}
    hooks = [model.transformer_decoder.register_forward_hook(lambda m, a, out: raw.update(out))]
    if input_dtype is not None:
        hooks.append(model.backbone.register_forward_pre_hook(lambda m, args: tuple(x.to(input_dtype) for x in args)))
    try:
        with torch.no_grad():
            results = model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return raw, results


def check_inference(ctx: Context) -> Iterator[dict[str, Any]]:
    """The micro model's eval outputs on the device (float32, TF32 off) against the CPU in float32 and float64."""
    start = time.perf_counter()
    cfg = compose_train([*micro_overrides(ctx, device="cpu"), f"output_dir={ctx.scratch / 'inference'}"])
    register_datasets(cfg.dataset)
    seed_all_rng(0)
    model = build_model(cfg, torch.device("cpu")).eval()
    loader = build_test_loader(cfg.dataset, cfg.dataset.test[0], num_workers=0)
    batch = [b[0] for b, _ in zip(loader, range(2))]
    references = {"cpu fp32": eval_outputs(model, batch),
                  "cpu fp64": eval_outputs(copy.deepcopy(model).double(), batch, torch.float64)}
    with tf32_disabled():
        raw, results = eval_outputs(copy.deepcopy(model).to(ctx.device), batch)
    seconds = time.perf_counter() - start
    for label, (ref_raw, ref_results) in references.items():
        errors = {k: rel_error(raw[k], ref_raw[k]) for k in ("pred_logits", "pred_masks")}
        sem = max(float((d["sem_seg"].cpu().double() - r["sem_seg"].double()).abs().max())
                  for d, r in zip(results, ref_results))
        ok = all(v <= TOL_INFER_REL for v in errors.values()) and sem <= TOL_INFER_SEM
        yield result(f"inference[{ctx.device.type} fp32 vs {label}]", ok, max(*errors.values(), sem), TOL_INFER_REL,
                     f"class logits {errors['pred_logits']:.1e}, mask logits {errors['pred_masks']:.1e} (relative), "
                     f"semantic scores {sem:.1e} (absolute, tolerance {TOL_INFER_SEM:g}); 2 images of "
                     f"{ctx.sizes.micro_image} px, TF32 off"
                     + ("; the checked device is the CPU itself" if ctx.device.type == "cpu" else ""), seconds)


# ---- process group --------------------------------------------------------------------------------------------------
def ddp_check_worker(container: dict[str, Any], device_type: str, result_path: str) -> None:
    """Body of the child process: collectives and one DDP training step against the plain model's gradients
    (the report goes to ``result_path``)."""
    from torch.nn.parallel import DistributedDataParallel

    report: dict[str, Any] = {"backend": dist.get_backend(), "world_size": comm.get_world_size()}
    try:
        device = resolve_device(device_type)  # cuda -> this process's GPU
        tensor = torch.full((4,), 2.0, device=device)
        dist.all_reduce(tensor)
        report["all_reduce_ok"] = bool(torch.all(tensor == 2.0 * comm.get_world_size()))
        report["all_gather_ok"] = comm.all_gather({"rank": comm.get_rank()}) == [{"rank": 0}]
        cfg = OmegaConf.create(container)
        register_datasets(cfg.dataset)
        seed_all_rng(0)
        model = build_model(cfg, device).train()
        plain = copy.deepcopy(model)
        # what mgfusion.engine.create_ddp_model passes for several processes (it returns the bare model for one)
        ddp = DistributedDataParallel(model, broadcast_buffers=False,
                                      device_ids=[comm.get_local_rank()] if device.type == "cuda" else None)
        report["wrapped"] = type(ddp).__name__
        batch = next(iter(build_train_loader(cfg.dataset, images_per_step=2, batches_consumed=0, seed=0,
                                             num_workers=0, aspect_ratio_grouping=False)))
        for net in (ddp, plain):
            torch.manual_seed(0)  # the criterion's point sampling draws the same points in both runs
            sum(net(batch).values()).backward()
        errors = [rel_error(a.grad, b.grad) for a, b in zip(model.parameters(), plain.parameters())
                  if a.grad is not None and b.grad is not None]
        report["grad_tensors"] = len(errors)
        report["max_grad_error"] = max(errors) if errors else float("nan")
    except Exception as e:  # noqa: BLE001 (reported to the parent, which turns it into a failed check)
        report["error"] = f"{type(e).__name__}: {e}"
        report["traceback"] = traceback.format_exc()
    atomic_write_text(result_path, json.dumps(report))


def child_visible_devices(device: torch.device, visible: str | None) -> str:
    """``CUDA_VISIBLE_DEVICES`` for a child process that must see only ``device`` (nothing for a CPU device)."""
    if device.type != "cuda":
        return ""
    index = device.index or 0
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return ids[index] if ids else str(index)


@contextlib.contextmanager
def visible_devices(value: str) -> Iterator[None]:
    """``CUDA_VISIBLE_DEVICES=value`` for processes started inside the block."""
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


def check_distributed(ctx: Context) -> Iterator[dict[str, Any]]:
    """A 1-process group (NCCL on CUDA, gloo on the CPU) started in a child process by detectron2's distributed
    worker, the entry point ``mgfusion.engine.launch_workers`` reaches for several processes (``launch`` calls the
    function in-process, without a group, for one)."""
    import torch.multiprocessing as mp
    from detectron2.engine.launch import _distributed_worker

    start = time.perf_counter()
    backend = "nccl" if ctx.device.type == "cuda" else "gloo"
    name = f"distributed[{backend}, 1 process, DDP step]"
    cfg = compose_train([*micro_overrides(ctx), f"output_dir={ctx.scratch / 'ddp'}"])
    result_path = ctx.scratch / "ddp_result.json"
    worker_args = (OmegaConf.to_container(cfg, resolve=True), ctx.device.type, str(result_path))
    # the worker uses its local rank's GPU (cuda:0): make that the checked GPU; a CPU check on a GPU host hides the
    # GPUs so that the worker picks gloo (as launch_workers does for device=cpu)
    with visible_devices(child_visible_devices(ctx.device, os.environ.get("CUDA_VISIBLE_DEVICES"))):
        processes = mp.start_processes(
            _distributed_worker, nprocs=1, join=False, daemon=False,
            args=(ddp_check_worker, 1, 1, 0, f"file://{ctx.scratch / 'ddp_init'}", worker_args, timedelta(minutes=3)),
        )  # fmt: skip
    deadline = time.monotonic() + ctx.args.ddp_timeout
    while not processes.join(timeout=2):
        if time.monotonic() > deadline:
            for process in processes.processes:
                process.terminate()
            raise TimeoutError(f"the process-group worker did not finish within {ctx.args.ddp_timeout} s")
    report = json.loads(result_path.read_text())
    if "error" in report:
        print(report.get("traceback", ""), file=sys.stderr)
        yield result(name, False, detail=f"{report['backend']} worker failed: {report['error']}",
                     seconds=time.perf_counter() - start)
        return
    ok = (report["backend"].lower() == backend and report["world_size"] == 1 and report["all_reduce_ok"]
          and report["all_gather_ok"] and report["wrapped"] == "DistributedDataParallel"
          and report["grad_tensors"] > 0 and report["max_grad_error"] <= TOL_DDP_GRAD)
    yield result(name, ok, report["max_grad_error"], TOL_DDP_GRAD,
                 f"backend {report['backend']}, world size {report['world_size']}, all_reduce {report['all_reduce_ok']}"
                 f", all_gather {report['all_gather_ok']}; {report['wrapped']} step: gradients of "
                 f"{report['grad_tensors']} tensors vs the plain model", time.perf_counter() - start)


CHECKS = {
    "deform_attn": check_deform_attn,
    "deform_attn autocast": check_deform_attn_autocast,
    "train_step[fp32]": lambda ctx: check_train_step(ctx, "fp32"),
    "train_step[fp16]": lambda ctx: check_train_step(ctx, "fp16"),
    "train_step[bf16]": lambda ctx: check_train_step(ctx, "bf16"),
    "inference": check_inference,
    "distributed": check_distributed,
}
