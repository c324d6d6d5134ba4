"""Encoders taken out of a training checkpoint (the paper's RQ5 / Table 8: SC/EF before and after fine-tuning).

An ``encoders`` entry ``PART@PATH`` names one encoder of a run of ``tools/train_net.py``:

* ``PART``: ``master`` or ``auxiliary`` of a fusion backbone (``backbone.master`` / ``backbone.auxiliary`` in the
  run's config, checkpoint entries ``backbone.encoder.master.*`` / ``backbone.encoder.auxiliary.*``), or
  ``encoder`` for a single-encoder backbone (config ``backbone``, entries ``backbone.encoder.*``; behind a
  ``FixedSizeInput`` wrapper: config ``backbone.encoder``, entries ``backbone.encoder.encoder.*``);
* ``PATH``: the run folder (its ``model_final.pth``, else the file named by its ``last_checkpoint``) or one
  checkpoint file inside it. The run's ``config.yaml`` (written by every training run) must sit next to it.

The encoder is rebuilt from the run's config node (architecture, neck, taps; its ``weights`` are not loaded) and
the checkpoint's entries of that part are loaded strictly: every key of the encoder must be there with the same
shape, and no other key may share the prefix. Its *initial* weights, profiled as the "before" row of
``before_after.md``, are those the run started from, in this order:

1. the whole-model ``weights=`` file the run was initialised from (the same entries of it);
2. the encoder's own ``weights`` in the run config (an official / timm checkpoint);
3. for a part the run kept frozen (the fusion backbone's auxiliary, a master with ``train_master: false``, a
   single encoder with ``freeze: true``): the checkpoint's own entries, which a frozen encoder never changes;
4. else random initialisation with the profile's seed (the run's own random draw is not reproduced; the table
   says so).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from mgfusion.backbones import (
    CheckpointMismatchError,
    Encoder,
    build_encoder,
    read_state_dict,
)
from mgfusion.backbones.weights import state_dict_differences

from .settings import ProfileConfigError, split_checkpoint_entry

#: checkpoint key prefix of each part (the detectron2 model holds the encoder under ``backbone.encoder``)
PART_PREFIX = {"master": "backbone.encoder.master.", "auxiliary": "backbone.encoder.auxiliary.",
               "encoder": "backbone.encoder."}
FINAL_NAME = "model_final.pth"
ENCODER_TARGET = "mgfusion.backbones.build_encoder"
#: wrappers whose wrapped encoder (config node ``encoder``, checkpoint entries ``encoder.*``) is profiled instead:
#: FixedSizeInput only changes how images are tiled for the encoder, not the encoder itself
WRAPPER_TARGETS = ("mgfusion.backbones.FixedSizeInput", "mgfusion.backbones.fixed_input.FixedSizeInput")


@dataclass(frozen=True)
class CheckpointPart:
    """One encoder of a training checkpoint.

    Attributes:
        entry: the ``encoders`` entry as given (``master@PATH``).
        part: ``master`` | ``auxiliary`` | ``encoder``.
        checkpoint: absolute path of the checkpoint file; ``run_dir`` its folder (holding ``config.yaml``).
        node: the encoder's build node from the run config (``name`` + build_encoder keywords, ``_target_`` removed).
        init_model: the whole-model checkpoint the run was initialised from (its top-level ``weights``), or None.
        frozen: the run kept this encoder frozen (its weights in the checkpoint are its initial weights).
        name: the profile's name of the fine-tuned encoder (``master@<run folder>``, plus ``/<file stem>`` for a
            checkpoint other than model_final.pth); ``initial_name`` that of its initial weights.
    """

    entry: str
    part: str
    checkpoint: str
    run_dir: str
    node: Mapping[str, Any]
    init_model: str | None
    frozen: bool = False
    wrapped: str = ""


    @property
    def registry_name(self) -> str:
        return str(self.node["name"])

    @property
    def prefix(self) -> str:
        """Checkpoint key prefix of the encoder (``wrapped`` adds ``encoder.`` per FixedSizeInput wrapper)."""
        return PART_PREFIX[self.part] + self.wrapped

    @property
    def name(self) -> str:
        stem = "" if os.path.basename(self.checkpoint) == FINAL_NAME else "/" + Path(self.checkpoint).stem
        return f"{self.part}@{os.path.basename(self.run_dir.rstrip(os.sep))}{stem}"

    @property
    def initial_name(self) -> str:
        return f"{self.name}:initial"

    @property
    def initial_weights(self) -> str | None:
        """The encoder's own ``weights`` in the run config (official / timm checkpoint), or None."""
        value = self.node.get("weights")
        return str(value) if value else None

    def build_kwargs(self) -> dict[str, Any]:
        """build_encoder keywords of the node without ``name``, ``weights`` and ``freeze``."""
        return {k: v for k, v in self.node.items() if k not in ("name", "weights", "freeze")}


