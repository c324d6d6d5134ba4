"""ONNX export of a trained mgfusion MaskFormer, with an onnxruntime parity check.

The exported graph (:class:`SegmentationOnnxModel`) takes ``images``: float32 (B, 3, H, W) RGB in 0-255 (no
normalization needed: the model's pixel mean/std are inside the graph) and returns

* ``sem_seg``: (B, K, H, W) per-class scores, sum over queries of p(class) * sigmoid(mask) (the ``sem_seg`` output of
  the PyTorch model; ``argmax`` over K gives the label map);
* ``pred_logits``: (B, Q, K+1) class logits of the last decoder layer (the last entry is "no object");
* ``pred_masks``: (B, Q, H/4, W/4) mask logits at stride 4.

Instance and panoptic results come from ``pred_logits`` / ``pred_masks`` with the same post-processing as the
PyTorch model: per image, resize the mask logits bilinearly (``align_corners=False``) to (H, W), crop any padding you
added, then apply :func:`mgfusion.modeling.inference.instance_inference` (top-k (query, class) pairs, score = class
probability x mean mask probability inside the mask) or :func:`~mgfusion.modeling.inference.panoptic_inference`
(``object_mask_threshold``/``overlap_threshold`` of the model config; both are stored in the ONNX metadata).

Shapes: batch, height and width are dynamic. Height and width must be multiples of the model's size divisibility
(32 for every shipped config; stored as ``mgfusion.size_divisibility``): the PyTorch model pads its inputs to that
multiple, the ONNX graph expects inputs that are already padded. Pad at the bottom/right (the PyTorch model pads the
normalized image with zeros, i.e. with the pixel mean) and crop the outputs.

The deformable attention of the pixel decoder is exported through its ``grid_sample`` implementation (ONNX
``GridSample``, opset >= 16); the model's configured implementation is restored afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgfusion.modeling.deform_attn import DEFORM_ATTN_IMPLS, MSDeformAttn
from mgfusion.utils.io import atomic_write_bytes

__all__ = [
    "DEFAULT_OPSET",
    "OUTPUT_NAMES",
    "ParityResult",
    "SegmentationOnnxModel",
    "check_parity",
    "describe_metadata",
    "export_onnx",
    "input_size_multiple",
    "parity_images",
    "use_deform_attn_impl",
]

#: torch's ONNX exporter writes its ATen translations for opset 18; GridSample needs >= 16.
DEFAULT_OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAMES = ("sem_seg", "pred_logits", "pred_masks")


@contextlib.contextmanager
def use_deform_attn_impl(model: nn.Module, impl: str) -> Iterator[None]:
    """Temporarily switch every :class:`MSDeformAttn` of ``model`` to the deformable-attention core ``impl``."""
    if impl not in DEFORM_ATTN_IMPLS:
        raise ValueError(f"unknown deformable attention implementation {impl!r}; valid: {sorted(DEFORM_ATTN_IMPLS)}")
    modules = [m for m in model.modules() if isinstance(m, MSDeformAttn)]
    saved = [(m.core, m.impl) for m in modules]
    try:
        for m in modules:
            m.core, m.impl = DEFORM_ATTN_IMPLS.get(impl), impl
        yield
    finally:
        for m, (core, name) in zip(modules, saved):
            m.core, m.impl = core, name


# ---- symbolic-shape-friendly window partitioning for SAM2 Hiera (timm.models.hieradet_sam2) -------------------
# timm pads each block's map to its window size with ``(w - H % w) % w`` and recovers the batch as
# ``windows.shape[0] // (H * W // w // w)``. With symbolic H, W every view of every block then needs sympy to prove
# identities about nested Mod/FloorDiv terms, which made tracing a 5-block micro Hiera take ~3 minutes. The versions
# below compute the same padded sizes as ``ceil(H / w) * w`` and let ``reshape``/``view`` infer the batch: identical
# tensors, about a quarter of the tracing time. They are swapped in only while torch.export traces the model.


def _hiera_calc_pad(h, w, window_size):
    hp = (h + window_size[0] - 1) // window_size[0] * window_size[0]
    wp = (w + window_size[1] - 1) // window_size[1] * window_size[1]
    return hp, wp, hp - h, wp - w


def _hiera_window_partition(x: Tensor, window_size) -> Tensor:
    b, h, w, c = x.shape
    x = x.view(b, h // window_size[0], window_size[0], w // window_size[1], window_size[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size[0], window_size[1], c)


def _hiera_window_unpartition(windows: Tensor, window_size, hw) -> Tensor:
    hp, wp = hw
    c = windows.shape[-1]
    x = windows.view(-1, hp // window_size[0], wp // window_size[1], window_size[0], window_size[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, hp, wp, c)


@contextlib.contextmanager
def traceable_hiera_windows() -> Iterator[None]:
    """Temporarily replace timm's Hiera window helpers by the equivalent, trace-friendly ones above."""
    import timm.models.hieradet_sam2 as hiera

    names = {"_calc_pad": _hiera_calc_pad, "window_partition": _hiera_window_partition,
             "window_unpartition": _hiera_window_unpartition}
    missing = [n for n in names if not hasattr(hiera, n)]
    if missing:  # a timm version that reorganised the module: trace its own code (slower, still correct)
        yield
        return
    saved = {n: getattr(hiera, n) for n in names}
    try:
        for n, fn in names.items():
            setattr(hiera, n, fn)
        yield
    finally:
        for n, fn in saved.items():
            setattr(hiera, n, fn)


