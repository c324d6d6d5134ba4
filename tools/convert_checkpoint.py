#!/usr/bin/env python
"""Convert an official Mask2Former checkpoint's head to mgfusion's parameter names.

    python tools/convert_checkpoint.py model_final_xxx.pkl m2f_head.pth
    python tools/convert_checkpoint.py model_final_xxx.pkl m2f_head.pth --official-config maskformer2_swin_base.yaml \\
        dataset=cityscapes_semantic model.num_queries=100
    python tools/convert_checkpoint.py model_final_xxx.pkl m2f_head.pth --model outputs/my_run

Reads the detectron2 ``.pkl`` (numpy arrays under "model") or ``.pth`` file, maps ``sem_seg_head.pixel_decoder.*`` /
``sem_seg_head.predictor.*`` onto ``pixel_decoder.*`` / ``transformer_decoder.*`` (fusing the deformable attention's
offset and attention-weight projections, splitting packed q/k/v projections), then builds the mgfusion model the
checkpoint is meant for (on the meta device: no memory, no weights) and requires every head parameter to be filled
with the right shape. The model comes from ``--model`` (a run folder or config YAML) or from configs/train.yaml with
the Hydra overrides given after OUT (the same overrides you will train with).

The official backbone (Swin/ResNet) cannot be mapped onto mgfusion's encoders (other parameter names, per-stage
output norms): it is dropped (``--head-only``, the default) unless ``--keep-backbone``, which copies ``backbone.*``
unchanged for a model whose ``backbone`` is the same detectron2 class. With ``--official-config`` the official
YAML's head settings (queries, decoder layers, widths, classes, thresholds, loss weights) are compared with the
mgfusion config: architecture mismatches stop the conversion, inference/training ones are listed.

Use the result with ``tools/train_net.py weights=OUT.pth weights_strict=false``: a head-only checkpoint has no
backbone keys, so the strict default refuses it; with the opt-out the head is loaded, the backbone keeps the weights
its config loads, and the skipped keys are logged and recorded in the run's metrics JSON.
Exit status 2 for unmapped keys, shape or architecture mismatches, 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mgfusion, also when not installed


def fail(message: str) -> NoReturn:
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def build_meta_model(source: str | None, overrides: list[str]):
    """The mgfusion model of the config, with meta tensors (shapes only)."""
    import torch

    from mgfusion.engine import build_model, register_datasets
    from mgfusion.export import load_config

    cfg = load_config(source, overrides)
    register_datasets(cfg.dataset)
    with torch.device("meta"):
        return cfg, build_model(cfg, torch.device("meta"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="official Mask2Former checkpoint (.pkl or .pth)")
    parser.add_argument("output", help="converted checkpoint to write (.pth)")
    parser.add_argument("overrides", nargs="*", help="config overrides (Hydra on configs/train.yaml, or dotted keys "
                                                     "on --model's saved config)")
    parser.add_argument("--model", default=None, help="run folder or config YAML of the target mgfusion model "
                                                      "(default: configs/train.yaml + overrides)")
    parser.add_argument("--official-config", default=None, help="the checkpoint's official Mask2Former YAML config")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--head-only", dest="keep_backbone", action="store_false", default=False,
                       help="drop the official backbone's tensors (default)")
    group.add_argument("--keep-backbone", dest="keep_backbone", action="store_true",
                       help="copy backbone.* unchanged (only for the same detectron2 backbone class)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)

    import torch
    from omegaconf import OmegaConf

    from mgfusion.compat import (
        UnmappedKeysError,
        check_against_model,
        compare_head_settings,
        convert_mask2former_state_dict,
        infer_head_settings,
        mgfusion_head_settings,
        override_for,
        read_official_checkpoint,
        read_official_config,
    )
    from mgfusion.engine import to_weights_only
    from mgfusion.utils.io import atomic_open

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        fail(f"{output} exists; pass --overwrite to replace it")
    try:
        official = read_official_checkpoint(args.checkpoint)
        converted, report = convert_mask2former_state_dict(official, keep_backbone=args.keep_backbone)
    except (FileNotFoundError, TypeError, ValueError) as e:
        fail(str(e))
    print(f"[convert] {args.checkpoint}: {len(official)} tensors\n" + report.summary())
    if report.backbone and not args.keep_backbone:
        print("[convert] note: a Swin/ResNet backbone cannot be mapped onto mgfusion's encoders; the model keeps the "
              "backbone weights its own config loads")

    try:
        cfg, model = build_meta_model(args.model, args.overrides)
    except (FileNotFoundError, KeyError, ValueError) as e:
        fail(f"cannot build the target mgfusion model: {e}")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    ours = mgfusion_head_settings(model_cfg)
    inferred = infer_head_settings(official)
    differing = {k: (v, ours[k]) for k, v in inferred.items() if k in ours and ours[k] != v}
    if differing:
        fail("the checkpoint's head differs from the mgfusion config: " + "; ".join(
            f"{k}: checkpoint {a} vs config {b} ({override_for(k, a)})" for k, (a, b) in differing.items()))
    if args.official_config:
        try:
            mismatches = compare_head_settings(read_official_config(args.official_config), model_cfg)
        except (FileNotFoundError, TypeError, ValueError) as e:
            fail(str(e))
        for m in mismatches:
            print(f"[config] {m}")
        blocking = [m for m in mismatches if m.kind == "architecture"]
        if blocking:
            fail(f"{len(blocking)} architecture settings of {args.official_config} differ from the mgfusion config "
                 f"({', '.join(m.setting for m in blocking)}); set them with overrides (see the [config] lines)")
        if not mismatches:
            print(f"[config] {args.official_config}: every compared setting matches")
    try:
        check_against_model(converted, model, head_only=not args.keep_backbone)
    except UnmappedKeysError as e:
        fail(str(e))
    data = to_weights_only({
        "model": converted,
        "mgfusion_conversion": {"source": str(Path(args.checkpoint).resolve()), "summary": report.summary(),
                                "backbone": "kept" if args.keep_backbone else "dropped",
                                "head_settings": inferred},
    })
    with atomic_open(output, "wb") as f:
        torch.save(data, f)
    print(f"[convert] wrote {output}: {len(converted)} tensors ({'with' if args.keep_backbone else 'head only, no'} "
          "backbone); load with tools/train_net.py weights=" + str(output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
