#!/usr/bin/env python
"""The end-to-end demo (`make demo`): synthetic data -> profile two small encoders -> train the recommended fused
Mask2Former -> evaluate (AP, mIoU, PQ) -> tables, plots and prediction overlays in one folder.

    python tools/demo.py [--out outputs/demo] [--max-iter 400] [--image-size 128]

Every step runs the project's own command-line tools as a user would, so the demo exercises them end to end:
``datasets/prepare_synthetic.py``, ``tools/profile_encoders.py``, ``tools/train_net.py`` and
``tools/visualize_predictions.py``. Rerunning resumes (finished profiling images and training checkpoints are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ENCODERS = ("dinov3_micro16", "sam2_hiera_micro")
DATASET = "synthetic_panoptic"  # panoptic training gives all three metrics: PQ, mask AP (things), mIoU


def step(title: str) -> float:
    print(f"\n\033[1m[demo] {title}\033[0m", flush=True)
    return time.perf_counter()


def run(cmd: list[str], env: dict[str, str]) -> None:
    print("[demo] $ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, env=env, check=True)


def majority_class_baseline(dataset_cfg: Any, out_dir: Path) -> dict[str, Any]:
    """Evaluate the "chance" predictor: every pixel = the most frequent training class, no instances."""
    import numpy as np
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import Instances
    from hydra.utils import instantiate
    from PIL import Image

    from mgfusion.engine import register_datasets

    register_datasets(dataset_cfg)
    train, test = dataset_cfg.train[0], dataset_cfg.test[0]
    meta = MetadataCatalog.get(test)
    counts = np.zeros(dataset_cfg.num_classes, dtype=np.int64)
    for d in DatasetCatalog.get(train):
        sem = np.asarray(Image.open(d["sem_seg_file_name"]), dtype=np.int64)
        sem = sem[sem != dataset_cfg.ignore_label]
        counts += np.bincount(sem, minlength=dataset_cfg.num_classes)[: dataset_cfg.num_classes]
    majority = int(counts.argmax())
    evaluator = instantiate(dataset_cfg.evaluator, _convert_="all")(dataset_name=test,
                                                                      output_dir=str(out_dir / "chance_eval"))
    evaluator.reset()
    stuff_ids = {v: k for k, v in meta.stuff_dataset_id_to_contiguous_id.items()}
    for d in DatasetCatalog.get(test):
        h, w = d["height"], d["width"]
        sem = torch.zeros(dataset_cfg.num_classes, h, w)
        sem[majority] = 1.0
        pan = torch.ones(h, w, dtype=torch.int32)
        info = [{"id": 1, "category_id": majority, "isthing": majority in meta.thing_dataset_id_to_contiguous_id.values()}]
        inst = Instances((h, w), pred_masks=torch.zeros(0, h, w, dtype=torch.bool), scores=torch.zeros(0),
                         pred_classes=torch.zeros(0, dtype=torch.long))
        evaluator.process([d], [{"sem_seg": sem, "panoptic_seg": (pan, info), "instances": inst}])
    results = evaluator.evaluate()
    return {"majority_class": meta.stuff_classes[majority] if majority in stuff_ids else majority,
            "results": results}


def headline(results: dict[str, Any]) -> dict[str, float]:
    """PQ, mask AP and mIoU from detectron2's result dict."""
    out = {}
    if "panoptic_seg" in results:
        out["PQ"] = results["panoptic_seg"]["PQ"]
    if "segm" in results:  # COCO AP is NaN when nothing is predicted at all: that is an AP of 0
        ap = float(results["segm"]["AP"])
        out["AP"] = 0.0 if ap != ap else ap
    if "sem_seg" in results:
        out["mIoU"] = results["sem_seg"]["mIoU"]
    return {k: float(v) for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "demo")
    p.add_argument("--max-iter", type=int, default=None, help="training iterations (default: solver/demo_cpu)")
    p.add_argument("--image-size", type=int, default=128)
    args = p.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DETECTRON2_DATASETS=str(out / "datasets"), PYTHONUNBUFFERED="1")
    os.environ["DETECTRON2_DATASETS"] = env["DETECTRON2_DATASETS"]
    py = sys.executable
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    t = step("1/5 synthetic dataset (textured shapes; COCO instance + semantic + panoptic annotations)")
    run([py, "datasets/prepare_synthetic.py", "--root", env["DETECTRON2_DATASETS"],
         "--image-size", str(args.image_size)], env)
    timings["data_s"] = time.perf_counter() - t

    # profiled at 256x256 (upsampled) so that the stride-32 level is 8x8 rather than a degenerate 4x4 map
    t = step(f"2/5 profile {' and '.join(ENCODERS)} on the validation images (SC/EF per stride, recommendation)")
    profile_dir = out / "profile"
    run([py, "tools/profile_encoders.py", "dataset=mgf_synthetic_val_panoptic", f"encoders=[{','.join(ENCODERS)}]",
         f"output_dir={profile_dir}", "max_images=16", "resolution=[256,256]", "batch_size=4", "num_workers=0",
         "device=cpu", "variant=reference", "cost_repeats=2"], env)
    timings["profile_s"] = time.perf_counter() - t
    summary = json.loads((profile_dir / "summary.json").read_text())
    rec = summary["recommendation"]
    config_dir = out / "configs" / "backbone"
    config_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(profile_dir / "recommended_fusion.yaml", config_dir / "recommended.yaml")

    t = step(f"3/5 train Mask2Former (tiny) on the recommended fusion: master {rec['master']}, auxiliary "
             f"{rec['auxiliary']} injected at stride {rec['stride']}")
    train_dir = out / "train"
    overrides = [f"hydra.searchpath=[file://{out / 'configs'}]", "backbone=recommended", "model=mask2former_tiny",
                 f"dataset={DATASET}", f"dataset.register.image_size={args.image_size}", "solver=demo_cpu",
                 "runtime=smoke", f"output_dir={train_dir}", "device=cpu"]
    if args.max_iter:
        overrides.append(f"solver.max_iter={args.max_iter}")
    resume = (train_dir / "last_checkpoint").exists()
    run([py, "tools/train_net.py", *overrides, f"resume={str(resume).lower()}"], env)
    timings["train_s"] = time.perf_counter() - t
    final = json.loads((train_dir / "final_metrics.json").read_text())["results"]

    t = step("4/5 prediction overlays and training curves")
    run([py, "tools/visualize_predictions.py", str(train_dir), "--num", "8", "--out", str(out / "predictions.png")],
        env)
    from mgfusion.visualization import plot_training_curves

    plot_training_curves(train_dir / "metrics.json", out / "training_curves.png")
    timings["visualize_s"] = time.perf_counter() - t

    t = step("5/5 chance baseline (majority class everywhere) and summary")
    from omegaconf import OmegaConf

    dataset_cfg = OmegaConf.load(train_dir / "config.yaml").dataset
    chance = majority_class_baseline(dataset_cfg, out)
    timings["baseline_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_start
    ours, base = headline(final), headline(chance["results"])
    write_summary(out, summary, rec, ours, base, chance["majority_class"], timings)
    print(f"\n[demo] model: {fmt(ours)}   chance: {fmt(base)}   ({timings['total_s'] / 60:.1f} min)")
    print(f"[demo] everything is in {out}  (start with {out / 'summary.md'})")


def fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in metrics.items())


