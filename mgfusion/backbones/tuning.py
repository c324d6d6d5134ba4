"""Master tuning modes, activation checkpointing and layer-wise learning-rate decay of the timm-based encoders.

Modes (``tuning=`` of :class:`~mgfusion.backbones.timm_encoders.PlainViTEncoder` and
:class:`~mgfusion.backbones.timm_encoders.HierarchicalEncoder`; config ``backbone.tuning`` for a single encoder,
``backbone.master.tuning`` for the fusion's master):

* ``full``   every parameter trains (default; the paper's fine-tuned master).
* ``frozen`` nothing trains; the encoder runs in eval mode without an autograd graph (:meth:`Encoder.freeze`). The
  fusion backbone's ``train_master: false`` is an alias kept for old configs.
* ``last_n`` the last ``last_n_blocks`` transformer blocks, every trunk parameter registered after the first of them
  (a ViT's final norm) and the neck train; the stem (patch and position embeddings, class/register tokens) and the
  earlier blocks are frozen.
* ``lora``   low-rank adapters (the ``peft`` library) on ``lora.target_modules`` of every block — by default the
  attention's ``attn.qkv`` and ``attn.proj`` — with ``r = alpha = 32`` (VFMSeg's setting); the adapters and the neck
  train, the trunk's own weights are frozen. :func:`merge_lora` folds the adapters into the weights for inference
  and export.

The transformer blocks ("layers" of ``last_n`` and of layer-wise decay), in forward order:

* plain ViTs (DINOv3, DINOv2, SAM ViT): ``trunk.blocks[i]``, ``i = 0 .. depth-1`` (blocks after the last tapped one
  are dropped at construction and do not count);
* SAM2 Hiera: ``trunk.blocks[i]`` over all stages in order (Hiera-B+: 2 + 3 + 16 + 3 = 24 blocks); a stage's
  channel projection and pooling live inside its first block, so "the last N blocks" are the last N blocks of the
  last stage(s);
* Swin: ``trunk.layers[j].blocks[k]`` flattened in stage order (a stage's patch merging, registered before its
  blocks, belongs to the layer of the block before it).

Layer ids for layer-wise learning-rate decay (the BEiT / ViTDet recipe): block ``i`` has id ``i + 1``; trunk
parameters registered before the first block (patch embedding, position embedding, class and register tokens) have
id 0; parameters registered after the last block (the final norm), the neck and everything outside the trunk have id
``depth + 1``. A parameter of layer ``l`` gets ``lr x backbone_multiplier x decay ** (depth + 1 - l)``: block ``i``
gets ``decay ** (depth - i)``, the patch embedding ``decay ** (depth + 1)``, the neck 1.

A tuned encoder writes its mode into its state dict (``<prefix>tuning_signature``), so a checkpoint records the mode
that produced it. Loading it into an encoder whose parameters are laid out differently (LoRA vs. no LoRA, another
rank or scale, merged vs. unmerged adapters) raises :class:`TuningMismatchError`; between ``full``, ``frozen`` and
``last_n`` (the same tensors) it loads and logs both modes. Resuming a run checks the modes exactly
(:class:`TuningRecord`).
See docs/tuning.md.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "TUNING_MODES",
    "LoraSettings",
    "TuningMismatchError",
    "TuningRecord",
    "TuningSettings",
    "apply_tuning",
    "layer_decay_scales",
    "layer_ids",
    "merge_lora",
    "require_peft",
    "tuned_encoders",
    "tuning_record",
]  # fmt: skip

logger = logging.getLogger(__name__)

#: the master tuning modes, in the order of their signature codes
TUNING_MODES = ("full", "frozen", "last_n", "lora")
#: name of the state-dict entry holding a tuned encoder's mode
SIGNATURE_KEY = "tuning_signature"
_SIGNATURE_VERSION = 1
_LORA_INSTALL_HINT = "pip install 'mgfusion[lora]' (or: pip install peft)"


class TuningMismatchError(RuntimeError):
    """A checkpoint was produced by an encoder in another tuning mode than the model it is loaded into."""


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters: rank ``r``, scaling ``alpha / r``, input dropout, and the targeted ``nn.Linear``
    modules, named relative to each transformer block (``attn.qkv`` = ``trunk.blocks[i].attn.qkv``)."""

    r: int = 32
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("attn.qkv", "attn.proj")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> LoraSettings:
        """Settings from a config mapping (keys ``r``, ``alpha``, ``dropout``, ``target_modules``)."""
        cfg = dict(cfg or {})
        unknown = set(cfg) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown lora keys {sorted(unknown)}; valid: r, alpha, dropout, target_modules")
        if "target_modules" in cfg:
            targets = cfg["target_modules"]
            cfg["target_modules"] = (targets,) if isinstance(targets, str) else tuple(str(t) for t in targets)
        out = cls(**cfg)
        if not (isinstance(out.r, int) and out.r >= 1):
            raise ValueError(f"lora.r must be a positive int, got {out.r!r}")
        if not out.alpha > 0:
            raise ValueError(f"lora.alpha must be > 0, got {out.alpha!r}")
        if not 0.0 <= out.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {out.dropout!r}")
        if not out.target_modules:
            raise ValueError("lora.target_modules is empty; name the block's linear layers, e.g. [attn.qkv, attn.proj]")
        return out


