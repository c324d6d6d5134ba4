"""Speed of Mask2Former's head (pixel decoder + transformer decoder): mgfusion vs the original vs HuggingFace.

All three run the same configuration on identical multi-scale inputs (default: a 512x512 image, batch 2,
res2..res5 with 256 channels, 256-dim head, 6 deformable encoder layers, 9 decoder layers, 100 queries):

* ``mgfusion``: :class:`mgfusion.modeling.MSDeformAttnPixelDecoder` + ``MultiScaleMaskedTransformerDecoder``;
* ``original``: the Mask2Former modules of PyPI ``maskformer2==0.1`` (only its pixel decoder and transformer
  decoder classes; the package's top-level ``__init__`` is bypassed so nothing else is imported or registered;
  without its compiled CUDA op (never built on CPU machines) it runs its own pure-PyTorch deformable attention
  fallback);
* ``huggingface``: ``transformers``' ``Mask2FormerPixelDecoder`` + ``Mask2FormerTransformerModule`` + the class
  predictor of ``Mask2FormerForUniversalSegmentation``.

Timed: inference forward (eval, no_grad) and a training step (train mode, forward + backward of a scalar that
touches every layer's class logits and mask logits). Reports the median time, the ratio to the faster
reference, parameter counts and output shapes; ``--out`` writes JSON.

Install the references with ``pip install 'mgfusion[bench]'`` (see pyproject) or
``pip install transformers && pip install --no-deps --no-build-isolation maskformer2==0.1``.

Usage::

    python benchmarks/mask2former_speed.py [--device cpu|cuda] [--threads 2] [--repeats 5] [--out PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from detectron2.layers import ShapeSpec  # noqa: E402

from mgfusion.modeling import MSDeformAttnPixelDecoder, MultiScaleMaskedTransformerDecoder  # noqa: E402

NAMES = ["res2", "res3", "res4", "res5"]
STRIDES = [4, 8, 16, 32]
# Each runner maps the features dict to a list of (class logits (B, Q, K+1), mask logits (B, Q, H, W)), one pair
# per prediction (all layers in training, at least the last at inference).
Runner = Callable[[dict[str, Tensor]], list[tuple[Tensor, Tensor]]]


class HeadUnderTest(nn.Module):
    """A pixel decoder + transformer decoder pair behind one forward signature."""

    def __init__(self, pixel_decoder: nn.Module, transformer_decoder: nn.Module, run: Callable) -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.transformer_decoder = transformer_decoder
        self._run = run

    def forward(self, features: dict[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
        return self._run(self, features)


def build_mgfusion(args: argparse.Namespace, deform_attn_impl: str, all_layers: bool = False) -> HeadUnderTest:
    """mgfusion's head; ``all_layers`` makes inference return every layer's full-resolution masks too (as the
    references do), otherwise inference computes only the last layer's (all that inference needs)."""
    shapes = {n: ShapeSpec(channels=args.in_channels, stride=s) for n, s in zip(NAMES, STRIDES)}
    pixel_decoder = MSDeformAttnPixelDecoder(shapes, deform_attn_impl=deform_attn_impl)
    decoder = MultiScaleMaskedTransformerDecoder(
        in_channels=256, num_classes=args.num_classes, mask_dim=256, num_queries=args.queries
    )

    def run(head: HeadUnderTest, features: dict[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
        mask_features, multi_scale = head.pixel_decoder(features)
        out = head.transformer_decoder(multi_scale, mask_features, return_intermediate=all_layers or None)
        preds = list(out.get("aux_outputs", [])) + [out]
        return [(p["pred_logits"], p["pred_masks"]) for p in preds]

    head = HeadUnderTest(pixel_decoder, decoder, run)
    head.note = f"deform attn: {deform_attn_impl}" + ("; inference returns all layers" if all_layers else "")
    return head


def import_original_mask2former() -> types.ModuleType:
    """Import maskformer2's modules without running ``mask2former/__init__.py``.

    The package's ``__init__`` imports its datasets and evaluators (the latter need detectron2's compiled
    ``fast_eval_api``, absent here) and registers a ``MaskFormer`` meta-architecture that would clash with
    mgfusion's in detectron2's registry. A bare package object pointing at the installed directory lets us import
    only the two modules we need, so no stub of ``fast_eval_api`` is needed either.
    """
    spec = importlib.util.find_spec("mask2former")
    if spec is None or spec.submodule_search_locations is None:
        raise ModuleNotFoundError(
            "maskformer2 is not installed: pip install --no-deps --no-build-isolation maskformer2==0.1"
        )
    package = types.ModuleType("mask2former")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules.setdefault("mask2former", package)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mask2former.modeling.pixel_decoder import msdeformattn
        from mask2former.modeling.transformer_decoder import mask2former_transformer_decoder
    module = types.ModuleType("original")
    module.PixelDecoder = msdeformattn.MSDeformAttnPixelDecoder
    module.TransformerDecoder = mask2former_transformer_decoder.MultiScaleMaskedTransformerDecoder
    from mask2former.modeling.pixel_decoder.ops.functions import ms_deform_attn_func

    module.has_cuda_op = ms_deform_attn_func.MSDA is not None
    return module


def build_original(args: argparse.Namespace) -> HeadUnderTest:
    original = import_original_mask2former()
    shapes = {n: ShapeSpec(channels=args.in_channels, stride=s) for n, s in zip(NAMES, STRIDES)}
    pixel_decoder = original.PixelDecoder(
        shapes,
        transformer_dropout=0.0,
        transformer_nheads=8,
        transformer_dim_feedforward=1024,
        transformer_enc_layers=6,
        conv_dim=256,
        mask_dim=256,
        norm="GN",
        transformer_in_features=["res3", "res4", "res5"],
        common_stride=4,
    )
    decoder = original.TransformerDecoder(
        in_channels=256,
        mask_classification=True,
        num_classes=args.num_classes,
        hidden_dim=256,
        num_queries=args.queries,
        nheads=8,
        dim_feedforward=2048,
        dec_layers=9,
        pre_norm=False,
        mask_dim=256,
        enforce_input_project=False,
    )

    def run(head: HeadUnderTest, features: dict[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
        mask_features, _, multi_scale = head.pixel_decoder.forward_features(features)
        out = head.transformer_decoder(multi_scale, mask_features)
        preds = list(out["aux_outputs"]) + [out]
        return [(p["pred_logits"], p["pred_masks"]) for p in preds]

    head = HeadUnderTest(pixel_decoder, decoder, run)
    head.note = "pure-PyTorch fallback (no CUDA op)" if not original.has_cuda_op else "CUDA op"
    return head


def build_huggingface(args: argparse.Namespace) -> HeadUnderTest:
    import transformers
    from transformers import Mask2FormerConfig
    from transformers.models.mask2former import modeling_mask2former as hf

    config = Mask2FormerConfig(
        feature_size=256,
        mask_feature_size=256,
        hidden_dim=256,
        encoder_feedforward_dim=1024,
        encoder_layers=6,
        decoder_layers=10,  # 9 layers + the initial prediction, as in Mask2Former
        num_attention_heads=8,
        dim_feedforward=2048,
        dropout=0.0,
        pre_norm=False,
        enforce_input_projection=False,
        common_stride=4,
        num_queries=args.queries,
        num_labels=args.num_classes,
        feature_strides=STRIDES,
    )
    pixel_decoder = hf.Mask2FormerPixelDecoder(config, feature_channels=[args.in_channels] * 4)
    transformer = hf.Mask2FormerTransformerModule(in_features=256, config=config)
    transformer.class_predictor = nn.Linear(256, args.num_classes + 1)
    # HF initializes in PreTrainedModel.post_init (e.g. the deformable sampling offsets' ring); apply it here
    initializer = hf.Mask2FormerPreTrainedModel(config)
    pixel_decoder.apply(initializer._init_weights)
    transformer.apply(initializer._init_weights)

    def run(head: HeadUnderTest, features: dict[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
        pixel_out = head.pixel_decoder([features[n] for n in NAMES])
        dec = head.transformer_decoder(pixel_out.multi_scale_features, pixel_out.mask_features)
        logits = [head.transformer_decoder.class_predictor(h.transpose(0, 1)) for h in dec.intermediate_hidden_states]
        return list(zip(logits, dec.masks_queries_logits))

    head = HeadUnderTest(pixel_decoder, transformer, run)
    head.note = f"transformers {transformers.__version__}, pure PyTorch"
    return head


def make_features(args: argparse.Namespace, device: torch.device) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        n: torch.randn(args.batch, args.in_channels, args.size // s, args.size // s, generator=generator).to(device)
        for n, s in zip(NAMES, STRIDES)
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Runs one head's inference and training step and records their wall times."""

    def __init__(self, head: HeadUnderTest, features: dict[str, Tensor], args: argparse.Namespace, device) -> None:
        self.head, self.features, self.device = head, features, device
        self.autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
        self.forward_times: list[float] = []
        self.train_times: list[float] = []

    def inference(self) -> list[tuple[Tensor, Tensor]]:
        self.head.eval()
        with torch.no_grad(), self.autocast():
            return self.head(self.features)

    def train_step(self) -> list[tuple[Tensor, Tensor]]:
        self.head.train()
        self.head.zero_grad(set_to_none=True)
        with self.autocast():
            preds = self.head(self.features)
        loss = sum(logits.float().mean() + masks.float().mean() for logits, masks in preds)
        loss.backward()
        return preds

    def describe(self) -> dict:
        """Parameter count and output shapes (also a first warm-up run of both modes)."""
        eval_preds, train_preds = self.inference(), self.train_step()
        return {
            "params": sum(p.numel() for p in self.head.parameters()),
            "eval_output": [list(eval_preds[-1][0].shape), list(eval_preds[-1][1].shape)],
            "eval_predictions": len(eval_preds),
            "train_output": [list(train_preds[-1][0].shape), list(train_preds[-1][1].shape)],
            "train_predictions": len(train_preds),
        }

    def timed_round(self, record: bool) -> None:
        for fn, times in ((self.inference, self.forward_times), (self.train_step, self.train_times)):
            synchronize(self.device)
            start = time.perf_counter()
            fn()
            synchronize(self.device)
            if record:
                times.append(time.perf_counter() - start)


def _display_path(path: Path) -> str:
    """Path relative to the repository root when inside it (keeps results files machine-independent)."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def cpu_pressure() -> str | None:
    """Linux PSI line for CPU contention (other processes on a shared machine), if available."""
    path = Path("/proc/pressure/cpu")
    return path.read_text().splitlines()[0] if path.exists() else None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=512, help="image side (features at size / stride)")
    parser.add_argument("--in-channels", type=int, default=256, help="channels of res2..res5")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--num-classes", type=int, default=133)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bf16", action="store_true", help="run under bf16 autocast")
    parser.add_argument(
        "--impls",
        default="mgfusion,mgfusion-all-layers,mgfusion-grid_sample,original,huggingface",
        help="comma-separated subset",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mask2former_speed.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    builders: dict[str, Callable[[], HeadUnderTest]] = {
        "mgfusion": lambda: build_mgfusion(args, "embedding_bag"),
        "mgfusion-all-layers": lambda: build_mgfusion(args, "embedding_bag", all_layers=True),
        "mgfusion-grid_sample": lambda: build_mgfusion(args, "grid_sample"),
        "original": lambda: build_original(args),
        "huggingface": lambda: build_huggingface(args),
    }
    wanted = [name.strip() for name in args.impls.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in builders]
    if unknown:
        parser.error(f"unknown --impls {unknown}; valid: {sorted(builders)}")
    features = make_features(args, device)
    # implementations are timed round-robin, so a change in machine load affects all of them alike
    timers: dict[str, Timer] = {}
    results: dict[str, dict] = {}
    for name in wanted:
        torch.manual_seed(0)
        head = builders[name]().to(device)
        timers[name] = Timer(head, features, args, device)
        results[name] = timers[name].describe()
        results[name]["note"] = getattr(head, "note", "")
    pressure_before = cpu_pressure()
    for round_index in range(args.warmup + args.repeats):
        for timer in timers.values():
            timer.timed_round(record=round_index >= args.warmup)
    for name, timer in timers.items():
        results[name].update(
            forward_s=statistics.median(timer.forward_times),
            train_step_s=statistics.median(timer.train_times),
            forward_all_s=timer.forward_times,
            train_step_all_s=timer.train_times,
        )

    references = [n for n in ("original", "huggingface") if n in results]
    for key in ("forward", "train_step"):
        if references:
            best = min(results[n][key + "_s"] for n in references)
            for res in results.values():
                res[key + "_ratio_to_best_reference"] = res[key + "_s"] / best

    header = (
        f"{'implementation':<22}{'forward s':>11}{'ratio':>8}{'train s':>10}{'ratio':>8}{'params':>10}"
        "  eval outputs (last) | train outputs x predictions | note"
    )
    print(
        f"device {device}, {args.threads} threads, batch {args.batch}, {args.size}x{args.size}, "
        f"median of {args.repeats}"
    )
    print(header)
    print("-" * len(header))
    for name, res in results.items():
        fr = res.get("forward_ratio_to_best_reference", float("nan"))
        tr = res.get("train_step_ratio_to_best_reference", float("nan"))
        print(
            f"{name:<22}{res['forward_s']:>11.3f}{fr:>8.2f}{res['train_step_s']:>10.3f}{tr:>8.2f}"
            f"{res['params'] / 1e6:>9.2f}M  {res['eval_output']} x{res['eval_predictions']} | "
            f"{res['train_output']} x{res['train_predictions']} | {res['note']}"
        )
    report = {
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "config": {k: (_display_path(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "cpu_pressure_before": pressure_before,
        "cpu_pressure_after": cpu_pressure(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
