"""Speed of the full label-free SC + EF suite on a SAM2 Hiera-B+-shaped pyramid of a 512x1024 photo, side by side
with the authors' metric functions when a checkout of their repository is given.

Inputs: levels (C x H x W) 112x128x256, 224x64x128, 448x32x64, 896x16x32 (strides 4, 8, 16, 32) of a real CC0 photo
(scikit-image's ``coffee``, resized to 512x1024; odd batch entries mirrored). Feature kinds: ``structured``
(random projections of the photo's multi-scale colours + smooth random fields + noise, closer to encoder features;
the default) and ``noise`` (i.i.d. Gaussian). Everything is seeded, so every run sees identical inputs.

``--reference PATH`` (a local checkout of github.com/gyc-code/metric-guided-fusion, commit d90aea9; never part of
this repository) times the authors' functions and mgfusion's on the same inputs in the same process, interleaved
(the order alternates every repeat), under the same thread limits (``torch.set_num_threads`` and threadpoolctl for
numpy/scikit-learn), and prints seconds per image and the ratio for each component and for the suite:

* SFC: theirs ``vfm_metric_batch.compute_SFC`` per level; ours the channel-L2 map + ``structured_feature_contrast``.
* SCS: theirs ``vfm_metric_batch.compute_SCS`` (numpy/scikit-learn) per level; ours
  ``compute_pyramid_metrics(..., parts=("SC",))`` (SCS and the SFC, which costs < 1 % of it).
* EF: theirs ``vfm_metric_batch_fastter.compute_FCD_for_stages_fast`` (the batched EF their model calls) over the 4
  levels; ours ``compute_pyramid_metrics(..., parts=("EF",))``.
* suite: theirs = SFC + SCS + EF as above; ours ``compute_pyramid_metrics`` (SC + EF, sharing one PCA per level).

Only these pure functions of the authors' files are run: the two files are executed as standalone modules (their
package ``__init__`` imports detectron2 and is not loaded) and nothing of theirs writes files. One edit is made to
their source text before executing it, because their EF module cannot run on a CPU otherwise: in
``_minmax_in_mask`` the hard-coded ``.cuda()`` becomes ``.to(mask.device)`` (a no-op on the features' device; no
value changes). It also reports the largest absolute difference per component between the two implementations on
these inputs (their EF is rounded to 2 decimals by their function; their SCS draws one random stream for the whole
batch, ours one per image).

Without ``--reference`` it prints mgfusion's absolute times only. Run it on an otherwise idle machine: with other
processes on the cores, multi-threaded timings of both sides become erratic (it warns when the load is high). The JSON (``--out``) records the inputs, thread
count, machine, load average, library versions, mgfusion's commit, the reference commit, every timing, the ratios and
the differences, and the command to rerun it. The README's benchmark table quotes the ratio; rerun with

    python benchmarks/metrics_speed.py --reference /path/to/metric-guided-fusion --threads 2

``--large`` adds one OS4 level of a 1024x2048 image (256 channels) with its time and peak resident-memory increase.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgfusion.metrics import compute_pyramid_metrics, resolve_config
from mgfusion.metrics.primitives import channel_l2
from mgfusion.metrics.structure import structured_feature_contrast
from mgfusion.utils.bench import format_table, write_results

LEVELS = {4: 112, 8: 224, 16: 448, 32: 896}
IMAGE_HW = (512, 1024)
COMPONENTS = ("SFC", "SCS", "EF")
REFERENCE_COMMIT = "d90aea9"
_CUDA_FIX = (".cuda()", ".to(mask.device)")  # the one edit to the authors' EF module (see the module docstring)


def photo(batch: int) -> torch.Tensor:
    """``(B,3,512,1024)`` uint8: scikit-image's coffee photo (CC0) resized, mirrored for odd batch entries."""
    from skimage import data

    img = torch.from_numpy(data.coffee()).permute(2, 0, 1)[None].float()
    img = F.interpolate(img, size=IMAGE_HW, mode="bilinear", antialias=True, align_corners=False)
    imgs = [img.flip(-1) if i % 2 else img for i in range(batch)]
    return torch.cat(imgs).round().clamp(0, 255).to(torch.uint8)