def _checkpoint_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise ProfileConfigError(f"checkpoint path {path} does not exist (encoders entry PART@PATH: PATH is a "
                                 "training run folder or one of its model_*.pth files)")
    if (path / FINAL_NAME).is_file():
        return path / FINAL_NAME
    pointer = path / "last_checkpoint"
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if name and (path / name).is_file():
            return path / name
    raise ProfileConfigError(f"run folder {path} holds no {FINAL_NAME} and no last_checkpoint pointing to a file; "
                             "give the checkpoint file itself: PART@PATH/model_XXXXXXX.pth")


def _encoder_node(cfg: Mapping[str, Any], part: str, config_path: Path) -> tuple[dict[str, Any], str]:
    """The encoder's build node and the key path added by wrappers around it (``encoder.`` per wrapper)."""
    backbone = cfg.get("backbone")
    if not isinstance(backbone, Mapping):
        raise ProfileConfigError(f"{config_path} has no `backbone` node; is it the config.yaml of a training run?")
    fusion = "master" in backbone and "auxiliary" in backbone
    if part == "encoder":
        if fusion:
            raise ProfileConfigError(f"{config_path}: the run trained a fusion backbone; profile one of its "
                                     "encoders with master@PATH or auxiliary@PATH (not encoder@PATH)")
        node = dict(backbone)
    else:
        if not fusion:
            raise ProfileConfigError(f"{config_path}: the run trained a single-encoder backbone "
                                     f"({backbone.get('name')!r}); profile it with encoder@PATH")
        node = dict(backbone[part])
    wrapped = ""
    while node.get("_target_") in WRAPPER_TARGETS and isinstance(node.get("encoder"), Mapping):
        node, wrapped = dict(node["encoder"]), wrapped + "encoder."
    target = node.pop("_target_", ENCODER_TARGET)
    if target != ENCODER_TARGET or not node.get("name"):
        key = "backbone" if part == "encoder" else f"backbone.{part}"
        raise ProfileConfigError(f"{config_path}: {key} is built by {target!r}; only encoders built by "
                                 f"{ENCODER_TARGET} (with a `name`) can be taken out of a checkpoint")
    return node, wrapped


def resolve_checkpoint_part(entry: str) -> CheckpointPart:
    """Resolve an ``encoders`` entry ``PART@PATH`` (see the module docstring); errors name the file and the fix."""
    split = split_checkpoint_entry(entry)
    if split is None:
        raise ValueError(f"{entry!r} is not a PART@PATH entry")
    part, raw = split
    ckpt = _checkpoint_file(Path(raw).expanduser()).resolve()
    config_path = ckpt.parent / "config.yaml"
    if not config_path.is_file():
        raise ProfileConfigError(f"{config_path} not found: the encoder of {ckpt} is rebuilt from its run's "
                                 "config.yaml (tools/train_net.py writes it into the run folder)")
    cfg = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False)
    node, wrapped = _encoder_node(cfg, part, config_path)
    init_model = cfg.get("weights") or None
    backbone = cfg["backbone"]
    frozen = {"auxiliary": True, "master": backbone.get("train_master", True) is False,
              "encoder": bool(node.get("freeze", False))}[part]
    return CheckpointPart(entry=entry, part=part, checkpoint=str(ckpt), run_dir=str(ckpt.parent), node=node,
                          init_model=str(init_model) if init_model else None, frozen=frozen, wrapped=wrapped)


