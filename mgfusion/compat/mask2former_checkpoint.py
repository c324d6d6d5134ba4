"""Map an official Mask2Former checkpoint's head onto mgfusion's parameter names.

The official model (facebookresearch/Mask2Former, also PyPI ``maskformer2``) stores its head under
``sem_seg_head.pixel_decoder.*`` and ``sem_seg_head.predictor.*``; mgfusion's :class:`~mgfusion.modeling.MaskFormer`
under ``pixel_decoder.*`` and ``transformer_decoder.*``. Besides renames, three kinds of tensors change shape:

* **fused** — the deformable attention's ``sampling_offsets`` (M*L*P*2 rows) and ``attention_weights`` (M*L*P rows)
  projections become one ``sampling_proj`` (offsets first, then attention logits; the same row order inside each);
* **split** — ``nn.MultiheadAttention``'s packed ``in_proj_weight`` / ``in_proj_bias`` (3C rows: q, k, v) become
  ``q_proj`` / ``k_proj`` / ``v_proj``;
* **re-indexed** — the FPN's ``adapter_<k>`` / ``layer_<k>`` (k = 1 for the finest level) become
  ``lateral_convs.<i>`` / ``output_convs.<i>`` (i = 0 for the coarsest), the mask MLP's ``layers.<i>`` becomes the
  ``nn.Sequential`` index ``2 i`` (ReLUs in between), the FFN's ``linear1``/``linear2`` become ``ffn.0``/``ffn.3``.

Everything else outside the head is listed, never silently dropped: ``backbone.*`` (a Swin or ResNet trunk; it cannot
be mapped onto mgfusion's timm-based encoders, whose parameter names and per-stage output norms differ, so it is
dropped by default and kept verbatim only on request, for a model whose ``cfg.backbone`` instantiates the very same
detectron2 backbone class), ``criterion.empty_weight`` (mgfusion recomputes its class weights from
``no_object_weight``; the value is reported) and ``pixel_mean`` / ``pixel_std`` (mgfusion takes them from the
config/encoder). Any other key stops the conversion with :class:`UnmappedKeysError` naming it.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from mgfusion.backbones.weights import state_dict_differences

__all__ = [
    "ConversionReport",
    "UnmappedKeysError",
    "check_against_model",
    "convert_mask2former_state_dict",
    "infer_head_settings",
    "read_official_checkpoint",
]

PIXEL_DECODER = "sem_seg_head.pixel_decoder."
PREDICTOR = "sem_seg_head.predictor."
#: mgfusion's prefixes of the two head modules (attributes of :class:`mgfusion.modeling.MaskFormer`).
HEAD_PREFIXES = ("pixel_decoder.", "transformer_decoder.")
_IGNORED = {
    "criterion.empty_weight": "mgfusion derives the class weights from criterion.no_object_weight",
    "pixel_mean": "mgfusion takes the pixel mean from model.pixel_mean or the encoder",
    "pixel_std": "mgfusion takes the pixel std from model.pixel_std or the encoder",
}


class UnmappedKeysError(ValueError):
    """Keys of one side have no counterpart on the other (the message lists them)."""


@dataclass
class ConversionReport:
    """What :func:`convert_mask2former_state_dict` did, key by key."""

    renamed: list[tuple[str, str]] = field(default_factory=list)
    fused: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    split: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    backbone: list[str] = field(default_factory=list)
    backbone_kept: bool = False
    ignored: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """A few human-readable lines (counts, one example per kind, what was dropped and why)."""
        lines = [f"renamed {len(self.renamed)} tensors" + (f" (e.g. {self.renamed[0][0]} -> {self.renamed[0][1]})"
                                                           if self.renamed else "")]
        if self.fused:
            src, dst = self.fused[0]
            lines.append(f"fused {len(self.fused)} pairs into one projection (e.g. {' + '.join(src)} -> {dst})")
        if self.split:
            src, dst = self.split[0]
            lines.append(f"split {len(self.split)} packed q/k/v projections (e.g. {src} -> {', '.join(dst)})")
        if self.backbone:
            what = "kept verbatim" if self.backbone_kept else "dropped (head-only conversion)"
            lines.append(f"backbone: {len(self.backbone)} tensors {what}")
        for key, why in self.ignored.items():
            lines.append(f"ignored {key}: {why}")
        return "\n".join(lines)


# ---- reading ----------------------------------------------------------------------------------------------------

#: the only globals a detectron2 .pkl checkpoint needs (numpy 1.x and 2.x module paths)
_UNPICKLE_ALLOWED = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
})


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickler for detectron2 ``.pkl`` checkpoints that only rebuilds numpy arrays and plain containers."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _UNPICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: a Mask2Former .pkl checkpoint holds "
                                         "only numpy arrays in dicts")
        return super().find_class(module, name)


def read_official_checkpoint(path: str | os.PathLike) -> dict[str, Tensor]:
    """The state dict of an official Mask2Former checkpoint as CPU tensors.

    Accepts detectron2 ``.pkl`` files (a dict whose ``"model"`` entry maps names to numpy arrays; unpickled with an
    allow-list of numpy types only) and ``.pth`` files (``torch.load(weights_only=True)``; a ``"model"`` entry or a
    plain state dict).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            data = _ArraysOnlyUnpickler(f, encoding="latin1").load()
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, Mapping):
        raise TypeError(f"{path} holds a {type(data).__name__}, expected a dict (a state dict or {{'model': ...}})")
    state = data.get("model", data)
    if not isinstance(state, Mapping):
        raise TypeError(f"{path}: 'model' holds a {type(state).__name__}, expected a dict of tensors")
    out = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, Tensor):
            raise TypeError(f"{path}: entry {key!r} is a {type(value).__name__}, expected a tensor or numpy array")
        out[str(key)] = value
    return out


