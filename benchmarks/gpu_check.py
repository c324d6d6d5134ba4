"""GPU readiness: one command that proves mgfusion's CUDA paths and measures the paper's model on one GPU.

    python benchmarks/gpu_check.py              # full run: correctness, speed, fp16 pixel-decoder study (<= 10 min)
    python benchmarks/gpu_check.py --quick      # correctness only (about a minute)
    python benchmarks/gpu_check.py --dry-run    # everything on the CPU at tiny sizes (CI runs this to test the script)
    python benchmarks/gpu_check.py --master-weights DINOV3.pth --aux-weights SAM2.pt   # speed with real weights

Sections (each prints a table; the exit status is 1 when any correctness verdict is "fail", 2 without a GPU).
The code of each section is in ``benchmarks/gpu_checks/``:

1. correctness (verdict pass / fail / skip per check, with the measured error and the tolerance):
   * ``deform_attn[impl,fp64|fp32]``: both deformable-attention implementations on the device against the CPU float64
     corner-by-corner reference (``ms_deform_attn_reference``), forward and the gradients of value, sampling
     locations and attention weights; error = max |device - reference| / max(1, max |reference|).
   * ``deform_attn[impl,autocast fp16|bf16]``: the attention module under the device's autocast against its float32
     output (finite, low-precision output dtype, relative error bound).
   * ``train_step[fp32|fp16|bf16]``: optimizer steps of the micro fused Mask2Former (``fusion_micro_d3s2`` +
     ``mask2former_tiny`` on the synthetic panoptic data) built from configs/train.yaml with the engine's ``Trainer``
     (AMP policy, GradScaler, gradient clipping): losses, gradients of applied steps and parameters finite, parameters
     updated; fp16 also saves a checkpoint with the engine's checkpointer and resumes it in a new ``Trainer``
     (GradScaler state, weights and iteration restored, one more finite step).
   * ``inference[...]``: eval outputs of the same micro model on the device (float32, TF32 off) against the CPU in
     float32 and in float64: class logits and mask logits (relative error) and semantic scores (absolute error).
   * ``distributed[...]``: a 1-process process group (NCCL on CUDA, gloo in the dry run) started in a child process
     by detectron2's worker entry point (the one ``mgfusion.engine.launch_workers`` runs for several processes;
     with one process ``launch`` would skip the group): all-reduce, all-gather, and a DDP training step whose
     gradients equal the plain model's.
   * ``precision_study[...]`` (full and dry run): every fp16 run of the study below stayed finite.
   The dry run has no fp16 AMP policy on the CPU (``solver.amp`` refuses it) and installs CPU fp16 autocast with a
   CPU GradScaler (starting at 2**8) instead, so that the same GradScaler code paths run.
2. speed (full and dry run): the paper's D3S2 model (DINOv3 ViT-B/16 master + SAM2 Hiera-B+ auxiliary at stride 16,
   Mask2Former 256-d; random init unless weights are given) trained at 512x1024 crops, batch 3, AMP: median s/iter
   after warm-up and peak memory; inference images/s at 1024x2048 (whole image, fp32 and AMP; sliding window when
   ``mgfusion.inference`` provides it); each master tuning mode when the config has ``backbone.master.tuning``; the
   label-free metric suite (``mgfusion.metrics.compute_pyramid_metrics``) batched over images and levels, with the
   device-vs-CPU difference of its values. The dry run uses the micro encoders and tiny sizes instead.
3. precision_study (full and dry run): fp16 training (GradScaler) of the micro fused model with the paper's 256-d
   head, pixel decoder ``precision=fp32`` (Mask2Former's) vs ``precision=autocast``, against an fp32 run from the same
   initialisation and data order: loss and gradient norms per iteration (docs/mask2former_head.md); the curves are
   plotted next to the JSON (``<out>_precision_study.png``).

JSON (``--out``, default ``benchmarks/results/gpu_check[_quick|_dry_run].json``)::

    {"benchmark": "gpu_check", "mode": "full" | "quick" | "dry_run", "command": "...", "machine": {...},
     "environment": {"device", "torch", "cuda", + on a GPU "gpu", "capability", "memory_GB", "driver", "cudnn", "nccl",
                     "bf16_supported", "tf32_matmul", "tf32_cudnn"},
     "correctness": [{"name", "verdict": "pass" | "fail" | "skip", "measured", "tolerance", "detail", "seconds"}],
     "speed": [{"name", "status": "ok" | "skipped" | "error", "detail" | figures: "s_per_iter", "peak_mem_MB",
                "infer_*_images_per_s", "sliding_window", "s_per_image", "max_abs_diff_vs_cpu", ...}],
     "precision_study": {"status": "ok" | "skipped" | "error", "iterations", "model", "image_size", "settings",
                         "runs": [{"setting", "losses", "grad_norms", "pixel_decoder_grad_norms", "loss_scales",
                                   "skipped", "parameters_finite", "error", "seconds"}],
                         "comparison": [{"setting", "final_loss", "loss_rel_diff_median", "grad_norm_ratio_median",
                                         "pd_grad_norm_ratio_median", "skipped_steps", ...}], "plot"},
     "summary": {"verdict": "pass" | "fail", "pass", "fail", "skip", "seconds", "section_seconds"}}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch
from gpu_checks import correctness, speed, study
from gpu_checks.common import DRY_RUN, FULL, Context, environment, result

from mgfusion.utils.bench import format_table, machine_info
from mgfusion.utils.device import resolve_device
from mgfusion.utils.io import atomic_write_text

RESULTS = ROOT / "benchmarks" / "results"
SPEED_COLUMNS = ["name", "status", "precision", "crop", "batch", "s_per_iter", "peak_mem_MB", "infer_size",
                 "infer_fp32_images_per_s", "infer_amp_images_per_s", "infer_slide_fp32_images_per_s", "s_per_image"]


def run_checks(ctx: Context, name: str, fn: Callable[[], Iterator[dict[str, Any]]]) -> None:
    """Append ``fn``'s rows to the correctness list; an exception becomes a failed row naming it."""
    start = time.perf_counter()
    try:
        for row in fn():
            ctx.correctness.append(row)
            print(f"  {row['verdict']:4s}  {row['name']}", flush=True)
    except Exception as e:  # noqa: BLE001 (a crashing check is a failed check; the others still run)
        traceback.print_exc()
        ctx.correctness.append(result(name, False, detail=f"crashed: {type(e).__name__}: {e}",
                                      seconds=time.perf_counter() - start))
        print(f"  fail  {name} (crashed: {type(e).__name__})", flush=True)


