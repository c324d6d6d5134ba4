"""Seconds per image and peak memory of whole-image vs sliding-window inference at high resolution.

    python benchmarks/inference_speed.py [--models micro d3s2] [--modes whole slide] [--size 1024 2048]
        [--window 512 1024] [--stride 341 682] [--images 2] [--warmup 1] [--threads 2] [--device cpu]

Models (randomly initialised; speed and memory do not depend on the weights), on Cityscapes semantic segmentation
(19 classes, 100 queries; only the dataset's metadata is needed, not its images):

* ``micro``: ``backbone=fusion_micro_d3s2 model=mask2former_tiny`` (the CPU smoke/demo model);
* ``d3s2``:  ``backbone=fusion_d3s2 model=mask2former`` (the paper's DINOv3-B + SAM2 Hiera-B+ fusion, 175.8 M
  parameters).

``whole`` runs the full image in one pass; ``slide`` runs ``test_time=slide`` windows (default: the Cityscapes
training crop 512x1024, stride 2/3 of it) and averages their semantic scores (mgfusion.inference.test_time), the
code path evaluation and tools/predict.py use. Each (model, mode) runs in its own process so that peak memory is
its own: the process's peak RSS on CPU (includes imports and model construction; the RSS after construction is
reported too) or ``torch.cuda.max_memory_allocated`` during inference on GPU. Prints a table, writes JSON (default
benchmarks/results/inference_speed.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {
    "micro": ["backbone=fusion_micro_d3s2", "model=mask2former_tiny"],
    "d3s2": ["backbone=fusion_d3s2", "backbone.master.weights=random", "backbone.auxiliary.weights=random",
             "model=mask2former"],
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(args: argparse.Namespace) -> dict:
    """Build one model, time ``args.images`` inferences under one test-time mode; returns the row."""
    import torch
    from hydra import compose, initialize_config_dir

    from mgfusion.engine import build_model, describe_parameters, register_datasets
    from mgfusion.inference import TestTimeConfig, apply_test_time, crop_size_of
    from mgfusion.utils.device import resolve_device

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    overrides = [*MODELS[args.model], "dataset=cityscapes_semantic", f"device={args.device}", "output_dir=unused"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("train", overrides=overrides)
    register_datasets(cfg.dataset)
    device = resolve_device(args.device)
    model = build_model(cfg, device).eval()
    params = describe_parameters(model)
    rss_built = _rss_mb()
    test_time = {"mode": args.mode, "window": args.window, "stride": args.stride}
    config = TestTimeConfig.from_any(test_time).with_defaults(crop_size_of(cfg.dataset))
    height, width = args.size
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    inputs = [{"image": image, "height": height, "width": width}]

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = apply_test_time(model, inputs, config)[0]["sem_seg"]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        assert out.shape[-2:] == (height, width)
        return time.perf_counter() - start

    for _ in range(args.warmup):
        once()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = [once() for _ in range(args.images)]
    row = {"model": args.model, "mode": args.mode, "test_time": config.describe(), "size": f"{height}x{width}",
           "s_per_image": statistics.median(times), "min_s": min(times), "images": args.images,
           "warmup": args.warmup, "device": str(device), "parameters": params}
    if device.type == "cuda":
        row["peak_cuda_allocated_MB"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        row["rss_after_build_MB"] = rss_built
        row["peak_rss_MB"] = _rss_mb()
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["micro", "d3s2"], choices=sorted(MODELS))
    p.add_argument("--modes", nargs="+", default=["whole", "slide"], choices=["whole", "slide"])
    p.add_argument("--size", type=int, nargs=2, default=[1024, 2048], metavar=("H", "W"))
    p.add_argument("--window", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="sliding window (default: the dataset's training crop, 512 1024)")
    p.add_argument("--stride", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="window step (default: 2/3 of the window)")
    p.add_argument("--images", type=int, default=2, help="timed images per (model, mode)")
    p.add_argument("--warmup", type=int, default=1, help="untimed images first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="benchmarks/results/inference_speed.json")
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    if args.worker:
        args.model, args.mode = args.worker
        print(json.dumps(worker(args)), flush=True)
        return

    from mgfusion.utils.bench import format_table, write_results

    rows = []
    for model in args.models:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--worker", model, mode, "--size", *map(str, args.size),
                   "--images", str(args.images), "--warmup", str(args.warmup), "--threads", str(args.threads),
                   "--device", args.device]
            cmd += ["--window", *map(str, args.window)] if args.window else []
            cmd += ["--stride", *map(str, args.stride)] if args.stride else []
            done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                  env=dict(os.environ, PYTHONWARNINGS="ignore"))
            if done.returncode != 0:
                raise SystemExit(f"{model}/{mode} failed:\n{done.stderr[-4000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{model:>6} {mode:>5}: {rows[-1]['s_per_image']:.2f} s/image", flush=True)
    memory = "peak_cuda_allocated_MB" if args.device.startswith("cuda") else "peak_rss_MB"
    columns = ["model", "mode", "test_time", "size", "s_per_image", "min_s", "images", memory]
    if memory == "peak_rss_MB":
        columns.insert(-1, "rss_after_build_MB")
    print(f"\nInference at {args.size[0]}x{args.size[1]}, batch 1, {args.threads} threads, {args.device}; median of "
          f"{args.images} image(s) after {args.warmup} warm-up")
    print(format_table(rows, columns))
    write_results(args.out, "inference_speed", rows, load_average=os.getloadavg(), images=args.images,
                  warmup=args.warmup, threads=args.threads)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
