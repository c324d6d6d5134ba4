#!/usr/bin/env python
"""Per-class AP of several runs side by side, grouped as in the paper's Table 4.

    python tools/class_table.py outputs/cityscapes_instance/dinov3_vitb16 outputs/.../fusion_d3s2 [--names D3 D3S2] \
        [--groups cityscapes] [--task segm] [--out table.md]

Each run folder must hold ``final_metrics.json`` (training) or ``eval_metrics.json`` (``eval_only``) written by
tools/train_net.py. Prints a Markdown table (boundary-sensitive vs large rigid classes, group and overall averages).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mgfusion.evaluation import CLASS_GROUPS, grouped_class_markdown  # noqa: E402
from mgfusion.utils.io import atomic_write_text  # noqa: E402


def load_results(run: Path) -> dict:
    """The results dict of a run folder (eval_metrics.json preferred over final_metrics.json) or a metrics JSON."""
    candidates = [run] if run.is_file() else [run / "eval_metrics.json", run / "final_metrics.json"]
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text())["results"]
    raise FileNotFoundError(f"no eval_metrics.json or final_metrics.json in {run}")


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders (or metrics JSON files)")
    p.add_argument("--names", nargs="*", default=None, help="column names (default: folder names)")
    p.add_argument("--groups", default="cityscapes", choices=sorted(CLASS_GROUPS))
    p.add_argument("--task", default="segm")
    p.add_argument("--metric", default="AP")
    p.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    names = args.names or [r.name if r.is_dir() else r.parent.name for r in args.runs]
    if len(names) != len(args.runs):
        p.error(f"--names has {len(names)} entries for {len(args.runs)} runs")
    table = grouped_class_markdown({n: load_results(r) for n, r in zip(names, args.runs)}, args.groups,
                                   task=args.task, metric=args.metric)
    print(table)
    if args.out:
        atomic_write_text(args.out, table + "\n")
    return table


if __name__ == "__main__":
    main()