def run_speed(ctx: Context, name: str, fn: Callable[[], Iterator[dict[str, Any]]]) -> None:
    """Append ``fn``'s rows to the speed list; an exception becomes an error row."""
    try:
        for row in fn():
            ctx.speed.append(row)
            print(f"  {row['status']:7s}  {row['name']}", flush=True)
    except Exception as e:  # noqa: BLE001 (recorded as an error row; the other measurements still run)
        traceback.print_exc()
        ctx.speed.append({"name": name, "status": "error", "detail": f"{type(e).__name__}: {e}"})
        print(f"  error    {name} ({type(e).__name__})", flush=True)


def run_study(ctx: Context, plot_path: Path) -> dict[str, Any]:
    """The precision study, its verdicts appended to the correctness list and its plot written to ``plot_path``."""
    try:
        outcome = study.precision_study(ctx)
    except Exception as e:  # noqa: BLE001 (recorded as a failed check)
        traceback.print_exc()
        ctx.correctness.append(result("precision_study", False, detail=f"crashed: {type(e).__name__}: {e}"))
        return {"status": "error", "detail": f"{type(e).__name__}: {e}"}
    run_checks(ctx, "precision_study", lambda: study.study_checks(outcome))
    study.plot_study(outcome, plot_path)
    outcome["plot"] = plot_path.name  # next to the JSON
    return outcome


