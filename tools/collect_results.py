#!/usr/bin/env python
"""Reproduce the paper's analysis tables from finished training runs and profiles (docs/analysis.md).

    # Table 6 (RQ3): stride sweep x settings, EF-chosen and best stride, the gap between them
    python tools/collect_results.py table6 outputs/multirun/cityscapes_instance --profile outputs/profile --out tables
    # RQ4 (Table 7, right): the auxiliary's per-stride EF against the fused runs' AP gain over the master alone
    python tools/collect_results.py rq4 --profile outputs/profile --fused outputs/multirun/cityscapes_instance \
        --where backbone.train_master=true --baseline outputs/cityscapes_instance/dinov3_vitb16/default --out tables
    # §A.1: metric hyper-parameter sensitivity of a profile sweep (one folder per job)
    python tools/collect_results.py sensitivity outputs/profile_sweep --out tables
    # §A.2: the same encoders profiled on two datasets
    python tools/collect_results.py cross-dataset outputs/profile_cityscapes outputs/profile_coco --out tables

Each command prints its Markdown table and, with ``--out DIR``, writes ``<name>.md``, ``<name>.csv`` (and
companion CSVs) and ``<name>.png`` there; existing files are only replaced with ``--overwrite``. Every table names
the run folders, configs and profiles it came from. Exit status 2 with a message on input it cannot analyse.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mgfusion, also when not installed

from mgfusion.analysis import (
    AnalysisError,
    analyse_sensitivity,
    auxiliary_ef_from_profile,
    build_stride_grid,
    compare_datasets,
    ef_gain_from_runs,
    find_profile_folders,
    load_profile,
    load_run,
    load_runs,
    plots,
    select_runs,
)
from mgfusion.analysis.render import write_table_files
from mgfusion.analysis.stride_grid import AUX_KEY, STRIDE_KEY


def _pairs(items: Sequence[str] | None, option: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AnalysisError(f"{option} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _emit(args: argparse.Namespace, name: str, markdown: str, csvs: dict[str, str],
          draw: Callable[[Path], None]) -> None:
    """Print the Markdown (plus the command that made it); with --out write ``name``.md, the CSVs and ``name``.png."""
    command = "python tools/collect_results.py " + " ".join(shlex.quote(a) for a in args.argv)
    markdown += f"\nCommand: `{command}`\n"
    written = [] if args.out is None else write_table_files(
        args.out, {f"{name}.md": markdown, **csvs}, {f"{name}.png": draw}, overwrite=args.overwrite)
    print(markdown)
    if written:
        print("[collect] wrote " + ", ".join(str(p) for p in written))


def _runs(args: argparse.Namespace, roots: Sequence[Path]):
    runs, unfinished = load_runs(roots, results=args.results, test_set=args.test_set, allow_missing=args.allow_missing)
    where = _pairs(args.where, "--where")
    return (select_runs(runs, where) if where else runs), unfinished


def cmd_table6(args: argparse.Namespace) -> None:
    runs, unfinished = _runs(args, args.runs)
    ef = None
    profile = load_profile(args.profile) if args.profile else None
    if profile is not None:
        auxiliaries = {r.flat[AUX_KEY] for r in runs if AUX_KEY in r.flat}
        ef = auxiliary_ef_from_profile(profile, auxiliaries, _pairs(args.profile_encoder, "--profile-encoder"))
    grid = build_stride_grid(runs, metrics=args.metric, auxiliary_ef=ef,
                             profile=str(profile.folder) if profile else None, stride_key=args.stride_key,
                             ignore_keys=args.ignore_key or (), allow_missing=args.allow_missing,
                             unfinished=unfinished)
    _emit(args, "table6", grid.markdown(args.digits), {"table6.csv": grid.csv(), "table6_gaps.csv": grid.gaps_csv()},
          lambda p: plots.plot_stride_grid(grid, p))


def cmd_rq4(args: argparse.Namespace) -> None:
    runs, unfinished = _runs(args, args.fused)
    result = ef_gain_from_runs(load_profile(args.profile), runs, load_run(args.baseline, results=args.results,
                                                                          test_set=args.test_set),
                               encoder=args.encoder, metric=args.metric, stride_key=args.stride_key,
                               ignore_keys=args.ignore_key or (), allow_missing=args.allow_missing)
    md = result.markdown(args.digits)
    if unfinished:
        md += "\nUnfinished runs left out:\n" + "".join(f"- `{f}`\n" for f, _ in unfinished)
    _emit(args, "rq4_ef_gain", md, {"rq4_ef_gain.csv": result.csv(), "rq4_correlation.csv": result.correlation_csv()},
          lambda p: plots.plot_ef_gain(result, p))


def cmd_sensitivity(args: argparse.Namespace) -> None:
    folders = [f for root in args.profiles for f in find_profile_folders(root)]
    profiles = [load_profile(f) for f in dict.fromkeys(folders)]
    baseline = load_profile(args.baseline) if args.baseline else None
    result = analyse_sensitivity(profiles, baseline, metrics=args.metrics)
    _emit(args, "sensitivity", result.markdown(),
          {"sensitivity.csv": result.csv(), "sensitivity_recommendations.csv": result.recommendations_csv()},
          lambda p: plots.plot_sensitivity(result, p))


def cmd_cross_dataset(args: argparse.Namespace) -> None:
    result = compare_datasets(load_profile(args.profile_a), load_profile(args.profile_b), metrics=args.metrics)
    _emit(args, "cross_dataset", result.markdown(), {"cross_dataset.csv": result.csv()},
          lambda p: plots.plot_cross_dataset(result, p))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None, help="write the Markdown, CSV and PNG files into this folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--where", action="append", metavar="KEY=VALUE",
                   help="keep only runs whose config has this value (repeatable), e.g. backbone.train_master=true")
    p.add_argument("--ignore-key", action="append", metavar="KEY",
                   help="a config key whose differences between runs are accepted (repeatable)")
    p.add_argument("--allow-missing", action="store_true",
                   help="tabulate what is there when runs are unfinished or (setting, stride) cells missing")
    p.add_argument("--results", choices=("auto", "final", "eval"), default="auto",
                   help="final_metrics.json (training), eval_metrics.json (eval_only), or auto: final if present")
    p.add_argument("--test-set", default=None, help="which test set, when the runs evaluated several")
    p.add_argument("--stride-key", default=STRIDE_KEY, help=f"the config key of the injection stride ({STRIDE_KEY})")
    p.add_argument("--digits", type=int, default=1, help="decimals of the metric values in the Markdown table")


def build_parser() -> argparse.ArgumentParser:
    """The command line (one subcommand per table)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("table6", help="stride sweep x settings with the EF-chosen and best stride (paper Table 6)")
    p.add_argument("runs", nargs="+", type=Path, help="multirun folder(s) or run folders of fused runs, one dataset")
    p.add_argument("--profile", type=Path, default=None, help="profile folder with each setting's auxiliary")
    p.add_argument("--profile-encoder", action="append", metavar="CONFIG_NAME=PROFILE_NAME",
                   help="the auxiliary's name in the profile when it differs from backbone.auxiliary.name")
    p.add_argument("--metric", action="append", default=None,
                   help="AP, PQ, mIoU or task/key (repeatable; default: those of AP/PQ/mIoU every run has)")
    _run_options(p)
    _common(p)
    p.set_defaults(func=cmd_table6)

    p = sub.add_parser("rq4", help="per-stride EF vs the fused runs' gain over the master alone (paper Table 7)")
    p.add_argument("--profile", type=Path, required=True, help="profile folder holding the auxiliary's EF")
    p.add_argument("--fused", type=Path, nargs="+", required=True, help="fused runs of one setting (multirun folder)")
    p.add_argument("--baseline", type=Path, required=True, help="the run folder of the master encoder alone")
    p.add_argument("--encoder", default=None, help="the encoder's name in the profile (default: the auxiliary)")
    p.add_argument("--metric", default="AP", help="AP, PQ, mIoU or task/key (default AP)")
    _run_options(p)
    _common(p)
    p.set_defaults(func=cmd_rq4, digits=2)

    p = sub.add_parser("sensitivity", help="metric hyper-parameter sensitivity of a profile sweep (paper §A.1)")
    p.add_argument("profiles", nargs="+", type=Path, help="the sweep's folder(s) (one profile folder per job)")
    p.add_argument("--baseline", type=Path, default=None,
                   help="the default-setting profile (default: the job whose metric settings are the defaults)")
    p.add_argument("--metrics", nargs="+", default=["SC", "EF"], help="profile metrics to compare (default SC EF)")
    _common(p)
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("cross-dataset", help="two profiles of the same encoders on two datasets (paper §A.2)")
    p.add_argument("profile_a", type=Path)
    p.add_argument("profile_b", type=Path)
    p.add_argument("--metrics", nargs="+", default=["SC", "EF"], help="profile metrics to compare (default SC EF)")
    _common(p)
    p.set_defaults(func=cmd_cross_dataset)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        args.func(args)
    except AnalysisError as e:
        print(f"[collect] error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