# ---- mapping rules ----------------------------------------------------------------------------------------------

Rule = tuple[re.Pattern, Callable[[re.Match, dict], "str | tuple[str, ...]"]]


def _rule(pattern: str, target: str | Callable[[re.Match, dict], str | tuple[str, ...]]) -> Rule:
    fn = target if callable(target) else (lambda m, _ctx, t=target: m.expand(t))
    return re.compile(pattern + r"\Z"), fn


def _fpn(kind: str) -> Callable[[re.Match, dict], str]:
    # adapter_<k>/layer_<k>: k = 1 is the finest FPN level; mgfusion's lists run coarse to fine
    return lambda m, ctx: f"{kind}.{ctx['num_fpn_levels'] - int(m.group(1))}.{m.group(2)}"


def _qkv(block: str) -> Callable[[re.Match, dict], tuple[str, ...]]:
    return lambda m, _ctx: tuple(f"layers.{m.group(1)}.{block}.attn.{p}_proj.{m.group(2)}" for p in "qkv")


_P = r"(weight|bias)"
_PIXEL_DECODER_RULES: list[Rule] = [
    _rule(rf"input_proj\.(\d+)\.([01])\.{_P}", r"input_proj.\1.\2.\3"),
    _rule(r"transformer\.level_embed", "level_embed"),
    _rule(rf"transformer\.encoder\.layers\.(\d+)\.self_attn\.(value_proj|output_proj)\.{_P}", r"encoder.\1.attn.\2.\3"),
    _rule(rf"transformer\.encoder\.layers\.(\d+)\.(norm1|norm2)\.{_P}", r"encoder.\1.\2.\3"),
    _rule(rf"transformer\.encoder\.layers\.(\d+)\.linear1\.{_P}", r"encoder.\1.ffn.0.\2"),
    _rule(rf"transformer\.encoder\.layers\.(\d+)\.linear2\.{_P}", r"encoder.\1.ffn.3.\2"),
    _rule(r"adapter_(\d+)\.((?:norm\.)?(?:weight|bias))", _fpn("lateral_convs")),
    _rule(r"layer_(\d+)\.((?:norm\.)?(?:weight|bias))", _fpn("output_convs")),
    _rule(rf"mask_features\.{_P}", r"mask_features.\1"),
]
#: offsets + attention logits -> one projection (mgfusion.modeling.deform_attn.MSDeformAttn.sampling_proj)
_FUSED_SAMPLING = re.compile(
    rf"transformer\.encoder\.layers\.(\d+)\.self_attn\.(sampling_offsets|attention_weights)\.{_P}\Z")
