#!/usr/bin/env python
"""Train, resume or evaluate a segmentation model from the Hydra configs in ``configs/`` (see configs/train.yaml).

    python tools/train_net.py backbone.master.weights=A.pth backbone.auxiliary.weights=B.pt   # train (paper recipe)
    python tools/train_net.py ... resume=true                     # continue the run in the same output folder
    python tools/train_net.py ... overwrite=true                  # start again there (old files moved aside)
    python tools/train_net.py eval_only=true weights=PATH.pth     # evaluate a checkpoint (strict loading)
    python tools/train_net.py -m backbone.fusion.stride=4,8,16,32 # Hydra multirun sweep (one folder per job)
    python tools/train_net.py runtime.num_gpus=8                  # DDP through detectron2's launch

The work is done by :func:`mgfusion.engine.run`; this file only adds the command line. Errors a user can fix (missing
data or weights, a folder holding another run, a checkpoint that does not match) print ``error: ...`` and exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mgfusion, also when not installed

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from mgfusion.engine import USER_ERRORS, run  # noqa: E402
from mgfusion.engine.run_dir import register_resolvers  # noqa: E402

register_resolvers()  # run-folder naming (configs/train.yaml, hydra.run.dir); must precede @hydra.main's compose


@hydra.main(version_base=None, config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    if cfg.output_dir is None or hydra_cfg.mode == RunMode.MULTIRUN:  # multirun: output_dir is the sweep's root
        cfg.output_dir = hydra_cfg.runtime.output_dir
    print(OmegaConf.to_yaml(cfg, resolve=True), flush=True)
    try:
        run(cfg, overrides=hydra_cfg.job.override_dirname)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
