"""Training speed (seconds per optimizer step), peak memory and inference throughput of a composed train config,
optionally once per master tuning mode.

    python benchmarks/train_speed.py [--iters 20] [--warmup 3] [--infer-images 16] [--threads 2] [OVERRIDE ...]
    python benchmarks/train_speed.py --modes full frozen last_n lora full+gc [OVERRIDE ...]

OVERRIDEs are Hydra overrides of configs/train.yaml (``{tmp}`` is replaced by a scratch folder). Without any, the
demo's setup: tiny Mask2Former on the micro fusion backbone, synthetic panoptic 128x128, batch 4, CPU fp32. The
paper's D3S2 setup on a GPU (512x1024 crops, batch 3, AMP):

    python benchmarks/train_speed.py backbone=fusion_d3s2 model=mask2former dataset=synthetic_panoptic \
        dataset.register.image_size=1024 dataset.train_mapper.crop_size=[512,1024] solver=adamw_poly device=cuda \
        --infer-size 1024 2048

``--modes`` runs the config once per master tuning mode (``backbone.master.tuning`` of a fusion backbone,
``backbone.tuning`` of a single encoder; ``+gc`` adds activation checkpointing), each in a fresh process so that its
peak memory is its own, and prints one table with the trainable parameters (whole model and master encoder). Modes
skip the inference timing unless ``--infer-images`` is given. ``--random-init`` adds ``weights=random`` for the
encoders when this checkout requires that opt-in for foundation encoders without weights.

Peak memory is the process's peak RSS on CPU (includes imports and model construction) and
``torch.cuda.max_memory_allocated`` during the timed steps on GPU. On a shared CPU, compare ``cpu_s_per_iter`` (CPU
seconds per step, all threads) rather than the wall time, which grows with other processes' load. Prints a table, writes JSON
(default benchmarks/results/train_speed.json).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch
import torch.nn.functional as F
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mgfusion.backbones.tuning import tuned_encoders
from mgfusion.engine import Trainer, build_test_loader, register_datasets
from mgfusion.utils.bench import format_table, write_results

#: the demo's setup: tiny Mask2Former on the micro fusion backbone, synthetic panoptic 128x128, batch 4, fp32 CPU.
DEFAULT_OVERRIDES = ["backbone=fusion_micro_d3s2", "model=mask2former_tiny", "dataset=synthetic_panoptic",
                     "solver=demo_cpu", "runtime=smoke", "device=cpu", "dataset.register.root={tmp}/data"]

#: master tuning modes of ``--modes``: {name: settings of the tuned encoder node}
MODES = {"full": {"tuning": "full"}, "frozen": {"tuning": "frozen"}, "last_n": {"tuning": "last_n"},
         "lora": {"tuning": "lora"}, "full+gc": {"tuning": "full", "grad_checkpointing": "true"},
         "last_n+gc": {"tuning": "last_n", "grad_checkpointing": "true"},
         "lora+gc": {"tuning": "lora", "grad_checkpointing": "true"}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def measure_training(trainer: Trainer, *, warmup: int, iters: int) -> dict[str, float]:
    """Median seconds per optimizer step (data loading included) and peak memory over ``iters`` timed steps.

    ``cpu_s_per_iter`` is the process's CPU time per step (all threads): on a shared CPU it does not grow with other
    processes' load as the wall time does, so it compares settings measured at different moments.
    """
    device = trainer.device
    times, cpu_times, data_times = [], [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with EventStorage(0) as storage:
        for it in range(warmup + iters):
            storage.iter = trainer.iter = it
            _sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            trainer.run_step()
            _sync(device)
            if it >= warmup:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
                data_times.append(storage.history("data_time").latest())
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mb()
    step = statistics.median(times)
    return {"s_per_iter": step, "min_s_per_iter": min(times), "cpu_s_per_iter": statistics.median(cpu_times),
            "data_s_per_iter": statistics.median(data_times),
            "train_images_per_s": trainer.cfg.solver.ims_per_batch / step, "peak_mem_MB": peak}


def resize_inputs(batch: list[dict], size: tuple[int, int]) -> list[dict]:
    """The test inputs resized (bilinear) to ``size`` = (H, W) pixels, with the output size set to match."""
    out = []
    for d in batch:
        image = F.interpolate(d["image"][None].float(), size=size, mode="bilinear", align_corners=False)
        out.append({**d, "image": image[0].round().clamp(0, 255).to(torch.uint8), "height": size[0], "width": size[1]})
    return out


def measure_inference(trainer: Trainer, *, images: int, size: tuple[int, int] | None = None) -> dict[str, float]:
    """Images per second of ``model(list[dict])`` in eval mode on the first test set (batch 1, cycled to ``images``
    images after 2 warm-up images; loading excluded, no evaluator). ``size`` = (H, W) resizes the inputs first."""
    model, device = trainer.model, trainer.device
    loader = build_test_loader(trainer.cfg.dataset, trainer.cfg.dataset.test[0], num_workers=0)
    batches = [b for b, _ in zip(loader, range(images))]
    if size is not None:
        batches = [resize_inputs(b, size) for b in batches]
    model.eval()
    with torch.no_grad():
        for batch in batches[:2]:
            model(batch)
        _sync(device)
        start = time.perf_counter()
        for batch in itertools.islice(itertools.cycle(batches), images):
            model(batch)
        _sync(device)
        elapsed = time.perf_counter() - start
    model.train()
    shape = tuple(batches[0][0]["image"].shape[1:])
    return {"infer_images_per_s": images / elapsed, "infer_size": f"{shape[0]}x{shape[1]}"}


def compose_config(overrides: list[str], config_dir: str | None = None):
    """configs/train.yaml composed with ``overrides`` (and ``config_dir`` on the search path)."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        search = [f"hydra.searchpath=[file://{os.path.abspath(config_dir)}]"] if config_dir else []
        return compose("train", overrides=[*search, *overrides])


def tuned_node(cfg) -> str:
    """Config path of the encoder the tuning modes apply to: ``backbone.master`` (fusion) or ``backbone``."""
    return "backbone.master" if "master" in cfg.backbone else "backbone"


def random_init_overrides(cfg) -> list[str]:
    """``<encoder node>.weights=random`` for encoders without weights, when this checkout needs that opt-in."""
    try:
        from mgfusion.backbones.registry import RANDOM_INIT
    except ImportError:  # weights: null already means random initialisation here
        return []
    nodes = ["backbone.master", "backbone.auxiliary"] if "master" in cfg.backbone else ["backbone"]
    return [f"{n}.weights={RANDOM_INIT}" for n in nodes if not OmegaConf.select(cfg, f"{n}.weights")]


def run_once(args: argparse.Namespace, overrides: list[str]) -> dict:
    """Build the trainer of ``overrides`` and time it; one result row."""
    with tempfile.TemporaryDirectory(prefix="mgf_train_speed_") as tmp:
        overrides = [o.replace("{tmp}", tmp) for o in overrides]
        overrides += [f"output_dir={tmp}/run", "runtime.tensorboard=false"]
        cfg = compose_config(overrides, args.config_dir)
        if args.random_init:
            extra = random_init_overrides(cfg)
            cfg = compose_config([*overrides, *extra], args.config_dir) if extra else cfg
        register_datasets(cfg.dataset)
        seed_all_rng(0)
        trainer = Trainer(cfg, output_dir=f"{tmp}/run", seed=0)
        trainer.resume_or_load(resume=False)
        tuned = dict(tuned_encoders(trainer.model))
        master = tuned.get("backbone.encoder.master", tuned.get("backbone.encoder"))
        row = {"config": " ".join(o for o in overrides if "{" not in o and tmp not in o),
               "device": str(trainer.device), "precision": str(trainer.precision),
               "ims_per_batch": cfg.solver.ims_per_batch, "grad_accum_steps": cfg.solver.grad_accum_steps,
               "trainable_M": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad) / 1e6,
               "master_trainable_M": (None if master is None else
                                      sum(p.numel() for p in master.parameters() if p.requires_grad) / 1e6),
               **measure_training(trainer, warmup=args.warmup, iters=args.iters)}  # fmt: skip
        if args.infer_images:
            row.update(measure_inference(trainer, images=args.infer_images, size=args.infer_size))
    return row


