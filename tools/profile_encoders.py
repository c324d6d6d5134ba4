#!/usr/bin/env python
"""Profile encoders with the label-free SC/EF metrics and recommend a fusion (see configs/tools/profile_encoders.yaml).

    python tools/profile_encoders.py images=path/to/images encoders=[dinov3_vitb16,sam2_hiera_bplus] \
        weights.dinov3_vitb16=/ckpt/dinov3_vitb16_pretrain_lvd1689m.pth output_dir=outputs/profile

    # the master and auxiliary of a training run, fine-tuned vs initial weights (before_after.md, paper Table 8)
    python tools/profile_encoders.py dataset=cityscapes_fine_instance_seg_val encoders=[master@RUN,auxiliary@RUN]

    # 4 processes share the images (gloo on CPU; one per GPU on CUDA); random-init controls as well
    python tools/profile_encoders.py ... num_processes=4 controls.random_init=true

Every profile also has control rows (noise, pixels) and says whether the recommended auxiliary's EF and SC exceed
them (controls.md, summary.md). Errors in the settings, a folder holding results of other settings, a folder locked by
another job, a checkpoint that does not match its run's encoder, and a run in which no image could be profiled end
the tool with exit status 1 and a one-paragraph message (no traceback).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

# torch-free modules only here, so a wrong command line fails in a second; the runner is imported after the checks
from mgfusion.profiling.cli import register_hydra_config
from mgfusion.profiling.settings import ProfileConfigError, ProfileSettings

register_hydra_config()


def _user_errors() -> tuple[type[BaseException], ...]:
    from mgfusion.backbones import CheckpointMismatchError, CheckpointReadError
    from mgfusion.profiling.fingerprint import FingerprintMismatchError
    from mgfusion.profiling.lock import RunLockedError
    from mgfusion.profiling.runner import ProfileError
    from mgfusion.profiling.sources import SourceError
    from mgfusion.profiling.store import ResultStoreError
    from mgfusion.utils.plugins import PluginImportError

    return (ProfileConfigError, SourceError, PluginImportError, FingerprintMismatchError, RunLockedError,
            ResultStoreError, ProfileError, CheckpointMismatchError, CheckpointReadError)


@hydra.main(version_base=None, config_path="../configs/tools", config_name="profile_encoders")
def main(cfg: DictConfig) -> None:
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    mapping = OmegaConf.to_container(cfg, resolve=True)
    if HydraConfig.get().mode == RunMode.MULTIRUN:  # each job profiles into its own folder under output_dir
        mapping["output_dir"] = HydraConfig.get().runtime.output_dir
    try:
        settings = ProfileSettings.from_mapping(mapping)
    except ProfileConfigError as e:
        _fail(e)
    from mgfusion.profiling.runner import (
        Profiler,  # torch, timm, metrics: after the cheap checks
    )

    try:
        Profiler(settings).run()
    except _user_errors() as e:
        _fail(e)


def _fail(error: BaseException) -> None:
    print(f"[profile] error: {error}", file=sys.stderr, flush=True)
    sys.exit(1)

if __name__ == "__main__":
    main()
