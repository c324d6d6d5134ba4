"""Hand-written run and profile folders in the schema tools/train_net.py and tools/profile_encoders.py write
(``config.yaml`` + ``final_metrics.json``; ``summary.json`` + ``fingerprint.json``), for known-answer tests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from mgfusion.metrics import resolve_config
from mgfusion.profiling.selection import recommend_pair

STRIDES = (4, 8, 16, 32)

# The paper's Table 5 (Cityscapes) and Table 9 (COCO): {encoder: (SC at OS4..32, EF at OS4..32)}.
PAPER_TABLE5 = {
    "dinov2_vitb14": ([0.56, 0.47, 0.39, 0.29], [5.45, 8.66, 11.67, 16.26]),
    "dinov3_vitb16": ([0.73, 0.71, 0.65, 0.53], [1.27, 1.64, 2.33, 5.88]),
    "samvit_b": ([0.60, 0.51, 0.43, 0.29], [6.30, 7.10, 9.91, 13.96]),
    "sam2_hiera_bplus": ([0.49, 0.44, 0.11, 0.41], [6.60, 8.59, 17.13, 12.47]),
    "swin_b": ([0.65, 0.65, 0.64, 0.58], [3.82, 3.11, 2.41, 6.85]),
}
PAPER_TABLE9 = {
    "dinov2_vitb14": ([0.66, 0.62, 0.55, 0.47], [1.95, 3.37, 5.30, 8.09]),
    "dinov3_vitb16": ([0.75, 0.74, 0.69, 0.61], [0.92, 1.19, 2.22, 3.54]),
    "samvit_b": ([0.73, 0.70, 0.62, 0.53], [2.62, 3.15, 4.27, 5.68]),
    "sam2_hiera_bplus": ([0.61, 0.51, 0.42, 0.52], [3.57, 5.90, 12.83, 5.97]),
    "swin_b": ([0.74, 0.71, 0.68, 0.64], [1.25, 2.58, 1.74, 2.17]),
}
# The paper's Table 6 (AP at OS4..32): D3S2 = DINOv3 master + SAM2 auxiliary, S2D3 the reverse; FT/FZ master.
PAPER_TABLE6 = {
    ("dinov3_vitb16", "sam2_hiera_bplus", True): [37.0, 34.2, 39.1, 35.3],
    ("dinov3_vitb16", "sam2_hiera_bplus", False): [27.1, 32.0, 35.4, 29.2],
    ("sam2_hiera_bplus", "dinov3_vitb16", True): [29.4, 31.2, 34.1, 32.2],
    ("sam2_hiera_bplus", "dinov3_vitb16", False): [33.9, 34.7, 35.8, 37.2],
}


def _encoder_node(name: str, **extra: Any) -> dict[str, Any]:
    return {"_target_": "mgfusion.backbones.build_encoder", "name": name, "weights": f"/ckpt/{name}.pth",
            "strict": True, **extra}


def _common(folder: Path, dataset: str, solver: Mapping[str, Any] | None, seed: int) -> dict[str, Any]:
    return {
        "model": {"_target_": "mgfusion.modeling.MaskFormer", "num_classes": 8, "num_queries": 200},
        "dataset": {"name": dataset, "task": "instance", "train": [f"{dataset}_train"], "test": [f"{dataset}_val"],
                    "num_classes": 8},
        "solver": {"max_iter": 90000, "base_lr": 0.0001, "ims_per_batch": 16, **(solver or {})},
        "runtime": {"num_gpus": 4, "num_machines": 1, "num_workers": 4, "log_period": 20},
        "output_dir": str(folder), "resume": False, "eval_only": False, "weights": None, "seed": seed,
        "device": "auto",
    }


def _write(folder: Path, config: Mapping[str, Any], results: Mapping[str, Any] | None, iteration: int,
           random_init: Sequence[str] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))
    if results is not None:
        payload = {"iteration": iteration, "weights": str(folder / "model_final.pth"), "init_weights": None,
                   "weights_strict": True, "random_init": list(random_init), "results": dict(results)}
        (folder / "final_metrics.json").write_text(json.dumps(payload, indent=2))
    return folder


def fused_run(folder: Path, *, master: str, auxiliary: str, stride: Any, ap: float | None,
              train_master: bool = True, dataset: str = "cityscapes_instance", solver: Mapping[str, Any] | None = None,
              seed: int = 0, results: Mapping[str, Any] | None = None, finished: bool = True,
              iteration: int = 90000, random_init: Sequence[str] = ()) -> Path:
    """A finished fused run (``results`` default: ``{"segm": {"AP": ap, "AP50": ap + 20}}``)."""
    config = {
        "backbone": {"_target_": "mgfusion.backbones.build_fusion_backbone",
                     "master": _encoder_node(master, neck="paper"), "auxiliary": _encoder_node(auxiliary),
                     "fusion": {"stride": stride, "operator": "replace", "from_profile": None,
                                "profile_encoder": None, "dynamic": False},
                     "train_master": train_master, "aux_input_size": None},
        **_common(folder, dataset, solver, seed),
    }
    if results is None:
        results = {"segm": {"AP": ap, "AP50": None if ap is None else ap + 20}}
    return _write(folder, config, results if finished else None, iteration, random_init)


def single_run(folder: Path, *, encoder: str, ap: float, dataset: str = "cityscapes_instance",
               solver: Mapping[str, Any] | None = None, seed: int = 0, freeze: bool = False) -> Path:
    """A finished run of one encoder alone (the master-only baseline)."""
    config = {"backbone": _encoder_node(encoder, freeze=freeze, neck="paper"), **_common(folder, dataset, solver, seed)}
    return _write(folder, config, {"segm": {"AP": ap, "AP50": ap + 20}}, 90000)


def paper_table6(root: Path) -> dict[tuple[str, str, bool], list[Path]]:
    """The paper's Table 6 as 16 run folders under ``root`` (folder names carry no setting on purpose)."""
    out = {}
    for i, ((master, aux, ft), aps) in enumerate(PAPER_TABLE6.items()):
        out[(master, aux, ft)] = [fused_run(root / f"job{4 * i + j}", master=master, auxiliary=aux, stride=s, ap=ap,
                                            train_master=ft) for j, (s, ap) in enumerate(zip(STRIDES, aps))]
    return out


