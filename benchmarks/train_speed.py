"""Training speed (seconds per optimizer step), peak memory and inference throughput of a composed train config.

    python benchmarks/train_speed.py [--iters 20] [--warmup 3] [--infer-images 16] [--threads 2] [OVERRIDE ...]

OVERRIDEs are Hydra overrides of configs/train.yaml (``{tmp}`` is replaced by a scratch folder). Without any, the
demo's setup: tiny Mask2Former on the micro fusion backbone, synthetic panoptic 128x128, batch 4, CPU fp32. The
paper's D3S2 setup on a GPU (512x1024 crops, batch 3, AMP):

    python benchmarks/train_speed.py backbone=fusion_d3s2 model=mask2former dataset=synthetic_panoptic \
        dataset.register.image_size=1024 dataset.train_mapper.crop_size=[512,1024] solver=adamw_poly device=cuda \
        --infer-size 1024 2048

Peak memory is the process's peak RSS on CPU (includes imports and model construction) and
``torch.cuda.max_memory_allocated`` during the timed steps on GPU. Prints a table, writes JSON
(default benchmarks/results/train_speed.json).
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from detectron2.utils.env import seed_all_rng  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from mgfusion.engine import Trainer, build_test_loader, register_datasets  # noqa: E402
from mgfusion.utils.bench import format_table, write_results  # noqa: E402

#: the demo's setup: tiny Mask2Former on the micro fusion backbone, synthetic panoptic 128x128, batch 4, fp32 CPU.
DEFAULT_OVERRIDES = ["backbone=fusion_micro_d3s2", "model=mask2former_tiny", "dataset=synthetic_panoptic",
                     "solver=demo_cpu", "runtime=smoke", "device=cpu", "dataset.register.root={tmp}/data"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def measure_training(trainer: Trainer, *, warmup: int, iters: int) -> dict[str, float]:
    """Median seconds per optimizer step (data loading included) and peak memory over ``iters`` timed steps."""
    device = trainer.device
    times, data_times = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with EventStorage(0) as storage:
        for it in range(warmup + iters):
            storage.iter = trainer.iter = it
            _sync(device)
            start = time.perf_counter()
            trainer.run_step()
            _sync(device)
            if it >= warmup:
                times.append(time.perf_counter() - start)
                data_times.append(storage.history("data_time").latest())
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mb()
    step = statistics.median(times)
    return {"s_per_iter": step, "min_s_per_iter": min(times), "data_s_per_iter": statistics.median(data_times),
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides (default: the tiny CPU smoke setup)")
    p.add_argument("--config-dir", default=None, help="extra Hydra config folder searched after configs/")
    p.add_argument("--iters", type=int, default=20, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--infer-images", type=int, default=16)
    p.add_argument("--infer-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="resize the test images to H W pixels for the inference timing (paper: 1024 2048)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/train_speed.json")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="mgf_train_speed_") as tmp:
        overrides = [o.replace("{tmp}", tmp) for o in (args.overrides or DEFAULT_OVERRIDES)]
        overrides += [f"output_dir={tmp}/run", "runtime.tensorboard=false"]
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
            search = [f"hydra.searchpath=[file://{os.path.abspath(args.config_dir)}]"] if args.config_dir else []
            cfg = compose("train", overrides=[*search, *overrides])
        register_datasets(cfg.dataset)
        seed_all_rng(0)
        trainer = Trainer(cfg, output_dir=f"{tmp}/run", seed=0)
        trainer.resume_or_load(resume=False)
        row = {"config": " ".join(o for o in overrides if "{" not in o and tmp not in o),
               "device": str(trainer.device), "precision": str(trainer.precision),
               "ims_per_batch": cfg.solver.ims_per_batch, "grad_accum_steps": cfg.solver.grad_accum_steps,
               **measure_training(trainer, warmup=args.warmup, iters=args.iters),
               **measure_inference(trainer, images=args.infer_images, size=args.infer_size)}  # fmt: skip

    print(f"\nTraining step (median of {args.iters} after {args.warmup} warm-up), inference batch 1, "
          f"{args.threads} threads")
    print(format_table([{k: v for k, v in row.items() if k != "config"}]))
    print(f"config: {row['config']}")
    write_results(args.out, "train_speed", [row], iters=args.iters, warmup=args.warmup)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