def pyramid(kind: str, images: torch.Tensor, seed: int = 0) -> dict[int, torch.Tensor]:
    """SAM2-shaped float32 features ``{stride: (B,C,H/s,W/s)}`` of the given kind (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    b = images.shape[0]
    rgb = images.float() / 255.0
    out = {}
    for stride, c in LEVELS.items():
        h, w = IMAGE_HW[0] // stride, IMAGE_HW[1] // stride
        if kind == "noise":
            out[stride] = torch.randn(b, c, h, w, generator=gen)
            continue
        base = F.interpolate(rgb, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        descr = [base] + [F.avg_pool2d(base, k, 1, k // 2, count_include_pad=False) for k in (3, 5, 9)]
        field = torch.randn(b, 8, h // 4 + 1, w // 4 + 1, generator=gen)
        descr.append(F.interpolate(field, size=(h, w), mode="bicubic", align_corners=False))
        x = torch.cat(descr, dim=1)
        mix = torch.randn(c, x.shape[1], generator=gen)
        out[stride] = torch.einsum("oc,bchw->bohw", mix, x) + 0.3 * torch.randn(b, c, h, w, generator=gen)
    return out


# ------------------------------------------------------------------------------------------------ the two sides


class Ours:
    """mgfusion's components (``variant``), each returning ``{stride: (B,) tensor}``."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.cfg = resolve_config(variant)

    def sfc(self, feats, images):
        cfg = self.cfg
        return {s: structured_feature_contrast(channel_l2(f), grid=cfg.sfc_grid, min_cell=cfg.sfc_min_cell,
                                               intra_floor=cfg.sfc_intra_floor) for s, f in feats.items()}

    def scs(self, feats, images):
        out = compute_pyramid_metrics(feats, None, variant=self.variant, parts=("SC",))
        return {s: m["SCS"] for s, m in out.items()}

    def ef(self, feats, images):
        out = compute_pyramid_metrics(feats, images, variant=self.variant, parts=("EF",))
        return {s: m["EF"] for s, m in out.items()}

    def suite(self, feats, images):
        return compute_pyramid_metrics(feats, images, variant=self.variant)


def _run_file(path: Path, name: str, edit: tuple[str, str] | None = None) -> types.ModuleType:
    """Execute one source file of the authors' repository as a standalone module (optionally with one edit)."""
    source = path.read_text(encoding="utf-8")
    if edit is not None:
        if source.count(edit[0]) != 1:
            raise SystemExit(f"{path}: expected exactly one {edit[0]!r} to replace (is this commit "
                             f"{REFERENCE_COMMIT}?), found {source.count(edit[0])}")
        source = source.replace(*edit)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - the user's own checkout
    return module


class Authors:
    """The authors' metric functions loaded from a checkout, each returning ``{stride: (B,) tensor}``."""

    def __init__(self, root: Path) -> None:
        src = root / "mask2former"
        for fname in ("vfm_metric_batch.py", "vfm_metric_batch_fastter.py"):
            if not (src / fname).is_file():
                raise SystemExit(f"--reference {root}: {src / fname} not found; pass a checkout of "
                                 f"github.com/gyc-code/metric-guided-fusion (commit {REFERENCE_COMMIT})")
        self.root = root
        self.batch = _run_file(src / "vfm_metric_batch.py", "authors_vfm_metric_batch")
        self.fast = _run_file(src / "vfm_metric_batch_fastter.py", "authors_vfm_metric_batch_fastter", _CUDA_FIX)
        self.commit = _git(["rev-parse", "HEAD"], root)

    def sfc(self, feats, images):
        return {s: self.batch.compute_SFC(f) for s, f in feats.items()}

    def scs(self, feats, images):
        return {s: self.batch.compute_SCS(f) for s, f in feats.items()}

    def ef(self, feats, images):
        names = {f"res{i + 2}": s for i, s in enumerate(feats)}  # their stage names, strides 4..32
        out = self.fast.compute_FCD_for_stages_fast({n: feats[s] for n, s in names.items()}, images)
        return {names[n]: v for n, v in out.items()}