def profile(folder: Path, table: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
            dataset: str = "cityscapes_fine_instance_seg_val", num_images: int = 500, variant: str = "reference",
            hparams: Mapping[str, Any] | None = None, seed: int = 0, strides: Sequence[int] = STRIDES,
            encoder_builds: Mapping[str, Any] | None = None) -> Path:
    """A profile folder with the given per-stride SC and EF means: ``{encoder: ([SC...], [EF...])}``."""
    folder.mkdir(parents=True, exist_ok=True)
    encoders = {e: {str(s): {"SC": {"mean": sc[i], "std": 0.1, "count": num_images},
                             "EF": {"mean": ef[i], "std": 1.0, "count": num_images}}
                    for i, s in enumerate(strides)} for e, (sc, ef) in table.items()}
    summary: dict[str, Any] = {
        "variant": variant, "num_images": num_images, "failed_images": 0, "skipped_images": 0, "encoders": encoders,
        "weights": {e: {"weights": f"/ckpt/{e}.pth", "description": f"/ckpt/{e}.pth"} for e in table},
        "source": {"images": None, "dataset": dataset, "max_images": num_images, "resolution": [512, 1024],
                   "metric_hparams": dict(hparams or {}), "seed": seed},
    }
    if len(table) >= 2:
        summary["recommendation"] = recommend_pair(encoders).to_dict()
    config = json.loads(json.dumps(asdict(resolve_config(variant, dict(hparams or {})))))
    builds = encoder_builds or {}
    fingerprint = {
        "compared": {
            "version": 1,
            "metrics": {"variant": variant, "config": config, "seed": seed, "supervised": True},
            "input": {"amp": False, "max_size": 1024, "projection_free": False, "resolution": [512, 1024]},
            "encoders": {e: {"build": builds.get(e, {}), "weights": {"kind": "file", "size": 1000 + i,
                                                                     "head_tail_sha256": f"{i:064x}"}}
                         for i, e in enumerate(sorted(table))},
            "images": {"source": {"kind": "dataset", "name": dataset}, "count": num_images,
                       "sha256": hashlib.sha256(dataset.encode()).hexdigest()},
        },
        "info": {"batch_size": 4, "device": "cuda"},
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    (folder / "fingerprint.json").write_text(json.dumps(fingerprint, indent=2))
    return folder