@dataclass(frozen=True)
class TuningSettings:
    """How an encoder is trained: ``mode`` (one of :data:`TUNING_MODES`), ``last_n_blocks`` (``last_n``),
    ``lora`` (``lora``), ``grad_checkpointing`` (activation checkpointing of the blocks) and, after
    :func:`merge_lora`, ``lora_merged``."""

    mode: str = "full"
    last_n_blocks: int = 3
    lora: LoraSettings = field(default_factory=LoraSettings)
    grad_checkpointing: bool = False
    lora_merged: bool = False

    @classmethod
    def from_config(cls, mode: str = "full", *, last_n_blocks: int = 3, lora: Mapping[str, Any] | None = None,
                    grad_checkpointing: bool = False) -> TuningSettings:
        """Validated settings from the encoder's config keys."""
        if mode not in TUNING_MODES:
            raise ValueError(f"tuning={mode!r} is not a tuning mode; valid: {', '.join(TUNING_MODES)}")
        if isinstance(last_n_blocks, bool) or not isinstance(last_n_blocks, int) or last_n_blocks < 1:
            raise ValueError(f"last_n_blocks must be a positive int, got {last_n_blocks!r}")
        return cls(mode=mode, last_n_blocks=last_n_blocks, lora=LoraSettings.from_config(lora),
                   grad_checkpointing=bool(grad_checkpointing))

    def signature(self) -> torch.Tensor:
        """int64 (6,): version, mode code, last_n_blocks (last_n), r (lora), alpha x 1000 (lora), merged (lora)."""
        lora = self.mode == "lora"
        values = [_SIGNATURE_VERSION, TUNING_MODES.index(self.mode), self.last_n_blocks if self.mode == "last_n" else 0,
                  self.lora.r if lora else 0, round(self.lora.alpha * 1000) if lora else 0,
                  int(self.lora_merged) if lora else 0]
        return torch.tensor(values, dtype=torch.int64)

    def describe(self) -> str:
        """E.g. ``lora (r=32, alpha=32, targets attn.qkv, attn.proj)`` or ``last_n (3 blocks)``."""
        if self.mode == "last_n":
            return f"last_n ({self.last_n_blocks} blocks)"
        if self.mode == "lora":
            merged = ", merged" if self.lora_merged else ""
            return (f"lora (r={self.lora.r}, alpha={self.lora.alpha:g}, targets "
                    f"{', '.join(self.lora.target_modules)}{merged})")
        return self.mode

    def as_dict(self) -> dict[str, Any]:
        """Plain-type record (checkpoints, metrics files): only the keys that matter for ``mode``."""
        out: dict[str, Any] = {"mode": self.mode, "grad_checkpointing": self.grad_checkpointing}
        if self.mode == "last_n":
            out["last_n_blocks"] = self.last_n_blocks
        if self.mode == "lora":
            out["lora"] = {"r": self.lora.r, "alpha": self.lora.alpha, "dropout": self.lora.dropout,
                           "target_modules": list(self.lora.target_modules), "merged": self.lora_merged}
        return out


def describe_signature(sig: torch.Tensor) -> str:
    """Human-readable form of a :meth:`TuningSettings.signature` tensor."""
    v = [int(x) for x in sig.reshape(-1).tolist()]
    if len(v) != 6 or v[0] != _SIGNATURE_VERSION or not 0 <= v[1] < len(TUNING_MODES):
        return f"an unknown tuning signature {v}"
    mode = TUNING_MODES[v[1]]
    if mode == "last_n":
        return f"last_n ({v[2]} blocks)"
    if mode == "lora":
        return f"lora (r={v[3]}, alpha={v[4] / 1000:g}{', merged' if v[5] else ''})"
    return mode


