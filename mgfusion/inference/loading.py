"""Loading a trained model for inference: a training run folder (or a config plus weights), strict weights."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from detectron2.data import Metadata, MetadataCatalog
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mgfusion.backbones.weights import state_dict_differences
from mgfusion.engine.build import build_model
from mgfusion.engine.checkpoint import CheckpointError, read_checkpoint
from mgfusion.engine.data import register_datasets

__all__ = [
    "FINAL_WEIGHTS",
    "RUN_CONFIG",
    "LoadedModel",
    "StrictLoadError",
    "file_sha256",
    "load_model",
    "load_state_dict_strict",
    "model_config_digest",
    "resolve_checkpoint",
]

#: files of a ``tools/train_net.py`` run folder.
RUN_CONFIG = "config.yaml"
FINAL_WEIGHTS = "model_final.pth"


class StrictLoadError(CheckpointError):
    """A checkpoint's weights do not match the model built from the config (keys or shapes)."""


@dataclass
class LoadedModel:
    """A model in eval mode with its weights, config and dataset metadata.

    Attributes:
        model: the detectron2-convention model, on its device, eval mode.
        cfg: the composed training config it was built from (resolved).
        metadata: the dataset's detectron2 ``Metadata`` (class names, colours, id mappings).
        weights: the checkpoint file that was loaded.
        iteration: the checkpoint's training iteration, if recorded.
    """

    model: nn.Module
    cfg: DictConfig
    metadata: Metadata
    weights: Path
    iteration: int | None


def resolve_checkpoint(run_dir: str | os.PathLike | None, *, checkpoint: str | None = None,
                       weights: str | os.PathLike | None = None) -> Path:
    """The checkpoint file to load.

    ``weights`` (a path) wins; else ``checkpoint`` in ``run_dir`` (a file name such as ``model_0004999.pth``, or
    ``last`` = the file named by ``run_dir/last_checkpoint``); else ``run_dir/model_final.pth``.

    Raises:
        FileNotFoundError: naming the missing file and what to pass instead.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights={path} does not exist")
        return path
    if run_dir is None:
        raise ValueError("give a training run folder, or a config together with weights=PATH")
    run = Path(run_dir).expanduser()
    if checkpoint in (None, ""):
        path = run / FINAL_WEIGHTS
        hint = "the run did not finish; pass checkpoint=<file in the run folder> or checkpoint=last"
    elif checkpoint == "last":
        pointer = run / "last_checkpoint"
        if not pointer.is_file():
            raise FileNotFoundError(f"checkpoint=last but {pointer} does not exist (no checkpoint was saved)")
        path = run / pointer.read_text(encoding="utf-8").strip()
        hint = "last_checkpoint names a file that is gone"
    else:
        path = Path(checkpoint).expanduser()
        path = path if path.is_absolute() else run / path
        hint = "checkpoints there: " + (", ".join(sorted(p.name for p in run.glob("*.pth"))) or "none")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist ({hint})")
    return path


def load_state_dict_strict(model: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load the ``model`` weights of checkpoint ``path`` strictly (weights-only unpickling).

    Returns:
        The checkpoint's other entries (e.g. ``iteration``).

    Raises:
        StrictLoadError: naming the missing keys, unexpected keys and shape mismatches.
        CheckpointCorruptError / CheckpointUnsafeError: see :func:`mgfusion.engine.read_checkpoint`.
    """
    data = read_checkpoint(str(path))
    state = data.get("model", data) if isinstance(data.get("model"), dict) else data
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StrictLoadError(f"checkpoint {path} has no 'model' state dict of tensors (keys: {sorted(data)[:10]})")
    missing, unexpected, mismatched = state_dict_differences(model.state_dict(), state)
    if missing or unexpected or mismatched:
        parts = [f"{label} ({len(keys)}): {', '.join(keys[:12])}{' ...' if len(keys) > 12 else ''}"
                 for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches", mismatched)) if keys]
        raise StrictLoadError(f"checkpoint {path} does not fit the model built from the config:\n  "
                              + "\n  ".join(parts)
                              + "\nUse the config the checkpoint was trained with (its run folder's config.yaml).")
    model.load_state_dict(state, strict=True)
    return {k: v for k, v in data.items() if k != "model"}


def _load_config(path: Path) -> DictConfig:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: give a tools/train_net.py run folder (it has {RUN_CONFIG}) "
                                "or config=PATH to a composed training config")
    cfg = OmegaConf.load(path)
    missing = [k for k in ("backbone", "model", "dataset") if k not in cfg]
    if missing:
        raise KeyError(f"{path} is not a composed training config: it lacks {missing}")
    return cfg


def load_model(run_dir: str | os.PathLike | None = None, *, config: str | os.PathLike | DictConfig | None = None,
               checkpoint: str | None = None, weights: str | os.PathLike | None = None,
               device: torch.device | str = "cpu") -> LoadedModel:
    """Build the model of a training run and load its weights strictly.

    Args:
        run_dir: a ``tools/train_net.py`` output folder (``config.yaml`` + checkpoints).
        config: instead of the run's config: a composed training config (path or DictConfig).
        checkpoint: a checkpoint in ``run_dir`` (file name, or ``last``); default ``model_final.pth``.
        weights: a checkpoint path (required with ``config`` and no ``run_dir``).
        device: where the model goes.

    The dataset's registration node is instantiated so that its metadata (class names, colours) is available;
    the dataset's images are not needed.
    """
    if config is None and run_dir is None:
        raise ValueError("give a training run folder, or config=... together with weights=...")
    if isinstance(config, DictConfig):
        cfg = config
    else:
        cfg = _load_config(Path(config).expanduser() if config is not None else Path(run_dir) / RUN_CONFIG)
    if config is not None and run_dir is None and weights is None:
        raise ValueError("config=... needs weights=PATH (a checkpoint trained with that config)")
    path = resolve_checkpoint(run_dir, checkpoint=checkpoint, weights=weights)
    register_datasets(cfg.dataset)
    model = build_model(cfg, torch.device(device))
    extra = load_state_dict_strict(model, path)
    model.eval()
    names = list(cfg.dataset.get("test") or []) or list(cfg.dataset.get("train") or [])
    metadata = MetadataCatalog.get(names[0])
    iteration = extra.get("iteration")
    return LoadedModel(model=model, cfg=cfg, metadata=metadata, weights=path,
                       iteration=int(iteration) if iteration is not None else None)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_config_digest(cfg: DictConfig) -> str:
    """Short hash of what defines the model's outputs: the backbone and model nodes, the dataset's classes and
    test-time resize (``num_classes``, ``test_mapper``)."""
    node = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("backbone", "model")}
    node["dataset"] = {k: OmegaConf.to_container(cfg.dataset, resolve=True).get(k)
                       for k in ("name", "num_classes", "test_mapper")}
    return hashlib.sha256(json.dumps(node, sort_keys=True, default=str).encode()).hexdigest()[:16]
