#!/usr/bin/env python
"""Profile encoders with the label-free SC/EF metrics and recommend a fusion (see configs/tools/profile_encoders.yaml).

    python tools/profile_encoders.py images=path/to/images encoders=[dinov3_vitb16,sam2_hiera_bplus] \
        weights.dinov3_vitb16=/ckpt/dinov3_vitb16_pretrain_lvd1689m.pth output_dir=outputs/profile
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mgfusion.profiling import run_profile  # noqa: E402


@hydra.main(version_base=None, config_path="../configs/tools", config_name="profile_encoders")
def main(cfg: DictConfig) -> None:
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    settings = OmegaConf.to_container(cfg, resolve=True)
    run_profile(settings)


if __name__ == "__main__":
    main()