# ---- applying a mode -------------------------------------------------------------------------------------------
def apply_tuning(encoder: nn.Module, settings: TuningSettings) -> nn.Module:
    """Put ``encoder`` (with ``trunk`` and ``transformer_blocks()``) into ``settings``' mode, in place.

    Sets ``requires_grad`` (``last_n``, ``frozen``), injects LoRA adapters (``lora``; needs ``peft``), enables the
    trunk's activation checkpointing, and registers the state-dict hooks that record and check the mode.
    """
    name = type(encoder).__name__
    blocks = list(encoder.transformer_blocks()) if settings.mode in ("last_n", "lora") else []
    if settings.grad_checkpointing:
        if not hasattr(encoder.trunk, "set_grad_checkpointing"):
            raise ValueError(f"grad_checkpointing=true: the {type(encoder.trunk).__name__} trunk of {name} does not "
                             "support activation checkpointing")
        encoder.trunk.set_grad_checkpointing(True)
    if settings.mode == "last_n":
        if settings.last_n_blocks > len(blocks):
            raise ValueError(f"tuning=last_n with last_n_blocks={settings.last_n_blocks}, but {name} has only "
                             f"{len(blocks)} transformer blocks")
        first = {id(p) for p in blocks[-settings.last_n_blocks].parameters()}
        trainable = False
        for p in encoder.trunk.parameters():
            trainable = trainable or id(p) in first
            p.requires_grad_(trainable)
    elif settings.mode == "lora":
        _inject_lora(encoder.trunk, blocks, settings.lora)
    encoder.tuning = settings
    if settings.mode == "frozen":
        encoder.freeze()
    if not getattr(encoder, "_tuning_hooks", False):
        encoder.register_state_dict_post_hook(_save_signature)
        encoder.register_load_state_dict_pre_hook(_check_signature)
        encoder._tuning_hooks = True
    return encoder


def require_peft() -> Any:
    """The ``peft`` module, or an ImportError naming the install command."""
    try:
        import peft
    except ImportError as e:
        raise ImportError(f"tuning=lora needs the peft library, which is not installed: {_LORA_INSTALL_HINT}") from e
    return peft