def input_size_multiple(model: nn.Module) -> int:
    """The multiple that image height and width must have for the exported graph (the model's padding rule)."""
    return int(getattr(model, "size_divisibility", 0) or 1)


class SegmentationOnnxModel(nn.Module):
    """The exportable forward of a :class:`mgfusion.modeling.MaskFormer`: images in 0-255 -> semantic scores and the
    raw query predictions (see the module docstring for the output contract)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        for name in ("backbone", "pixel_decoder", "transformer_decoder", "pixel_mean", "pixel_std"):
            if not hasattr(model, name):
                raise TypeError(f"ONNX export needs an mgfusion MaskFormer; {type(model).__name__} lacks `{name}`")
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """images: float (B, 3, H, W) RGB 0-255, H and W multiples of :func:`input_size_multiple`."""
        m = self.model
        x = (images - m.pixel_mean) / m.pixel_std
        mask_features, multi_scale = m.pixel_decoder(m.backbone(x))
        out = m.transformer_decoder(multi_scale, mask_features, return_intermediate=False)
        logits, masks = out["pred_logits"].float(), out["pred_masks"].float()
        full = F.interpolate(masks, size=images.shape[-2:], mode="bilinear", align_corners=False)
        probs = logits.softmax(-1)[..., :-1]
        sem_seg = torch.einsum("bqk,bqhw->bkhw", probs, full.sigmoid())
        return sem_seg, logits, masks


@dataclass
class ParityResult:
    """Max |onnxruntime - PyTorch| per output for one input size, and the bound each had to meet."""

    size: tuple[int, int]
    batch: int
    max_abs_diff: dict[str, float]
    bound: dict[str, float]

    @property
    def ok(self) -> bool:
        return all(self.max_abs_diff[k] <= self.bound[k] for k in self.max_abs_diff)

    def describe(self) -> str:
        parts = [f"{k} {self.max_abs_diff[k]:.2e} (bound {self.bound[k]:.1e})" for k in self.max_abs_diff]
        return f"{self.batch}x{self.size[0]}x{self.size[1]}: max |onnx - torch| " + ", ".join(parts)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    example_size: tuple[int, int] | None = None,
    metadata: dict[str, str] | None = None,
    log=print,
) -> None:
    """Export ``model`` (an eval-mode MaskFormer on the CPU) to ``path`` with dynamic batch, height and width.

    Args:
        model: the model; its deformable attention is exported through ``grid_sample``.
        path: output ``.onnx`` file, written atomically (weights embedded; models over 2 GB are not supported).
        opset: ONNX opset (>= 16 for GridSample).
        example_size: (H, W) of the tracing example (multiples of the size divisibility; default 2 x 3 multiples).
        metadata: extra ``metadata_props`` entries.
        log: progress printer.
    """
    import onnx

    if opset < 16:
        raise ValueError(f"opset {opset} has no GridSample (deformable attention); use opset >= 16")
    multiple = input_size_multiple(model)
    height, width = example_size or (2 * multiple, 3 * multiple)
    if height % multiple or width % multiple:
        raise ValueError(f"example size {height}x{width} must be a multiple of {multiple}")
    wrapper = SegmentationOnnxModel(model).eval()
    example = torch.zeros(2, 3, height, width)  # batch 2: torch.export specializes dimensions of size 1
    dims = {0: torch.export.Dim("batch"), 2: multiple * torch.export.Dim("height_units"),
            3: multiple * torch.export.Dim("width_units")}
    start = time.monotonic()
    log("[export] tracing with torch.export (dynamic batch/height/width; a minute or more for large models)")
    with use_deform_attn_impl(model, "grid_sample"), traceable_hiera_windows(), torch.no_grad():
        # deferred runtime asserts instead of guards: a guard that sympy cannot prove for every size (e.g. timm's
        # DINOv3 RoPE turns a grid size into a float) would otherwise fix height/width at the example's values
        program = torch.export.export(wrapper, (example,), dynamic_shapes={"images": dims}, strict=False,
                                      prefer_deferred_runtime_asserts_over_guards=True)
    log(f"[export] traced in {time.monotonic() - start:.0f} s; translating to ONNX opset {opset}")
    onnx_program = torch.onnx.export(program, (example,), dynamo=True, opset_version=opset,
                                     input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), verbose=False)
    proto = onnx_program.model_proto
    _name_dynamic_dims(proto)
    for key, value in {**(metadata or {}), "mgfusion.size_divisibility": str(multiple)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    if proto.ByteSize() >= 2**31 - 1:
        raise ValueError("the ONNX model exceeds protobuf's 2 GB limit; export a smaller model")
    onnx.checker.check_model(proto)
    atomic_write_bytes(path, proto.SerializeToString())
    log(f"[export] wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB) in {time.monotonic() - start:.0f} s")


#: readable names of the graph's dynamic dimensions (fixed sizes keep their numbers)
_DIM_NAMES = {
    INPUT_NAME: ("batch", None, "height", "width"),
    "sem_seg": ("batch", None, "height", "width"),
    "pred_logits": ("batch", None, None),
    "pred_masks": ("batch", None, "height/4", "width/4"),
}


def _name_dynamic_dims(proto) -> None:
    """Give the inputs' and outputs' symbolic dimensions the names of the I/O contract (the exporter's are
    internal symbols such as ``s34`` or ``32*s39``); a dimension that came out fixed raises, naming it."""
    for value in [*proto.graph.input, *proto.graph.output]:
        names = _DIM_NAMES.get(value.name)
        if names is None:
            continue
        for index, (dim, name) in enumerate(zip(value.type.tensor_type.shape.dim, names)):
            if name is None:
                continue
            if not dim.dim_param or dim.dim_param.isdigit():
                fixed = dim.dim_param or dim.dim_value
                raise RuntimeError(f"ONNX {value.name} dimension {index} ({name}) came out fixed at {fixed}: the "
                                   "model's forward turns this size into a constant")
            dim.dim_param = name


def _bound(tolerance: float, reference: np.ndarray) -> float:
    """``tolerance`` x max(1, max |reference|): absolute for scores and probabilities, relative for large logits."""
    return tolerance * max(1.0, float(np.abs(reference).max()) if reference.size else 1.0)


def check_parity(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    images: Sequence[Tensor],
    *,
    tolerance: float = 1e-4,
) -> ParityResult:
    """Run the ONNX file in onnxruntime and the PyTorch model (its own forward, configured implementations) on the
    same images and compare every output.

    Args:
        model: the eval-mode MaskFormer the file was exported from.
        onnx_path: the exported file.
        images: uint8 (3, H, W) RGB tensors of one size (a multiple of the size divisibility).
        tolerance: bound on max |difference| / max(1, max |PyTorch output|) per output.

    Returns:
        the measured differences and bounds (check ``.ok``).
    """
    import onnxruntime as ort

    sizes = {tuple(im.shape) for im in images}
    if len(sizes) != 1 or images[0].dtype != torch.uint8 or images[0].dim() != 3 or images[0].shape[0] != 3:
        raise ValueError(f"parity images must be uint8 (3, H, W) tensors of one size, got shapes {sorted(sizes)}")
    height, width = images[0].shape[-2:]
    multiple = input_size_multiple(model)
    if height % multiple or width % multiple:
        raise ValueError(f"parity image size {height}x{width} is not a multiple of {multiple}")
    captured: dict[str, Tensor] = {}
    hook = model.transformer_decoder.register_forward_hook(
        lambda _m, _i, out: captured.update(pred_logits=out["pred_logits"], pred_masks=out["pred_masks"]))
    try:
        with torch.no_grad():
            results = model([{"image": im} for im in images])
    finally:
        hook.remove()
    reference = {
        "sem_seg": torch.stack([r["sem_seg"] for r in results]).float().cpu().numpy(),
        "pred_logits": captured["pred_logits"].float().cpu().numpy(),
        "pred_masks": captured["pred_masks"].float().cpu().numpy(),
    }
    session = ort.InferenceSession(os.fspath(onnx_path), providers=["CPUExecutionProvider"])
    batch = torch.stack(list(images)).float().numpy()
    outputs = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})))
    diffs, bounds = {}, {}
    for name in OUTPUT_NAMES:
        if outputs[name].shape != reference[name].shape:
            raise ValueError(f"ONNX output {name} has shape {outputs[name].shape}, PyTorch {reference[name].shape}")
        diffs[name] = float(np.abs(outputs[name] - reference[name]).max())
        bounds[name] = _bound(tolerance, reference[name])
    return ParityResult(size=(int(height), int(width)), batch=len(images), max_abs_diff=diffs, bound=bounds)


def parity_images(
    sizes: Sequence[Sequence[int]], multiple: int, *, image: str | os.PathLike | None = None, seed: int = 0
) -> list[list[Tensor]]:
    """Parity inputs: per (H, W) in ``sizes`` two random uint8 RGB images; with ``image``, that file (RGB, padded
    with zeros at the bottom/right to a multiple of ``multiple``) as a batch of one.

    Returns:
        a list of batches, each a list of uint8 (3, H, W) tensors of one size.
    """
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for size in sizes:
        height, width = (int(v) for v in size)
        if height <= 0 or width <= 0 or height % multiple or width % multiple:
            raise ValueError(f"check size {height}x{width} must be positive multiples of {multiple}")
        batches.append(list(torch.randint(0, 256, (2, 3, height, width), generator=generator, dtype=torch.uint8)))
    if image is not None:
        from detectron2.data.detection_utils import read_image

        if not os.path.isfile(image):
            raise FileNotFoundError(f"parity image {image} does not exist")
        rgb = torch.from_numpy(np.ascontiguousarray(read_image(os.fspath(image), format="RGB"))).permute(2, 0, 1)
        height, width = rgb.shape[-2:]
        padded = rgb.new_zeros((3, -(-height // multiple) * multiple, -(-width // multiple) * multiple))
        padded[:, :height, :width] = rgb
        batches.append([padded])
    if not batches:
        raise ValueError("no parity input: give at least one check size or an image")
    return batches


def describe_metadata(cfg_model: dict, metadata_obj) -> dict[str, str]:
    """``metadata_props`` for the ONNX file: class names, tasks, thresholds and the I/O contract (JSON strings)."""
    classes = list(getattr(metadata_obj, "stuff_classes", None) or getattr(metadata_obj, "thing_classes", None) or [])
    things = getattr(metadata_obj, "thing_dataset_id_to_contiguous_id", None)
    info = {
        "mgfusion.inputs": "images: float32 (batch, 3, height, width) RGB 0-255; height and width multiples of "
                           "mgfusion.size_divisibility (pad at the bottom/right, crop the outputs)",
        "mgfusion.outputs": "sem_seg (batch, K, height, width) class scores; pred_logits (batch, Q, K+1) class logits "
                            "(last = no object); pred_masks (batch, Q, height/4, width/4) mask logits",
        "mgfusion.class_names": json.dumps(classes),
        "mgfusion.thing_class_ids": json.dumps(sorted(things.values()) if things else []),
    }
    for key in ("num_classes", "num_queries", "semantic_on", "instance_on", "panoptic_on", "object_mask_threshold",
                "overlap_threshold", "test_topk_per_image"):
        if key in cfg_model:
            info[f"mgfusion.{key}"] = json.dumps(cfg_model[key])
    return info