def write_summary(out: Path, profile: dict[str, Any], rec: dict[str, Any], ours: dict[str, float],
                  base: dict[str, float], majority: Any, timings: dict[str, float]) -> None:
    from mgfusion.utils.io import atomic_write_text

    table = (out / "profile" / "table_sc_ef.md").read_text()
    rows = "\n".join(f"| {k} | {ours[k]:.1f} | {base.get(k, float('nan')):.1f} |" for k in ours)
    text = f"""# mgfusion demo

Synthetic shapes (4 thing + 2 stuff classes), two scaled-down random-init encoders, CPU.

## 1. Label-free profile (variant `{profile['variant']}`, {profile['num_images']} validation images)

{table}
Plots: `profile/plots/sc_ef_vs_stride.png`, `profile/plots/pca_maps.png`; costs: `profile/cost.md`;
SC vs SC_gt: `profile/supervised_rq4.md`.

## 2. Recommendation

master **{rec['master']}** (mean SC {rec['master_sc']:.3f}), auxiliary **{rec['auxiliary']}**, injected at stride
**{rec['stride']}** (argmax of its EF: {', '.join(f"OS{s} {v:.2f}" for s, v in rec['auxiliary_ef'].items())}).
Config: `configs/backbone/recommended.yaml`.

## 3. Trained fused Mask2Former on the validation split

| metric | model | chance (majority class `{majority}` everywhere) |
|---|---|---|
{rows}

Prediction overlays: `predictions.png`; training curves: `training_curves.png`; run folder: `train/`.

Time: {', '.join(f"{k[:-2]} {v:.0f} s" for k, v in timings.items())}.
"""
    atomic_write_text(out / "summary.md", text)
    atomic_write_text(out / "demo_results.json", json.dumps(
        {"model": ours, "chance": base, "recommendation": rec, "timings_s": timings}, indent=2) + "\n")


if __name__ == "__main__":
    main()