_PREDICTOR_RULES: list[Rule] = [
    _rule(r"(query_feat|query_embed|level_embed)\.weight", r"\1.weight"),
    _rule(rf"input_proj\.(\d+)\.{_P}", r"input_proj.\1.\2"),
    _rule(rf"transformer_self_attention_layers\.(\d+)\.self_attn\.in_proj_{_P}", _qkv("self_attn")),
    _rule(rf"transformer_self_attention_layers\.(\d+)\.self_attn\.out_proj\.{_P}", r"layers.\1.self_attn.attn.out_proj.\2"),
    _rule(rf"transformer_self_attention_layers\.(\d+)\.norm\.{_P}", r"layers.\1.self_attn.norm.\2"),
    _rule(rf"transformer_cross_attention_layers\.(\d+)\.multihead_attn\.in_proj_{_P}", _qkv("cross_attn")),
    _rule(rf"transformer_cross_attention_layers\.(\d+)\.multihead_attn\.out_proj\.{_P}",
          r"layers.\1.cross_attn.attn.out_proj.\2"),
    _rule(rf"transformer_cross_attention_layers\.(\d+)\.norm\.{_P}", r"layers.\1.cross_attn.norm.\2"),
    _rule(rf"transformer_ffn_layers\.(\d+)\.linear1\.{_P}", r"layers.\1.ffn.ffn.0.\2"),
    _rule(rf"transformer_ffn_layers\.(\d+)\.linear2\.{_P}", r"layers.\1.ffn.ffn.3.\2"),
    _rule(rf"transformer_ffn_layers\.(\d+)\.norm\.{_P}", r"layers.\1.ffn.norm.\2"),
    _rule(rf"decoder_norm\.{_P}", r"head.norm.\1"),
    _rule(rf"class_embed\.{_P}", r"head.class_embed.\1"),
    _rule(rf"mask_embed\.layers\.(\d+)\.{_P}", lambda m, _ctx: f"head.mask_embed.{2 * int(m.group(1))}.{m.group(2)}"),
]


def _apply(rules: list[Rule], key: str, ctx: dict) -> str | tuple[str, ...] | None:
    for pattern, target in rules:
        m = pattern.match(key)
        if m:
            return target(m, ctx)
    return None


