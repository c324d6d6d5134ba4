"""Auxiliary-free inference by feature distillation, measured side by side on the synthetic panoptic data.

    python benchmarks/distillation.py [--iters 300] [--image-size 128] [--work /tmp/mgf_distillation]

Trains three demo-size models (tiny Mask2Former, micro encoders, CPU) through the engine with the same data, solver
and seed, then evaluates them on the synthetic validation split:

* (a) master only:  ``backbone=dinov3_micro16`` (the fusion's master alone);
* (b) fused:        ``backbone=fusion_micro_d3s2`` (the paper's replace fusion; the auxiliary runs at inference);
* (c) distilled:    (b) + ``backbone.distillation.enabled=true backbone.fusion.inference=distilled``: trained with the
  feature-distillation loss, evaluated without the auxiliary (``drop_auxiliary()`` for the cost columns).

Two more evaluations of the same checkpoints show what the distillation buys: (b) evaluated with the auxiliary
dropped and no distillation (``inference=master_only``), and (c) evaluated fused. For each row: PQ, mIoU, mask AP,
GFLOPs (multiply-adds, PyTorch's FlopCounterMode) of the whole model and of its backbone on one test image,
parameters used at inference, images/s (batch 1), and the number of auxiliary forward calls during the timing.
Re-running resumes finished trainings. Prints a table, writes JSON (default benchmarks/results/distillation.json).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch
import train_speed  # benchmarks/train_speed.py (inference timing)
from hydra import compose, initialize_config_dir
from torch.utils.flop_counter import FlopCounterMode

from mgfusion.backbones import FusionBackbone
from mgfusion.engine import AtomicCheckpointer, build_model, build_test_loader, run
from mgfusion.utils.bench import format_table, write_results

#: (name, backbone overrides) of the three trained models
TRAINED = {
    "a_master_only": ["backbone=dinov3_micro16"],
    "b_fused": ["backbone=fusion_micro_d3s2"],
    "c_distilled": ["backbone=fusion_micro_d3s2", "backbone.distillation.enabled=true",
                    "backbone.fusion.inference=distilled"],
}
#: (row label, trained model, inference mode of a fusion backbone or None)
ROWS = [
    ("(a) master only", "a_master_only", None),
    ("(b) fused (auxiliary at inference)", "b_fused", "fused"),
    ("(c) distilled, auxiliary dropped", "c_distilled", "distilled"),
    ("(b) fused-trained, auxiliary dropped, no distillation", "b_fused", "master_only"),
    ("(c) distill-trained, evaluated fused", "c_distilled", "fused"),
]


def overrides_of(name: str, args: argparse.Namespace, out: Path) -> list[str]:
    return [*TRAINED[name], "model=mask2former_tiny", "dataset=synthetic_panoptic", "solver=demo_cpu",
            "runtime=smoke", "device=cpu", f"solver.max_iter={args.iters}", f"solver.checkpoint_period={args.iters}",
            f"dataset.register.image_size={args.image_size}", f"dataset.register.root={args.work / 'data'}",
            "runtime.tensorboard=false", f"output_dir={out}"]


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose("train", overrides=overrides)


def headline(results: dict[str, Any]) -> dict[str, float]:
    """PQ, mIoU and mask AP (NaN AP, i.e. nothing predicted, counts as 0)."""
    ap = float(results["segm"]["AP"])
    return {"PQ": float(results["panoptic_seg"]["PQ"]), "mIoU": float(results["sem_seg"]["mIoU"]),
            "AP": 0.0 if math.isnan(ap) else ap}


def train(name: str, args: argparse.Namespace) -> Path:
    """Train (or resume) model ``name``; returns its run folder."""
    out = args.work / name
    final = out / "model_final.pth"
    if not final.is_file():
        print(f"[distillation] training {name} ({args.iters} iterations)", flush=True)
        start = time.perf_counter()
        run(compose_cfg([*overrides_of(name, args, out), f"resume={str(out.is_dir()).lower()}"]))
        print(f"[distillation] {name}: {time.perf_counter() - start:.0f} s", flush=True)
    return out


def evaluate_row(label: str, name: str, mode: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate the checkpoint of ``name`` with the fusion's ``mode``, then measure its inference cost."""
    trained = args.work / name
    tag = f"{name}_{mode or 'single'}"
    extra = [] if mode is None else [f"backbone.fusion.inference={mode}"]
    eval_out = args.work / "eval" / tag
    cfg = compose_cfg([*overrides_of(name, args, eval_out), *extra, "eval_only=true",
                       f"weights={trained / 'model_final.pth'}"])
    results = run(cfg)

    model = build_model(cfg, torch.device("cpu"))
    AtomicCheckpointer(model, str(eval_out)).load(str(trained / "model_final.pth"), checkpointables=[])
    fusion = model.backbone.encoder if isinstance(model.backbone.encoder, FusionBackbone) else None
    aux_calls: list[int] = []
    if fusion is not None and mode != "fused":
        fusion.drop_auxiliary()  # deployment form: the auxiliary's weights leave the model
    if fusion is not None and fusion.auxiliary is not None:
        fusion.auxiliary.register_forward_pre_hook(lambda *_: aux_calls.append(1))
    model.eval().requires_grad_(False)  # FlopCounterMode's module tracker trips over parameters needing grad
    loader = build_test_loader(cfg.dataset, cfg.dataset.test[0], num_workers=0)
    batch = next(iter(loader))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch)
    image = model.preprocess_image(batch).tensor
    with torch.no_grad(), FlopCounterMode(display=False) as backbone_counter:
        model.backbone(image)
    aux_calls.clear()
    speed = train_speed.measure_inference(SimpleNamespace(model=model, cfg=cfg, device=torch.device("cpu")),
                                          images=args.infer_images)
    return {"model": label, "trained": name, "inference": mode or "-", **headline(results),
            "GFLOPs": counter.get_total_flops() / 2 / 1e9, "backbone_GFLOPs": backbone_counter.get_total_flops() / 2 / 1e9,
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "images_per_s": speed["infer_images_per_s"], "aux_forward_calls": len(aux_calls),
            "input": speed["infer_size"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=300, help="training iterations per model")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--infer-images", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("/tmp/mgf_distillation"),
                   help="run folders (trainings resume from here)")
    p.add_argument("--out", default="benchmarks/results/distillation.json")
    args = p.parse_args()
    args.work = args.work.resolve()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    timings = {}
    for name in TRAINED:
        start = time.perf_counter()
        train(name, args)
        timings[name] = time.perf_counter() - start
    rows = [evaluate_row(label, name, mode, args) for label, name, mode in ROWS]
    print(f"\nSynthetic panoptic validation ({args.image_size}px), tiny Mask2Former, {args.iters} iterations each; "
          f"cost on one test image, batch 1, {args.threads} threads")
    print(format_table(rows, ["model", "PQ", "mIoU", "AP", "GFLOPs", "backbone_GFLOPs", "params_M", "images_per_s",
                              "aux_forward_calls"]))
    write_results(args.out, "distillation", rows, iters=args.iters, image_size=args.image_size,
                  train_seconds=timings, command=" ".join(sys.argv))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
