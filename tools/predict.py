#!/usr/bin/env python
"""Run a trained model on your own images and videos (Hydra ``key=value`` options, see configs/tools/predict.yaml).

    python tools/predict.py run=RUN_DIR input=IMAGE|FOLDER|'GLOB'|LIST.txt|VIDEO output=OUT_DIR [key=value ...]

Mask2Former ``demo/demo.py`` flags map to: ``--input a.jpg b.jpg`` → ``input=[a.jpg,b.jpg]`` (or a folder, a quoted
glob, a .txt list), ``--video-input v.mp4`` → ``input=v.mp4``, ``--output DIR`` → ``output=DIR``,
``--confidence-threshold 0.5`` → ``score_threshold=0.5``, ``--opts MODEL.WEIGHTS w.pth`` → ``weights=w.pth`` (or
``checkpoint=NAME`` in the run folder), ``--config-file`` → ``run=RUN_DIR`` (or ``config=config.yaml``).

Writes per image ``overlay/``, ``semantic/``, ``instances/``, ``panoptic/`` files (for the tasks the model has) and per
video ``video/<name>.mp4``. Unreadable inputs are reported by path and skipped; the exit status is 1 when no input
could be read, 2 for a configuration error (bad run folder, weights that do not fit, another model's output folder).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mgfusion, also when not installed

import hydra
from omegaconf import DictConfig, OmegaConf

from mgfusion.engine.checkpoint import CheckpointError
from mgfusion.inference import FingerprintMismatchError, Predictor, predict_to_folder

logger = logging.getLogger("mgfusion.predict")


def _as_list(value):
    return None if value is None else list(value) if not isinstance(value, str) else [value]


def predict(cfg: DictConfig) -> int:
    """Run the prediction described by the composed tool config; returns the exit status."""
    try:
        predictor = Predictor(cfg.run, config=cfg.config, checkpoint=cfg.checkpoint, weights=cfg.weights,
                              device=cfg.device, amp=cfg.amp,
                              test_time=OmegaConf.to_container(cfg.test_time) if cfg.get("test_time") else None,
                              score_threshold=cfg.score_threshold, topk=cfg.topk, batch_size=cfg.batch_size)
        logger.info("%r", predictor)
        report = predict_to_folder(predictor, _as_list(cfg.input), cfg.output, outputs=_as_list(cfg.outputs),
                                   overlay_task=cfg.overlay_task, progress=cfg.progress)
    except (CheckpointError, FingerprintMismatchError, FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    for path, reason in report.failed:
        print(f"unreadable input skipped: {path} ({reason})", file=sys.stderr, flush=True)
    print(f"[predict] {len(report.written)} written, {len(report.skipped)} already done, {len(report.failed)} "
          f"unreadable -> {cfg.output}", flush=True)
    if report.readable == 0:
        print("error: no input could be read", file=sys.stderr, flush=True)
        return 1
    return 0


@hydra.main(version_base=None, config_path="../configs", config_name="tools/predict")
def main(cfg: DictConfig) -> None:
    status = predict(cfg)
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