def run_modes(args: argparse.Namespace, overrides: list[str]) -> list[dict]:
    """One fresh process of this script per mode (its own peak memory); their rows in order."""
    node = tuned_node(compose_config([o for o in overrides if "{tmp}" not in o] + ["output_dir=/unused"],
                                     args.config_dir))
    rows = []
    for mode in args.modes:
        if mode not in MODES:
            raise SystemExit(f"--modes: unknown mode {mode!r}; valid: {', '.join(MODES)}")
        mode_overrides = [f"{node}.{k}={v}" for k, v in MODES[mode].items()]
        with tempfile.TemporaryDirectory(prefix="mgf_train_speed_mode_") as tmp:
            out = os.path.join(tmp, "row.json")
            cmd = [sys.executable, os.path.abspath(__file__), *overrides, *mode_overrides, "--iters", str(args.iters),
                   "--warmup", str(args.warmup), "--threads", str(args.threads), "--out", out,
                   "--infer-images", str(args.infer_images or 0)]
            cmd += ["--random-init"] if args.random_init else []
            cmd += ["--config-dir", args.config_dir] if args.config_dir else []
            cmd += ["--infer-size", *map(str, args.infer_size)] if args.infer_size else []
            print(f"[train_speed] mode {mode}: {' '.join(mode_overrides)}", flush=True)
            start = time.perf_counter()
            done = subprocess.run(cmd, check=False)
            if done.returncode != 0:
                rows.append({"mode": mode, "status": f"failed (exit {done.returncode})"})
                continue
            with open(out, encoding="utf-8") as f:
                row = json.load(f)["rows"][0]
        rows.append({"mode": mode, "status": "ok", **row, "wall_s": time.perf_counter() - start})
        print(f"[train_speed] mode {mode}: {row['s_per_iter']:.2f} s/iter, {row['peak_mem_MB']:.0f} MB", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides (default: the tiny CPU smoke setup)")
    p.add_argument("--config-dir", default=None, help="extra Hydra config folder searched after configs/")
    p.add_argument("--iters", type=int, default=20, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--infer-images", type=int, default=None,
                   help="images timed for inference (default 16; 0 skips; --modes default 0)")
    p.add_argument("--infer-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="resize the test images to H W pixels for the inference timing (paper: 1024 2048)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--modes", nargs="+", default=None, metavar="MODE",
                   help=f"time each master tuning mode in its own process: {', '.join(MODES)}")
    p.add_argument("--random-init", action="store_true",
                   help="opt in to random initialisation of encoders without weights (when the checkout requires it)")
    p.add_argument("--out", default="benchmarks/results/train_speed.json")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    overrides = list(args.overrides or DEFAULT_OVERRIDES)

    if args.modes:
        rows = run_modes(args, overrides)
        columns = ["mode", "status", "trainable_M", "master_trainable_M", "s_per_iter", "min_s_per_iter",
                   "cpu_s_per_iter", "peak_mem_MB", "precision", "ims_per_batch"]
        title = f"Training step per master tuning mode (median of {args.iters} after {args.warmup} warm-up)"
    else:
        args.infer_images = 16 if args.infer_images is None else args.infer_images
        rows = [run_once(args, overrides)]
        columns = [k for k in rows[0] if k != "config"]
        title = (f"Training step (median of {args.iters} after {args.warmup} warm-up), inference batch 1"
                 if args.infer_images else f"Training step (median of {args.iters} after {args.warmup} warm-up)")
    print(f"\n{title}, {args.threads} threads")
    print(format_table(rows, columns))
    print(f"config: {rows[0].get('config', ' '.join(overrides))}")
    write_results(args.out, "train_speed", rows, iters=args.iters, warmup=args.warmup, modes=args.modes)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
