"""The paper's analyses from finished run folders and profiles (docs/analysis.md): the injection-stride grid
(Table 6), EF against the fused runs' gains (RQ4), metric hyper-parameter sensitivity (§A.1) and cross-dataset
consistency (§A.2). Pure functions over loaded records (:mod:`.runs`, :mod:`.profiles`) plus Markdown / CSV /
figure output; ``tools/collect_results.py`` is the command line."""

from .cross_dataset import CrossDataset, compare_datasets
from .ef_gain import EfGain, correlate_ef_gain, ef_gain_from_runs
from .errors import AnalysisError, UnfinishedRunError
from .profiles import Profile, find_profile_folders, load_profile
from .runs import TrainingRun, find_run_folders, load_run, load_runs, select_runs
from .sensitivity import Sensitivity, analyse_sensitivity, default_profile
from .stats import RankCorrelation, rank_correlation
from .stride_grid import (
    StrideGrid,
    auxiliary_ef_from_profile,
    build_stride_grid,
    group_settings,
)

__all__ = [
    "AnalysisError", "CrossDataset", "EfGain", "Profile", "RankCorrelation", "Sensitivity", "StrideGrid",
    "TrainingRun", "UnfinishedRunError", "analyse_sensitivity", "auxiliary_ef_from_profile", "build_stride_grid",
    "compare_datasets", "correlate_ef_gain", "default_profile", "ef_gain_from_runs", "find_profile_folders",
    "find_run_folders", "group_settings", "load_profile", "load_run", "load_runs", "rank_correlation",
    "select_runs",
]