def print_report(payload: dict[str, Any]) -> None:
    """The environment line and the correctness, speed and study tables."""
    env = payload["environment"]
    print(f"\n== gpu_check ({payload['mode']}) on {env.get('gpu', env['device'])}: torch {env['torch']}, "
          f"CUDA {env['cuda']}, driver {env.get('driver', '-')}, cuDNN {env.get('cudnn', '-')}, "
          f"NCCL {env.get('nccl', '-')}")
    rows = [{"check": r["name"], "verdict": r["verdict"],
             "measured": f"{r['measured']:.2e}" if isinstance(r["measured"], float) else str(r["measured"] or ""),
             "tolerance": f"{r['tolerance']:.0e}" if isinstance(r["tolerance"], float) else "",
             "s": r["seconds"]} for r in payload["correctness"]]
    print("\nCorrectness\n" + format_table(rows))
    for r in payload["correctness"]:
        if r["verdict"] != "pass":
            print(f"  {r['verdict']}: {r['name']}: {r['detail']}")
    if payload["speed"]:
        columns = [c for c in SPEED_COLUMNS if any(c in r for r in payload["speed"])]
        print("\nSpeed (medians after warm-up)\n"
              + format_table([{c: r.get(c, "") for c in columns} for r in payload["speed"]]))
        for r in payload["speed"]:
            for key in ("detail", "sliding_window", "max_abs_diff_vs_cpu"):
                if r.get(key):
                    print(f"  {r['name']}: {key}: {r[key]}")
    outcome = payload["precision_study"]
    if outcome.get("status") == "ok":
        print(f"\nPixel-decoder precision study: {outcome['iterations']} iterations of {outcome['model']} at "
              f"{outcome['image_size']} px (differences and ratios against the fp32 run)\n"
              + format_table([{k: f"{v:.3g}" if isinstance(v, float) else v for k, v in row.items()}
                              for row in outcome["comparison"]]))
    s = payload["summary"]
    print(f"\n{s['verdict'].upper()}: {s['pass']} passed, {s['fail']} failed, {s['skip']} skipped in {s['seconds']:.0f} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="correctness checks only")
    mode.add_argument("--dry-run", action="store_true", help="everything on the CPU at tiny sizes (tests the script)")
    p.add_argument("--device", default="cuda", help="cuda or cuda:N (the dry run always uses the CPU)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gpu_check[_quick|_dry_run].json)")
    p.add_argument("--master-weights", default=None, help="DINOv3 ViT-B/16 weights for the speed runs")
    p.add_argument("--aux-weights", default=None, help="SAM2 Hiera-B+ weights for the speed runs")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Hydra override of the speed runs' configs/train.yaml composition (repeatable)")
    p.add_argument("--tuning-modes", nargs="+", default=["full", "frozen", "last_n", "lora"],
                   help="master tuning modes timed when the config has backbone.master.tuning")
    p.add_argument("--study-iters", type=int, default=None, help="iterations of the precision study (full run: 300)")
    p.add_argument("--workers", type=int, default=4, help="data-loader workers of the speed runs")
    p.add_argument("--ddp-timeout", type=float, default=300.0, help="seconds allowed for the process-group check")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 in the dry run, else "
                   "torch's default)")
    p.add_argument("--keep-scratch", action="store_true", help="keep the scratch folder (data, checkpoints)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "dry_run" if args.dry_run else "quick" if args.quick else "full"
    if args.dry_run:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device. Run it on a GPU machine, or use --dry-run to test the script on "
              "the CPU.", file=sys.stderr)
        return 2
    else:
        device = resolve_device(args.device)
        torch.cuda.set_device(device)
    # process-wide settings of a run (after the early exit, so that calling main() to refuse changes nothing)
    warnings.filterwarnings("ignore")
    for name in ("mgfusion", "detectron2", "fvcore", "d2"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.threads or args.dry_run:
        torch.set_num_threads(args.threads or 1)  # the dry run's tensors are too small to gain from threads
    out = Path(args.out) if args.out else RESULTS / f"gpu_check{'' if mode == 'full' else '_' + mode}.json"
    scratch = Path(tempfile.mkdtemp(prefix="mgf_gpu_check_"))
    ctx = Context(device=device, sizes=DRY_RUN if args.dry_run else FULL, mode=mode, scratch=scratch, args=args)
    started = time.perf_counter()
    sections: dict[str, float] = {}
    outcome: dict[str, Any] = {"status": "skipped", "detail": "--quick runs the correctness checks only"}
    try:
        t = time.perf_counter()
        print(f"gpu_check ({mode}) on {device}\ncorrectness", flush=True)
        for name, check in correctness.CHECKS.items():
            run_checks(ctx, name, lambda check=check: check(ctx))
        sections["correctness"] = time.perf_counter() - t
        if mode != "quick":
            t = time.perf_counter()
            print("speed", flush=True)
            for name, measure in speed.SECTIONS.items():
                run_speed(ctx, name, lambda measure=measure: measure(ctx))
            sections["speed"] = time.perf_counter() - t
            t = time.perf_counter()
            print("precision study", flush=True)
            outcome = run_study(ctx, out.with_name(out.stem + "_precision_study.png"))
            sections["precision_study"] = time.perf_counter() - t
    finally:
        if not args.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    counts = {v: sum(r["verdict"] == v for r in ctx.correctness) for v in ("pass", "fail", "skip")}
    payload = {
        "benchmark": "gpu_check", "mode": mode, "command": " ".join(["python", "benchmarks/gpu_check.py", *sys.argv[1:]]),
        "machine": {**machine_info(), "load_average": os.getloadavg()}, "environment": environment(device),
        "correctness": ctx.correctness, "speed": ctx.speed, "precision_study": outcome,
        "summary": {"verdict": "fail" if counts["fail"] else "pass", **counts,
                    "seconds": round(time.perf_counter() - started, 1),
                    "section_seconds": {k: round(v, 1) for k, v in sections.items()}},
    }  # fmt: skip
    print_report(payload)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