def _inject_lora(trunk: nn.Module, blocks: Sequence[nn.Module], lora: LoraSettings) -> None:
    peft = require_peft()
    names = {id(m): n for n, m in trunk.named_modules()}
    targets = []
    for block in blocks:
        for rel in lora.target_modules:
            try:
                module = block.get_submodule(rel)
            except AttributeError:
                module = None
            if not isinstance(module, nn.Linear):
                found = sorted(n for n, m in block.named_modules() if isinstance(m, nn.Linear))
                raise TypeError(f"lora.target_modules: {names[id(block)]}.{rel} is "
                                 f"{'missing' if module is None else type(module).__name__}, not an nn.Linear; the "
                                 f"block's linear layers are {', '.join(found)}")
            targets.append(f"{names[id(block)]}.{rel}")
        # timm's EVA/DINOv3 attention adds its q/v biases with F.linear(x, qkv.weight), which would bypass a wrapped
        # qkv; its qkv_bias_separate path calls the module and adds the biases after (the same numbers).
        attn = getattr(block, "attn", None)
        if getattr(attn, "q_bias", None) is not None and hasattr(attn, "qkv_bias_separate"):
            attn.qkv_bias_separate = True
    config = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                             bias="none")
    peft.inject_adapter_in_model(config, trunk)


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA adapter under ``model`` into its base weight (``W + alpha/r * B A``) and remove the adapter
    modules, in place; the encoders then hold plain ``nn.Linear`` layers (their state-dict keys are those of a
    ``full`` encoder) and record ``lora_merged``. For inference and export; returns the number of merged layers."""
    if not any(_is_lora_layer(m) for m in model.modules()):
        return 0
    require_peft()
    merged = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if _is_lora_layer(child):
                child.merge(safe_merge=True)
                setattr(parent, child_name, child.get_base_layer())
                merged += 1
    for _, encoder in tuned_encoders(model):
        if encoder.tuning.mode == "lora" and not encoder.tuning.lora_merged:
            encoder.tuning = dataclasses.replace(encoder.tuning, lora_merged=True)
            if hasattr(encoder.trunk, "peft_config"):
                del encoder.trunk.peft_config
    return merged


def _is_lora_layer(module: nn.Module) -> bool:
    return hasattr(module, "lora_A") and hasattr(module, "get_base_layer") and hasattr(module, "merge")


# ---- recording and checking the mode ---------------------------------------------------------------------------
def _save_signature(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    state_dict[prefix + SIGNATURE_KEY] = module.tuning.signature()


def _check_signature(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                     missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
    key = prefix + SIGNATURE_KEY
    ours = module.tuning.signature()
    if key not in state_dict:  # a checkpoint from before modes were recorded: its keys are checked as usual
        logger.warning("%s records no tuning mode; loading it into an encoder with tuning=%s",
                       prefix.rstrip(".") or type(module).__name__, module.tuning.describe())
        return
    theirs = torch.as_tensor(state_dict.pop(key))  # not a parameter or buffer: never "unexpected"
    if theirs.shape != ours.shape or not torch.equal(theirs.cpu(), ours):
        where = prefix.rstrip(".") or type(module).__name__
        lora = TUNING_MODES.index("lora")
        if theirs.shape == ours.shape and int(theirs[1]) != lora and int(ours[1]) != lora:
            # full / frozen / last_n hold the same tensors (only what trains differs): e.g. a fine-tuned encoder
            # evaluated, profiled or trained further frozen. LoRA layouts (adapters, rank, scale, merged) must match.
            logger.info("%s: loading weights trained with tuning=%s into an encoder with tuning=%s", where,
                        describe_signature(theirs), module.tuning.describe())
            return
        raise TuningMismatchError(
            f"{where}: the checkpoint was produced with tuning={describe_signature(theirs)}, but the model was built "
            f"with tuning={module.tuning.describe()}. Build the model with the checkpoint's mode (its run's "
            "config.yaml; e.g. backbone.master.tuning=... for a fusion master, backbone.tuning=... for a single "
            "encoder, with the same last_n_blocks / lora settings)."
        )


class TuningRecord:
    """Checkpointable record of a model's tuning modes (``{"<module path>": TuningSettings.as_dict()}``).

    Saved alongside the model by a checkpointer (top-level ``tuning`` key); on resume it checks that the model was
    built with the same modes."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        return tuning_record(self.model)

    def load_state_dict(self, record: Mapping[str, Any]) -> None:
        def modes(rec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
            return {path: {k: v for k, v in dict(entry).items() if k in ("mode", "last_n_blocks", "lora")}
                    for path, entry in rec.items()}

        if modes(record) != modes(tuning_record(self.model)):
            raise TuningMismatchError(f"the checkpoint's tuning record {modes(record)} differs from the model's "
                                      f"{modes(tuning_record(self.model))}; build the model with the checkpoint's "
                                      "modes (its run's config.yaml)")


def tuned_encoders(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(path, encoder)`` for every module under ``model`` that carries :class:`TuningSettings`."""
    for path, module in model.named_modules():
        if isinstance(getattr(module, "tuning", None), TuningSettings):
            yield path, module


def tuning_record(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{module path: {"mode", ..., "trainable_parameters"}}`` of every tuned encoder (for metrics and
    checkpoints); the path of a fusion master is e.g. ``backbone.encoder.master``."""
    out = {}
    for path, enc in tuned_encoders(model):
        out[path or "<model>"] = {**enc.tuning.as_dict(),
                                  "trainable_parameters": sum(p.numel() for p in enc.parameters() if p.requires_grad)}
    return out


# ---- layer-wise learning-rate decay ----------------------------------------------------------------------------
def layer_ids(encoder: nn.Module) -> tuple[dict[str, int], int]:
    """Layer id of each of ``encoder``'s parameters (names relative to it) and the depth (number of blocks).

    See the module docstring: block ``i`` -> ``i + 1``; trunk parameters before the first block -> 0; trunk
    parameters between blocks -> the id of the block before them; after the last block, and outside the trunk
    (neck) -> ``depth + 1``.
    """
    blocks = list(encoder.transformer_blocks())
    depth = len(blocks)
    block_of = {id(p): i for i, b in enumerate(blocks) for p in b.parameters()}
    trunk_prefix = "trunk."
    ids: dict[str, int] = {}
    last = -1
    for name, p in encoder.trunk.named_parameters():
        if id(p) in block_of:
            last = block_of[id(p)]
            ids[trunk_prefix + name] = last + 1
        else:
            ids[trunk_prefix + name] = depth + 1 if last == depth - 1 else last + 1
    for name, _ in encoder.named_parameters():
        ids.setdefault(name, depth + 1)
    return ids, depth


def layer_decay_scales(model: nn.Module, decay: float) -> dict[int, float]:
    """``{id(parameter): decay ** (depth + 1 - layer id)}`` for the trainable parameters of every tuned encoder
    under ``model`` (other parameters are absent: their scale is 1)."""
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"solver.param_groups.layer_decay must be in (0, 1], got {decay}")
    scales: dict[int, float] = {}
    for _, enc in tuned_encoders(model):
        ids, depth = layer_ids(enc)
        for name, p in enc.named_parameters():
            if p.requires_grad:
                scales[id(p)] = decay ** (depth + 1 - ids[name])
    return scales
