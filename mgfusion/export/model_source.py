"""Where a model comes from: a training run folder, a saved config file, or configs/train.yaml plus overrides.

A run folder written by ``tools/train_net.py`` holds the resolved ``config.yaml`` and ``model_final.pth``; that is
all :func:`load_config` and :func:`build_trained_model` need. Without a run folder the config is composed from the
repository's ``configs/train.yaml`` with Hydra overrides, exactly as ``tools/train_net.py`` would compose it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

__all__ = ["CONFIG_DIR", "build_trained_model", "default_weights", "load_config"]

#: the repository's Hydra config folder (configs/ next to the mgfusion package).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
RUN_CONFIG = "config.yaml"
FINAL_WEIGHTS = "model_final.pth"


def load_config(source: str | os.PathLike | None, overrides: Sequence[str] = ()) -> DictConfig:
    """The training config of a model.

    Args:
        source: a run folder (reads ``<folder>/config.yaml``), a config YAML file (a resolved training config, as
            written into run folders), or None to compose ``configs/train.yaml``.
        overrides: ``key=value`` strings. On a saved config they replace values (dotted keys, OmegaConf syntax);
            on ``configs/train.yaml`` they are Hydra overrides (config groups too, e.g. ``backbone=fusion_micro_d3s2``).

    Raises:
        FileNotFoundError: the folder has no config.yaml / the file does not exist.
        ValueError: an override is not ``key=value``.
    """
    if source is None:
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            return compose("train", overrides=list(overrides))
    path = Path(source)
    if path.is_dir():
        path = path / RUN_CONFIG
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: give a tools/train_net.py run folder (it has {RUN_CONFIG}) or a config YAML file"
        )
    cfg = OmegaConf.load(path)
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ValueError(f"overrides must be key=value, got {bad}")
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg


def default_weights(source: str | os.PathLike | None) -> Path | None:
    """``<run folder>/model_final.pth`` when ``source`` is a run folder (or a config.yaml inside one) that has it."""
    if source is None:
        return None
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    candidate = folder / FINAL_WEIGHTS
    return candidate if candidate.is_file() else None


def build_trained_model(cfg: DictConfig, weights: str | os.PathLike | None, device: torch.device) -> nn.Module:
    """Build ``cfg``'s model in eval mode on ``device`` and load ``weights`` strictly (a checkpoint with a
    ``"model"`` state dict, as tools/train_net.py writes), with the same rule as the Predictor
    (:func:`mgfusion.inference.loading.load_state_dict_strict`).

    Registers the config's datasets first (the model's class metadata comes from them). ``weights=None`` keeps the
    freshly initialized parameters (micro test models only: say so wherever the result is shown).

    Raises:
        StrictLoadError: the checkpoint's keys or shapes do not match the model (missing, unexpected and mismatched
            keys listed).
    """
    from mgfusion.engine import build_model, register_datasets
    from mgfusion.inference.loading import load_state_dict_strict

    register_datasets(cfg.dataset)
    model = build_model(cfg, device).eval()
    if weights is not None:
        load_state_dict_strict(model, weights)
    return model
