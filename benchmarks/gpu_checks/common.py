"""Plumbing shared by the gpu_check sections: sizes per mode, the run context, result rows, config composition,
trainers and a step loop that records losses, gradient norms and the GradScaler's decisions."""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from tqdm import tqdm

from mgfusion.engine import Precision, Trainer, register_datasets

ROOT = Path(__file__).resolve().parents[2]

#: the dry run's CPU GradScaler starts at 2**8 instead of 2**16, so that its few steps are applied (the back-off
#: from 2**16 skips about 8 steps of the micro model; the full run keeps the engine's scaler as it is)
DRY_RUN_INIT_SCALE = 2.0**8


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one mode (the dry run shrinks everything so that it runs in CI on 2 CPU cores)."""

    micro_image: int  # synthetic image side of the micro-model checks and of the study
    deform_shapes: tuple[tuple[int, int], ...]  # levels of the deformable-attention check
    deform_queries: int
    paper_model: tuple[str, ...]  # backbone/model overrides of the speed section
    train_crop: tuple[int, int]
    train_image: int  # synthetic image side the crops are cut from
    infer_size: tuple[int, int]
    train_iters: int
    warmup: int
    infer_images: int
    tuning_iters: int
    study_iters: int
    study_model: str
    metrics_batch: int
    metrics_shrink: int  # the metric inputs are average-pooled by this factor (1 = benchmarks/metrics_speed.py's)


FULL = Sizes(micro_image=128, deform_shapes=((32, 48), (16, 24), (8, 12)), deform_queries=500,
             paper_model=("backbone=fusion_d3s2", "model=mask2former"), train_crop=(512, 1024), train_image=1024,
             infer_size=(1024, 2048), train_iters=10, warmup=3, infer_images=10, tuning_iters=5, study_iters=300,
             study_model="mask2former", metrics_batch=8, metrics_shrink=1)
DRY_RUN = Sizes(micro_image=64, deform_shapes=((8, 12), (4, 6), (2, 3)), deform_queries=40,
                paper_model=("backbone=fusion_micro_d3s2", "model=mask2former_tiny"), train_crop=(64, 128),
                train_image=128, infer_size=(64, 128), train_iters=2, warmup=1, infer_images=2, tuning_iters=1,
                study_iters=4, study_model="mask2former_tiny", metrics_batch=1, metrics_shrink=8)


@dataclass
class Context:
    """What every section needs: the device, the sizes, a scratch folder and the command-line options."""

    device: torch.device
    sizes: Sizes
    mode: str  # full | quick | dry_run
    scratch: Path
    args: argparse.Namespace
    correctness: list[dict[str, Any]] = field(default_factory=list)
    speed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dry_run(self) -> bool:
        return self.mode == "dry_run"

    @property
    def data_root(self) -> Path:
        return self.scratch / "data"


def result(name: str, ok: bool | None, measured: Any = None, tolerance: float | None = None, detail: str = "",
           seconds: float | None = None) -> dict[str, Any]:
    """One correctness row; ``ok=None`` is a skip."""
    verdict = "skip" if ok is None else ("pass" if ok else "fail")
    return {"name": name, "verdict": verdict, "measured": measured, "tolerance": tolerance, "detail": detail,
            "seconds": None if seconds is None else round(seconds, 3)}


def rel_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max |value - reference| / max(1, max |reference|), in float64 on the CPU."""
    value, reference = value.detach().double().cpu(), reference.detach().double().cpu()
    if value.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(value.shape)} vs {tuple(reference.shape)}")
    return float((value - reference).abs().max() / reference.abs().max().clamp(min=1.0))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- environment ----------------------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict[str, Any]:
    """GPU name, capability, memory, NVIDIA driver, torch / CUDA / cuDNN / NCCL versions and the TF32 settings."""
    env: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
                           "cuda_available": torch.cuda.is_available()}
    if device.type != "cuda":
        return env
    props = torch.cuda.get_device_properties(device)
    env.update({
        "gpu": props.name, "capability": f"{props.major}.{props.minor}", "memory_GB": round(props.total_memory / 2**30, 1),
        "gpu_count": torch.cuda.device_count(), "driver": _nvidia_driver(), "cudnn": torch.backends.cudnn.version(),
        "nccl": _nccl_version(), "bf16_supported": torch.cuda.is_bf16_supported(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    })  # fmt: skip
    return env


def _nvidia_driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        return out.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError) as e:
        return f"unknown (nvidia-smi: {type(e).__name__})"


def _nccl_version() -> str:
    try:
        version = torch.cuda.nccl.version()
        return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    except (AttributeError, RuntimeError) as e:
        return f"unknown ({type(e).__name__})"


