"""Shared by the inference and predict-tool tests: one tiny panoptic model trained per test session."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[2]

#: the micro fused backbone + tiny Mask2Former on 64x64 synthetic panoptic data (8 train, 3 val images), CPU fp32.
#: Low panoptic thresholds so that a model trained for 2 iterations already outputs panoptic segments.
TINY_PANOPTIC = ["backbone=fusion_micro_d3s2", "model=mask2former_tiny", "dataset=synthetic_panoptic",
                 "solver=smoke_cpu", "runtime=smoke", "device=cpu", "runtime.tensorboard=false",
                 "dataset.register.image_size=64", "dataset.register.num_train=8", "dataset.register.num_val=3",
                 "solver.max_iter=2", "solver.checkpoint_period=2", "model.object_mask_threshold=0.1",
                 "model.overlap_threshold=0.1"]


def compose_tiny(run_dir: Path, *extra: str) -> DictConfig:
    """configs/train.yaml with the tiny panoptic overrides (data next to ``run_dir``) and ``extra``."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose("train", overrides=[*TINY_PANOPTIC, f"output_dir={run_dir}",
                                           f"dataset.register.root={run_dir.parent / 'data'}", *extra])


def trained_tiny_run(base: Path) -> Path:
    """A finished training run folder under ``base`` (trained on first use, reused after)."""
    from mgfusion.engine import run

    run_dir = base / "tiny_panoptic_run"
    if not (run_dir / "model_final.pth").is_file():
        run(compose_tiny(run_dir))
    return run_dir


def val_images(run_dir: Path) -> list[Path]:
    """The synthetic validation images of the tiny run."""
    images = sorted((run_dir.parent / "data").glob("*/images/val/*.png"))
    assert len(images) == 3, images
    return images
