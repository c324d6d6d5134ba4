#!/usr/bin/env python
"""Draw a trained model's predictions next to the ground truth for a few test images of its dataset.

    python tools/visualize_predictions.py outputs/demo/train [--weights PATH] [--num 8] [--out PATH] \
        [--task panoptic|instance|semantic]

Reads ``<run>/config.yaml`` (written by tools/train_net.py), builds the model, loads ``--weights`` (default:
``<run>/model_final.pth``) and writes a PNG grid (default ``<run>/predictions.png``): per image, the ground truth and
the prediction overlay (detectron2's Visualizer).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.utils.visualizer import Visualizer  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from mgfusion.engine import AtomicCheckpointer, build_model, build_test_loader, register_datasets  # noqa: E402
from mgfusion.engine.config import resolve_device  # noqa: E402
from mgfusion.visualization import draw_prediction, image_to_rgb_array, save_overlay_grid  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a tools/train_net.py output folder (has config.yaml)")
    p.add_argument("--weights", type=Path, default=None, help="checkpoint (default: <run>/model_final.pth)")
    p.add_argument("--num", type=int, default=8, help="number of test images")
    p.add_argument("--task", default=None, choices=["panoptic", "instance", "semantic"],
                   help="what to draw (default: the richest output the model produces)")
    p.add_argument("--out", type=Path, default=None, help="output PNG (default: <run>/predictions.png)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    cfg_path = args.run_dir / "config.yaml"
    if not cfg_path.is_file():
        p.error(f"{cfg_path} not found: give a tools/train_net.py output folder")
    cfg = OmegaConf.load(cfg_path)
    weights = args.weights or args.run_dir / "model_final.pth"
    if not weights.is_file():
        p.error(f"checkpoint {weights} not found (pass --weights)")
    device = resolve_device(args.device)
    register_datasets(cfg.dataset)
    model = build_model(cfg, device).eval()
    AtomicCheckpointer(model).load(str(weights))
    name = cfg.dataset.test[0]
    metadata = MetadataCatalog.get(name)
    dicts = {d["file_name"]: d for d in DatasetCatalog.get(name)}
    loader = build_test_loader(cfg.dataset, name, num_workers=0)
    panels = []
    with torch.inference_mode():
        for batch in itertools.islice(loader, args.num):
            out = model(batch)[0]
            inp = batch[0]
            h, w = int(inp["height"]), int(inp["width"])
            img = image_to_rgb_array(inp["image"])
            if img.shape[:2] != (h, w):  # draw at the output (original) resolution
                img = image_to_rgb_array(torch.nn.functional.interpolate(
                    inp["image"][None].float(), size=(h, w), mode="bilinear", align_corners=False)[0]
                    .round().clamp(0, 255).byte())
            gt = Visualizer(img, metadata).draw_dataset_dict(dicts[inp["file_name"]]).get_image()
            label = Path(inp["file_name"]).name
            panels += [(f"{label}: ground truth", gt),
                       (f"{label}: prediction", draw_prediction(img, out, metadata, task=args.task))]
    out_path = args.out or args.run_dir / "predictions.png"
    save_overlay_grid(panels, out_path, columns=4)
    print(f"[visualize] {len(panels) // 2} images -> {out_path}")
    return out_path


if __name__ == "__main__":
    main()
