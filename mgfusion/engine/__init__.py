"""Training, evaluation wiring, checkpointing and launch, on detectron2's engine and Hydra configs.

>>> from hydra import compose, initialize_config_dir
>>> from mgfusion.engine import run
>>> with initialize_config_dir(config_dir=".../configs", version_base=None):
...     cfg = compose("train", overrides=["backbone=fusion_micro_d3s2", "solver=smoke_cpu", "output_dir=/tmp/run"])
>>> results = run(cfg)            # train; run(cfg with resume=true) continues; eval_only=true weights=PATH evaluates

Pieces (each usable on its own):

* :class:`Trainer` — hooks + :class:`AccumulatingAMPTrainer` (accumulation, CPU/CUDA autocast, clipping);
* :func:`build_optimizer` / :func:`build_param_groups` — AdamW groups (norm/embedding WD, backbone LR multiplier);
* :func:`warmup_poly`, :func:`warmup_multistep`, :func:`warmup_cosine` — LR schedules (``solver.lr_scheduler``);
* :class:`AtomicCheckpointer` — atomic, weights-only, strictly loaded checkpoints with clear errors and resume
  fallback;
* :mod:`.run_dir` — run-folder naming and the guards against overwriting or mis-resuming a run;
* :func:`evaluate` — the dataset's evaluator over every test set;
* :func:`create_ddp_model`, :func:`launch_workers` — DDP on GPU (NCCL) and CPU (gloo).
"""

from mgfusion.backbones.registry import MissingWeightsError
from mgfusion.utils.plugins import PluginImportError
from mgfusion.utils.registry import RegistryError

from .build import (
    build_backbone,
    build_model,
    describe_parameters,
    random_init_encoders,
)
from .checkpoint import (
    AtomicCheckpointer,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointUnsafeError,
    IncompatibleCheckpointError,
    read_checkpoint,
    to_weights_only,
)
from .config import DEVICES, micro_batch_size, resolve_device, resolve_seed
from .data import (
    ResumableTrainingSampler,
    build_test_loader,
    build_train_loader,
    load_datasets,
    register_datasets,
)
from .distributed import create_ddp_model, launch_workers
from .evaluation import evaluate, format_results, write_metrics_json
from .grad_clip import (
    CLIPPERS,
    GradientClipper,
    build_gradient_clipper,
    register_clipper,
)
from .lr_schedules import (
    build_lr_scheduler,
    warmup_cosine,
    warmup_multistep,
    warmup_poly,
)
from .optim import build_optimizer, build_param_groups, is_norm_module
from .precision import AMP_DTYPES, Precision, resolve_precision
from .run_dir import RunDirError
from .runner import EVAL_METRICS, FINAL_METRICS, run, run_worker
from .train_loop import AccumulatingAMPTrainer
from .trainer import Trainer

#: errors a user fixes from the message (missing data/weights, a run folder in the way, a mismatching checkpoint);
#: tools/train_net.py prints them without a traceback and exits with status 2.
USER_ERRORS = (CheckpointError, FileNotFoundError, RunDirError, MissingWeightsError, RegistryError, PluginImportError)

__all__ = [
    "AMP_DTYPES",
    "CLIPPERS",
    "DEVICES",
    "EVAL_METRICS",
    "FINAL_METRICS",
    "USER_ERRORS",
    "AccumulatingAMPTrainer",
    "AtomicCheckpointer",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointUnsafeError",
    "GradientClipper",
    "IncompatibleCheckpointError",
    "MissingWeightsError",
    "Precision",
    "ResumableTrainingSampler",
    "RunDirError",
    "Trainer",
    "build_backbone",
    "build_gradient_clipper",
    "build_lr_scheduler",
    "build_model",
    "build_optimizer",
    "build_param_groups",
    "build_test_loader",
    "build_train_loader",
    "create_ddp_model",
    "describe_parameters",
    "evaluate",
    "format_results",
    "is_norm_module",
    "launch_workers",
    "load_datasets",
    "micro_batch_size",
    "random_init_encoders",
    "read_checkpoint",
    "register_clipper",
    "register_datasets",
    "resolve_device",
    "resolve_precision",
    "resolve_seed",
    "run",
    "run_worker",
    "to_weights_only",
    "warmup_cosine",
    "warmup_multistep",
    "warmup_poly",
    "write_metrics_json",
]  # fmt: skip
