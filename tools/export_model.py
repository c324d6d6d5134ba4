#!/usr/bin/env python
"""Export a trained model to ONNX and check it against PyTorch with onnxruntime.

    python tools/export_model.py RUN_DIR output=model.onnx
    python tools/export_model.py RUN_DIR weights=RUN_DIR/model_0004999.pth output=model.onnx check_sizes=[[512,1024]]
    python tools/export_model.py path/to/config.yaml weights=model.pth output=model.onnx image=street.png

RUN_DIR is a tools/train_net.py output folder (its config.yaml; weights default to its model_final.pth); a config
YAML file needs ``weights=``. Options (key=value):

  output=PATH          the .onnx file to write (required; an existing file is kept unless overwrite=true)
  weights=PATH         checkpoint (default: RUN_DIR/model_final.pth); ``weights=none`` keeps random weights
                       (micro test models only)
  opset=18             ONNX opset (>= 16: the deformable attention uses GridSample)
  check_sizes=[[64,96],[96,128]]   (H, W) sizes of random parity images, multiples of the size divisibility (32)
  image=PATH           also check on this image (padded at the bottom/right to the size divisibility)
  tolerance=1e-4       fail when max |onnx - torch| > tolerance x max(1, max |torch output|) for any output
  seed=0               random parity images
  overwrite=false
  set=[key=value,...]  overrides of the saved config (e.g. set=[model.test_topk_per_image=50])

The ONNX graph takes images float32 (B, 3, H, W) RGB 0-255 with dynamic B, H, W (H and W multiples of 32) and
returns sem_seg (B, K, H, W), pred_logits (B, Q, K+1) and pred_masks (B, Q, H/4, W/4); see
mgfusion/export/onnx_export.py for the post-processing of instance and panoptic outputs. Exit status 1 when the
parity check fails (the file is then removed), 2 for bad arguments.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mgfusion, also when not installed

from omegaconf import OmegaConf

OPTIONS = {
    "output": None,
    "weights": None,
    "opset": 18,
    "check_sizes": [[64, 96], [96, 128]],
    "image": None,
    "tolerance": 1e-4,
    "seed": 0,
    "overwrite": False,
    "set": [],
}


def fail(message: str) -> NoReturn:
    """Exit with status 2 (bad arguments or inputs) after printing ``message``."""
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv: list[str]) -> tuple[str, dict]:
    """``SOURCE key=value ...`` -> (source, options); unknown keys are an error naming the valid ones."""
    if not argv or "=" in argv[0] or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    source, pairs = argv[0], argv[1:]
    bad = [p for p in pairs if "=" not in p]
    if bad:
        fail(f"options must be key=value, got {bad}")
    given = OmegaConf.from_dotlist(pairs)
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        fail(f"unknown options {unknown}; valid: {sorted(OPTIONS)}")
    options = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(OPTIONS), given), resolve=True)
    if not options["output"]:
        fail("output=PATH.onnx is required")
    if int(options["opset"]) < 16:
        fail(f"opset={options['opset']} has no GridSample (the deformable attention); use opset >= 16")
    return source, options


def main(argv: list[str] | None = None) -> int:
    source, opt = parse_args(sys.argv[1:] if argv is None else argv)
    import torch

    from mgfusion.export import (
        build_trained_model,
        check_parity,
        default_weights,
        describe_metadata,
        export_onnx,
        input_size_multiple,
        load_config,
        parity_images,
    )

    output = Path(opt["output"])
    if output.exists() and not opt["overwrite"]:
        fail(f"{output} exists; pass overwrite=true to replace it")
    weights = opt["weights"]
    if weights is None:
        weights = default_weights(source)
        if weights is None:
            fail(f"{source} has no model_final.pth; pass weights=PATH (or weights=none)")
    elif str(weights).lower() == "none":
        weights = None
        print("[export] weights=none: exporting randomly initialized weights (a test model, not a trained one)")
    torch.manual_seed(int(opt["seed"]))
    from mgfusion.engine import CheckpointError

    try:
        cfg = load_config(source, [str(s) for s in opt["set"]])
        model = build_trained_model(cfg, weights, torch.device("cpu"))
    except (FileNotFoundError, KeyError, ValueError, CheckpointError) as e:
        fail(f"{e}")
    multiple = input_size_multiple(model)
    try:
        checks = parity_images(opt["check_sizes"], multiple, image=opt["image"], seed=int(opt["seed"]))
    except (FileNotFoundError, ValueError) as e:
        fail(f"{e}")
    from detectron2.data import MetadataCatalog

    names = list(cfg.dataset.get("test") or []) or list(cfg.dataset.get("train") or [])
    metadata = describe_metadata(OmegaConf.to_container(cfg.model, resolve=True),
                                 MetadataCatalog.get(names[0]) if names else None)
    metadata["mgfusion.weights"] = str(Path(weights).resolve()) if weights else "random initialization"
    first = checks[0][0].shape[-2:]
    export_onnx(model, output, opset=int(opt["opset"]), example_size=(int(first[0]), int(first[1])), metadata=metadata)
    failed = []
    for images in checks:
        result = check_parity(model, output, images, tolerance=float(opt["tolerance"]))
        print(f"[parity] {result.describe()} -> {'ok' if result.ok else 'FAILED'}")
        if not result.ok:
            failed.append(result)
    if failed:
        output.unlink()
        print(f"[export] parity check failed; removed {output}. A difference in a few pixels can come from a masked-"
              "attention decision at a mask logit of ~0 (try another seed= or image=).", file=sys.stderr)
        return 1
    print(f"[export] done: {output} (opset {opt['opset']}, inputs (B, 3, H, W) with H, W multiples of {multiple})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