# -------------------------------------------------------------------------------------------------- measurement


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _timed(fn: Callable, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _table_rows(rows: list[dict], with_reference: bool) -> list[dict]:
    table = []
    for row in rows:
        for comp, entry in row["components"].items():
            line = {"kind": row["kind"], "batch": row["batch"], "component": comp,
                    "ours s/img": entry["ours_s_per_image"]}
            if with_reference:
                diff = row["max_abs_difference"].get(comp)
                line.update({"theirs s/img": entry["theirs_s_per_image"], "ratio": f"{entry['ratio']:.1f}x",
                             "ratio of fastest": f"{entry['ratio_of_fastest']:.1f}x",
                             "max abs diff": "" if diff is None else f"{diff:.2g}"})
            table.append(line)
    return table


def side_by_side(ours: Ours, authors: Authors | None, feats, images, repeats: int) -> dict:
    """Interleaved timings (seconds per call) of every component on both sides, plus ours' suite."""
    sides = {"ours": ours} if authors is None else {"ours": ours, "theirs": authors}
    times = {side: {c: [] for c in COMPONENTS} for side in sides}
    times["ours"]["suite"] = []
    outputs: dict[str, dict] = {side: {} for side in sides}
    for rep in range(repeats + 1):  # repeat 0 is the warm-up (caches, allocator, lazy imports)
        order = list(sides) if rep % 2 == 0 else list(sides)[::-1]
        for comp in COMPONENTS:
            for side in order:
                seconds, out = _timed(getattr(sides[side], comp.lower()), feats, images)
                outputs[side][comp] = out
                if rep:
                    times[side][comp].append(seconds)
        seconds, suite = _timed(ours.suite, feats, images)
        outputs["ours"]["suite"] = suite
        if rep:
            times["ours"]["suite"].append(seconds)
    if authors is not None:
        times["theirs"]["suite"] = [sum(times["theirs"][c][i] for c in COMPONENTS) for i in range(repeats)]
    return {"times": times, "outputs": outputs}


def max_differences(outputs: dict) -> dict[str, float]:
    """Largest |ours - theirs| per component over images and levels (ours from the full suite)."""
    suite, theirs = outputs["ours"]["suite"], outputs["theirs"]
    return {c: max(float((suite[s][c].double() - theirs[c][s].double().cpu()).abs().max()) for s in suite)
            for c in COMPONENTS}


def large_level(variant: str) -> dict[str, float]:
    """Time and peak-RSS increase (MB) of the full suite on an OS4 level of a 1024x2048 image, C = 256."""
    from skimage import data

    img = torch.from_numpy(data.coffee()).permute(2, 0, 1)[None].float()
    img = F.interpolate(img, size=(1024, 2048), mode="bilinear", antialias=True, align_corners=False)
    img = img.round().clamp(0, 255).to(torch.uint8)
    feats = torch.randn(1, 256, 256, 512, generator=torch.Generator().manual_seed(0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    compute_pyramid_metrics({4: feats}, img, variant=variant)
    seconds = time.perf_counter() - t0
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024.0
    return {"variant": variant, "seconds": seconds, "peak_rss_increase_mb": peak_mb,
            "features_mb": feats.numel() * 4 / 2**20}


def _row(kind: str, batch: int, res: dict, with_reference: bool) -> dict:
    times = res["times"]
    row: dict = {"kind": kind, "batch": batch, "components": {}}
    for comp in (*COMPONENTS, "suite"):
        ours = [t / batch for t in times["ours"][comp]]
        entry = {"ours_s_per_image": statistics.median(ours), "ours_all": ours}
        if with_reference:
            theirs = [t / batch for t in times["theirs"][comp]]
            entry.update(theirs_s_per_image=statistics.median(theirs), theirs_all=theirs,
                         ratio=statistics.median(theirs) / statistics.median(ours),
                         ratio_of_fastest=min(theirs) / min(ours),
                         ratio_per_repeat=[a / b for a, b in zip(theirs, ours)])
        row["components"][comp] = entry
    if with_reference:
        row["max_abs_difference"] = max_differences(res["outputs"])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", type=Path, default=None,
                    help="checkout of github.com/gyc-code/metric-guided-fusion (commit d90aea9) to time side by side")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--kinds", nargs="+", default=["structured"], choices=["structured", "noise"])
    ap.add_argument("--variant", default="reference", help="mgfusion's variant (side by side: reference)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--large", action="store_true", help="also time an OS4 level of a 1024x2048 image")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/metrics_speed.json with "
                                                "--reference, metrics_speed_ours.json without)")
    args = ap.parse_args()
    if args.reference is not None and args.variant != "reference":
        raise SystemExit("the side-by-side run compares the authors' code with variant=reference")
    out_path = args.out or ("benchmarks/results/metrics_speed.json" if args.reference
                            else "benchmarks/results/metrics_speed_ours.json")
    torch.set_num_threads(args.threads)
    try:
        import threadpoolctl
    except ImportError as err:
        raise SystemExit("threadpoolctl is needed to hold numpy/scikit-learn to --threads") from err
    authors = Authors(args.reference.resolve()) if args.reference else None
    if authors is not None and not (authors.commit or "").startswith(REFERENCE_COMMIT):
        print(f"warning: {args.reference} is at commit {authors.commit}, not {REFERENCE_COMMIT}")
    ours = Ours(args.variant)
    large = None
    load_before = os.getloadavg()
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load_before[0]:.1f} on {os.cpu_count()} CPUs: other processes compete for the "
              f"cores and multi-threaded timings of both sides suffer (OpenMP threads wait on each other); the JSON "
              f"records the load")
    rows = []
    with threadpoolctl.threadpool_limits(args.threads):
        if args.large:  # first, so the peak-RSS reading is not masked by earlier runs
            large = large_level(args.variant)
            print(f"OS4 of 1024x2048 (256x512 map, C=256, {large['variant']}): {large['seconds']:.2f} s, peak RSS "
                  f"+{large['peak_rss_increase_mb']:.0f} MB (features {large['features_mb']:.0f} MB)")
        for kind in args.kinds:
            for batch in args.batch_sizes:
                images = photo(batch)
                feats = pyramid(kind, images)
                res = side_by_side(ours, authors, feats, images, args.repeats)
                rows.append(_row(kind, batch, res, authors is not None))
    load_after = os.getloadavg()
    print(f"\nseconds per image: median of {args.repeats} interleaved repeats (ratio: of the medians; also of the "
          f"fastest repeats), {args.threads} threads, variant={args.variant}, "
          f"load average {load_before[0]:.1f} -> {load_after[0]:.1f}")
    print(format_table(_table_rows(rows, authors is not None)))
    root = Path(__file__).resolve().parents[1]
    command = "python benchmarks/metrics_speed.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    import numpy
    import sklearn

    write_results(
        out_path, "metrics_speed", rows,
        rerun=command,
        threads=args.threads,
        variant=args.variant,
        repeats=args.repeats,
        inputs={"image": "skimage.data.coffee resized to 512x1024 (odd batch entries mirrored)",
                "levels": {str(s): [c, IMAGE_HW[0] // s, IMAGE_HW[1] // s] for s, c in LEVELS.items()},
                "kinds": args.kinds, "batch_sizes": args.batch_sizes, "seed": 0},
        host={"cpu": _cpu_model(), "loadavg_before": load_before, "loadavg_after": load_after},
        versions={"numpy": numpy.__version__, "sklearn": sklearn.__version__},
        mgfusion_commit=_git(["rev-parse", "HEAD"], root),
        mgfusion_dirty=bool(_git(["status", "--porcelain", "--", "mgfusion", "benchmarks/metrics_speed.py"], root)),
        reference=None if authors is None else {
            "path_given": str(args.reference), "commit": authors.commit,
            "timed": {"SFC": "vfm_metric_batch.compute_SFC per level",
                      "SCS": "vfm_metric_batch.compute_SCS per level",
                      "EF": "vfm_metric_batch_fastter.compute_FCD_for_stages_fast over the 4 levels",
                      "suite": "sum of the three"},
            "edit": f"vfm_metric_batch_fastter._minmax_in_mask: {_CUDA_FIX[0]} -> {_CUDA_FIX[1]}"},
        large_os4=large,
    )
    print(f"wrote {out_path}\nrerun: {command}")


if __name__ == "__main__":
    main()
