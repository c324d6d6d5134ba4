"""Config keys of a training run that change neither what is trained nor what is evaluated (the output folder,
resuming, the process layout, logging). The trainer lets them differ when a run is resumed, and the analysis tools
never group runs into settings by them: one list for both."""

from __future__ import annotations

__all__ = ["NON_RESULT_KEYS"]

NON_RESULT_KEYS = frozenset({
    "resume", "overwrite", "output_dir",
    "runtime.num_workers", "runtime.log_period", "runtime.tensorboard", "runtime.gather_metric_period",
    "runtime.num_gpus", "runtime.num_machines", "runtime.machine_rank", "runtime.dist_url",
    "runtime.dist_timeout_minutes", "runtime.find_unused_parameters", "runtime.cudnn_benchmark",
})  # fmt: skip