def convert_mask2former_state_dict(
    official: Mapping[str, Tensor], *, keep_backbone: bool = False
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Map an official Mask2Former state dict onto mgfusion's names.

    Args:
        official: name -> tensor, as read by :func:`read_official_checkpoint`.
        keep_backbone: copy ``backbone.*`` unchanged (only loadable when mgfusion's ``cfg.backbone`` is the same
            detectron2 backbone class); by default they are dropped and only counted.

    Returns:
        (state dict with ``pixel_decoder.*`` / ``transformer_decoder.*`` [+ ``backbone.*``] keys, report).

    Raises:
        UnmappedKeysError: naming every key outside the known layout (e.g. a different pixel decoder or a
            Mask2Former variant with extra modules), or a sampling projection that lacks its partner.
    """
    report = ConversionReport(backbone_kept=keep_backbone)
    ctx = {"num_fpn_levels": sum(1 for k in official if re.fullmatch(re.escape(PIXEL_DECODER) + r"adapter_\d+\.weight", k))}
    out: dict[str, Tensor] = {}
    sampling: dict[tuple[str, str], dict[str, Tensor]] = {}
    unmapped: list[str] = []
    for key, value in official.items():
        if key.startswith("backbone."):
            report.backbone.append(key)
            if keep_backbone:
                out[key] = value
            continue
        if key in _IGNORED:
            detail = f"; its no-object weight is {float(value.flatten()[-1]):g}" if key == "criterion.empty_weight" else ""
            report.ignored[key] = _IGNORED[key] + detail
            continue
        if key.startswith(PIXEL_DECODER):
            local, rules, prefix = key[len(PIXEL_DECODER):], _PIXEL_DECODER_RULES, HEAD_PREFIXES[0]
            m = _FUSED_SAMPLING.match(local)
            if m:
                sampling.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
                continue
        elif key.startswith(PREDICTOR):
            local, rules, prefix = key[len(PREDICTOR):], _PREDICTOR_RULES, HEAD_PREFIXES[1]
        else:
            unmapped.append(key)
            continue
        target = _apply(rules, local, ctx)
        if target is None:
            unmapped.append(key)
        elif isinstance(target, tuple):
            parts = value.chunk(len(target), dim=0)
            if value.shape[0] % len(target):
                raise UnmappedKeysError(f"{key} has {value.shape[0]} rows, not divisible into {len(target)} q/k/v parts")
            for name, part in zip(target, parts):
                out[prefix + name] = part.clone()
            report.split.append((key, tuple(prefix + t for t in target)))
        else:
            out[prefix + target] = value
            report.renamed.append((key, prefix + target))
    for (layer, param), parts in sorted(sampling.items(), key=lambda kv: (int(kv[0][0]), kv[0][1])):
        names = [f"{PIXEL_DECODER}transformer.encoder.layers.{layer}.self_attn.{p}.{param}"
                 for p in ("sampling_offsets", "attention_weights")]
        if len(parts) != 2:
            missing = [n for n, p in zip(names, ("sampling_offsets", "attention_weights")) if p not in parts]
            raise UnmappedKeysError(f"cannot build encoder.{layer}.attn.sampling_proj.{param}: missing {missing}")
        fused = torch.cat([parts["sampling_offsets"], parts["attention_weights"]], dim=0)
        target = f"{HEAD_PREFIXES[0]}encoder.{layer}.attn.sampling_proj.{param}"
        out[target] = fused
        report.fused.append((tuple(names), target))
    if unmapped:
        raise UnmappedKeysError(
            f"{len(unmapped)} checkpoint keys have no mgfusion counterpart: {_listing(unmapped)}. mgfusion converts "
            "Mask2Former's MSDeformAttnPixelDecoder + MultiScaleMaskedTransformerDecoder head (sem_seg_head.*) and "
            "drops backbone.*; other heads/variants are not supported."
        )
    return out, report


def check_against_model(converted: Mapping[str, Tensor], model: nn.Module, *, head_only: bool = True) -> None:
    """Require ``converted`` to fill exactly the head of ``model`` (both directions) with matching shapes.

    Args:
        converted: output of :func:`convert_mask2former_state_dict`.
        model: an mgfusion MaskFormer (or any module whose head lives under ``pixel_decoder.`` /
            ``transformer_decoder.``).
        head_only: compare only the head's keys (``backbone.*`` of ``converted`` must then be absent or match too).

    Raises:
        UnmappedKeysError: naming the model keys no checkpoint tensor fills, the converted keys the model lacks, and
            every shape mismatch (with both shapes).
    """
    expected = model.state_dict()
    if head_only:
        expected = {k: v for k, v in expected.items() if k.startswith(HEAD_PREFIXES) or k in converted}
    missing, unexpected, shapes = state_dict_differences(expected, converted)
    problems = []
    if missing:
        problems.append(f"{len(missing)} model keys get no checkpoint tensor: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} converted keys do not exist in the model: {_listing(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_listing(shapes)}")
    if problems:
        hint = ""
        if any(".input_proj." in s or "lateral_convs" in s for s in shapes):
            hint = (" The backbone-facing projections (pixel_decoder.input_proj.*.0, lateral_convs) take the "
                    "backbone's channels: the official backbone's res2..res5 channels differ from this encoder's.")
        raise UnmappedKeysError("the converted checkpoint does not fit the mgfusion model:\n  " +
                                "\n  ".join(problems) + hint)


def infer_head_settings(official: Mapping[str, Tensor]) -> dict[str, int]:
    """Head sizes readable from an official checkpoint's tensors (the keys of :mod:`.mask2former_config`).

    Returns a dict with whichever of ``num_classes``, ``num_queries``, ``hidden_dim``, ``dec_layers`` (mgfusion's
    ``transformer_decoder.num_layers``), ``dec_dim_feedforward``, ``conv_dim``, ``mask_dim``, ``enc_layers``,
    ``enc_dim_feedforward``, ``num_transformer_levels`` the checkpoint determines.
    """
    def shape(key: str) -> tuple[int, ...] | None:
        t = official.get(key)
        return tuple(t.shape) if t is not None else None

    def count(pattern: str) -> int:
        regex = re.compile(pattern)
        return len({m.group(1) for k in official if (m := regex.match(k))})

    found: dict[str, int] = {}
    pairs = {
        "num_classes": (PREDICTOR + "class_embed.weight", lambda s: s[0] - 1),
        "num_queries": (PREDICTOR + "query_feat.weight", lambda s: s[0]),
        "hidden_dim": (PREDICTOR + "query_feat.weight", lambda s: s[1]),
        "dec_dim_feedforward": (PREDICTOR + "transformer_ffn_layers.0.linear1.weight", lambda s: s[0]),
        "conv_dim": (PIXEL_DECODER + "transformer.level_embed", lambda s: s[1]),
        "num_transformer_levels": (PIXEL_DECODER + "transformer.level_embed", lambda s: s[0]),
        "mask_dim": (PIXEL_DECODER + "mask_features.weight", lambda s: s[0]),
        "enc_dim_feedforward": (PIXEL_DECODER + "transformer.encoder.layers.0.linear1.weight", lambda s: s[0]),
    }
    for name, (key, fn) in pairs.items():
        s = shape(key)
        if s is not None:
            found[name] = int(fn(s))
    dec = count(re.escape(PREDICTOR) + r"transformer_ffn_layers\.(\d+)\.")
    enc = count(re.escape(PIXEL_DECODER) + r"transformer\.encoder\.layers\.(\d+)\.")
    if dec:
        found["dec_layers"] = dec
    if enc:
        found["enc_layers"] = enc
    return found


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