def part_state_dict(path: str | os.PathLike, part: str, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """The entries of ``part`` in a training checkpoint, with the part's prefix (``prefix``, default
    ``PART_PREFIX[part]``) removed.

    ``encoder`` (single-encoder backbone) takes every ``backbone.encoder.*`` entry; a fusion checkpoint has
    ``backbone.encoder.master.*`` there as well, which is refused with a pointer to ``master@`` / ``auxiliary@``.
    """
    raw = read_state_dict(path)
    model = raw.get("model", raw) if isinstance(raw, Mapping) else raw
    prefix = prefix or PART_PREFIX[part]
    sd = {k[len(prefix):]: v for k, v in model.items() if isinstance(k, str) and k.startswith(prefix)}
    if not sd:
        found = sorted({".".join(k.split(".")[:3]) for k in model if isinstance(k, str) and k.startswith("backbone")})
        raise ProfileConfigError(f"{path} has no {prefix}* entries (its backbone entries start with {found[:6]}); "
                                 "check PART in the PART@PATH entry")
    if part == "encoder" and any(k.startswith(("master.", "auxiliary.")) for k in sd):
        raise ProfileConfigError(f"{path} holds a fusion backbone; use master@PATH or auxiliary@PATH")
    return sd


def load_part_strict(encoder: torch.nn.Module, path: str | os.PathLike, part: str, prefix: str | None = None) -> None:
    """Load ``part``'s checkpoint entries (under ``prefix``) into ``encoder``; raises CheckpointMismatchError on any
    difference."""
    prefix = prefix or PART_PREFIX[part]
    sd = part_state_dict(path, part, prefix)
    missing, unexpected, shapes = state_dict_differences(encoder.state_dict(), sd)
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(f"{path} ({prefix}*)", missing, unexpected, shapes)
    encoder.load_state_dict(sd, strict=True)


def build_part_encoder(part: CheckpointPart, *, weights: str | None, device: torch.device) -> Encoder:
    """Build the part's architecture from its config node (frozen), with ``weights`` passed to build_encoder."""
    kwargs = part.build_kwargs()
    if weights:
        kwargs["weights"] = weights
    return build_encoder(part.registry_name, freeze=True, **kwargs).to(device)


def finetuned_encoder(part: CheckpointPart, device: torch.device) -> Encoder:
    """The fine-tuned encoder: the run's architecture with the checkpoint's entries of ``part`` (strict)."""
    encoder = build_part_encoder(part, weights=None, device=torch.device("cpu"))
    load_part_strict(encoder, part.checkpoint, part.part, part.prefix)
    return encoder.freeze().to(device)


def initial_encoder(part: CheckpointPart, device: torch.device) -> Encoder:
    """The encoder as the run started (the rules of the module docstring, :func:`initial_source`)."""
    kind, path = initial_source(part)
    if kind in ("model", "frozen"):
        encoder = build_part_encoder(part, weights=None, device=torch.device("cpu"))
        load_part_strict(encoder, path, part.part, part.prefix)
        return encoder.freeze().to(device)
    return build_part_encoder(part, weights=path, device=device)


def initial_source(part: CheckpointPart) -> tuple[str, str | None]:
    """``(kind, path)`` of the initial weights: ``("model", init checkpoint)``, ``("weights", file or hub)``,
    ``("frozen", the checkpoint itself)`` or ``("random", None)``."""
    if part.init_model:
        return "model", part.init_model
    if part.initial_weights:
        return "weights", part.initial_weights
    if part.frozen:
        return "frozen", part.checkpoint
    return "random", None


def checkpoint_iteration(path: str | os.PathLike) -> int | None:
    """The ``iteration`` stored in a training checkpoint (None if absent or unreadable); memory-mapped, so the
    tensors are not read."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - only a description; loading the weights reports a damaged file
        return None
    it = raw.get("iteration") if isinstance(raw, Mapping) else None
    return int(it) if isinstance(it, int) and not isinstance(it, bool) else None