# ---- configs and trainers -------------------------------------------------------------------------------------------
def compose_train(overrides: list[str]) -> DictConfig:
    """configs/train.yaml composed with ``overrides``, as tools/train_net.py composes it."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        return compose("train", overrides=overrides)


def micro_overrides(ctx: Context, *extra: str, model: str = "mask2former_tiny", device: str | None = None
                    ) -> list[str]:
    """The micro fused Mask2Former (``fusion_micro_d3s2``) on the synthetic panoptic data at ``micro_image`` pixels,
    batch 2, on ``device`` (default: the checked device)."""
    return ["backbone=fusion_micro_d3s2", f"model={model}", "dataset=synthetic_panoptic", "solver=smoke_cpu",
            "runtime=smoke", f"device={device or ctx.device}", f"dataset.register.root={ctx.data_root}",
            f"dataset.register.image_size={ctx.sizes.micro_image}", "dataset.register.num_train=8",
            "dataset.register.num_val=2", "solver.ims_per_batch=2", "runtime.tensorboard=false", *extra]


def amp_overrides(dtype: str) -> list[str]:
    """``solver.amp`` overrides of fp32 / fp16 / bf16 training."""
    if dtype == "fp32":
        return ["solver.amp.enabled=false"]
    return ["solver.amp.enabled=true", f"solver.amp.dtype={'float16' if dtype == 'fp16' else 'bfloat16'}"]


def cpu_fp16_stand_in(ctx: Context, dtype: str) -> Precision | None:
    """The dry run's fp16 policy: ``solver.amp`` refuses fp16 on a CPU (it has no loss scaling there), so the dry run
    installs CPU fp16 autocast + a CPU GradScaler into the trainer to exercise the same GradScaler code path."""
    if ctx.device.type == "cpu" and dtype == "fp16":
        return Precision("cpu", torch.float16)
    return None


def step_object(trainer: Trainer):
    """The engine's ``AccumulatingAMPTrainer`` inside ``trainer`` (its AMP policy, GradScaler and clipper)."""
    return trainer._trainer


def build_trainer(overrides: list[str], output_dir: Path, *, precision: Precision | None = None,
                  seed: int = 0) -> Trainer:
    """The engine's ``Trainer`` of the composed config, writing to ``output_dir`` and resumed when ``resume=true`` is
    among the overrides; ``precision`` replaces the config's AMP policy (the dry run's CPU fp16 stand-in, with a
    GradScaler starting at ``DRY_RUN_INIT_SCALE``)."""
    cfg = compose_train([*overrides, f"output_dir={output_dir}"])
    register_datasets(cfg.dataset)
    seed_all_rng(seed)
    trainer = Trainer(cfg, output_dir=str(output_dir), seed=seed)
    if precision is not None:
        trainer.precision = precision
        step = step_object(trainer)
        step.precision = precision
        step.grad_scaler = torch.amp.GradScaler(precision.device_type, init_scale=DRY_RUN_INIT_SCALE)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = bool(cfg.runtime.cudnn_benchmark)  # as mgfusion.engine.run sets it
    trainer.resume_or_load(resume=bool(cfg.resume))
    return trainer


def trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def grad_norm(params: list[torch.nn.Parameter]) -> float:
    """L2 norm of the current gradients (inf/nan when one is not finite); 0 without gradients."""
    grads = [p.grad.detach().float() for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


class GradNormProbe:
    """Takes the step's clipper slot (called after AMP unscaling, before clipping): records the unscaled, unclipped
    gradient norms of the whole model and of its pixel decoder, then runs the real clipper, if any."""

    def __init__(self, clipper: Callable[[], Any] | None, model: torch.nn.Module) -> None:
        self.clipper = clipper
        self.params = [p for _, p in trainable(model)]
        self.decoder_params = [p for p in model.pixel_decoder.parameters() if p.requires_grad]
        self.total = self.pixel_decoder = float("nan")

    def __call__(self) -> Any:
        self.total, self.pixel_decoder = grad_norm(self.params), grad_norm(self.decoder_params)
        return self.clipper() if self.clipper is not None else None

    def __str__(self) -> str:
        return str(self.clipper) if self.clipper is not None else "no gradient clipping"


@dataclass
class StepRecord:
    loss: float
    grad_norm: float  # unscaled, before clipping
    pixel_decoder_grad_norm: float
    loss_scale: float | None
    skipped: bool  # the GradScaler found inf/nan gradients and skipped the optimizer step


def run_steps(trainer: Trainer, steps: int, storage: EventStorage, start: int = 0, *, until_applied: int = 0,
              desc: str | None = None) -> list[StepRecord]:
    """Up to ``steps`` optimizer steps of ``trainer``, recording loss, gradient norms and GradScaler state; with
    ``until_applied``, stop once that many steps were applied (not skipped by the GradScaler)."""
    step = step_object(trainer)
    if not isinstance(step.clipper, GradNormProbe):
        step.clipper = GradNormProbe(step.clipper, trainer.model)
    probe, scaler = step.clipper, step.grad_scaler
    records: list[StepRecord] = []
    for it in tqdm(range(start, start + steps), desc=desc, disable=desc is None, leave=False):
        if until_applied and sum(not r.skipped for r in records) >= until_applied:
            break
        storage.iter = trainer.iter = it
        scale_before = float(scaler.get_scale()) if scaler is not None else None
        trainer.run_step()
        scale_after = float(scaler.get_scale()) if scaler is not None else None
        records.append(StepRecord(
            loss=float(storage.history("total_loss").latest()), grad_norm=probe.total,
            pixel_decoder_grad_norm=probe.pixel_decoder, loss_scale=scale_after,
            skipped=scaler is not None and scale_after < scale_before,
        ))  # fmt: skip
    sync(trainer.device)
    return records
