"""Throughput and memory of tools/profile_encoders.py on CPU (issue: profile_speed).

Profiles two small encoders at 512x512 on N images (real CC0 photos from scikit-image, randomly cropped/flipped so
that every image differs) for N in --counts, each in a fresh process, and reports images/s split into encoder time
and metric time, plus the process's peak RSS; memory should stay flat as N grows (results stream to disk).

Every profile also computes the noise and pixel control rows; ``controls_share`` is their added time per image over
the encoders-plus-metrics time per image (both encoders), measured in the same run (target: below 0.25). With
``--processes 2`` the first count is profiled again, side by side, sharded across 2 processes (gloo, each with
``max(1, threads // processes)`` threads); ``wall_images_per_s`` is images over the wall time of the streaming phase
(start-up of the ranks and building the encoders included) and ``speedup`` its ratio to the single process. On a
shared, busy machine use ``--threads 1``: single-threaded processes are the least disturbed by other load (the
sharded run then uses one core per process, the single process one core).

    python benchmarks/profile_speed.py [--counts 20,200] [--encoders dinov3_vits16,sam2_hiera_t] [--threads 2] \
        [--processes 2]

Prints a Markdown table and writes JSON (default benchmarks/results/profile_speed.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mgfusion.utils.bench import format_table, write_results


def make_images(folder: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` distinct ``size x size`` crops of scikit-image's CC0 photos."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = Image.fromarray(photos[i % len(photos)])
        scale = rng.uniform(1.0, 2.0) * size / min(img.size)
        img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))))
        x0 = int(rng.integers(0, img.width - size + 1))
        y0 = int(rng.integers(0, img.height - size + 1))
        crop = img.crop((x0, y0, x0 + size, y0 + size))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(folder / f"{i:05d}.jpg", quality=92)


def run_once(images: Path, out: Path, encoders: list[str], size: int, batch: int, threads: int,
             variant: str, processes: int = 1) -> dict:
    """Profile in a fresh process; returns its summary timing and peak RSS (MiB; of the main process)."""
    code = (
        "import sys, json, resource, torch; torch.set_num_threads(int(sys.argv[1]));"
        "from mgfusion.profiling import run_profile;"
        "s = run_profile(json.loads(sys.argv[2]));"
        "print('RESULT', json.dumps({'timing': s['timing'], 'n': s['num_images'],"
        " 'maxrss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))"
    )
    settings = {"images": str(images), "encoders": encoders, "output_dir": str(out), "resolution": [size, size],
                "batch_size": batch, "num_workers": 1, "device": "cpu", "variant": variant, "max_images": None,
                "cost": False, "progress": False, "num_pca_images": 0, "supervised": False,
                "allow_random_init": True,  # speed does not depend on the weights' values
                "num_processes": processes}
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if processes > 1:  # each rank gets its share of the cores (what a single process gets with --threads)
        env["OMP_NUM_THREADS"] = str(max(1, threads // processes))
    proc = subprocess.run([sys.executable, "-c", code, str(threads), json.dumps(settings)], cwd=REPO,
                          capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
    res = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    res["wall_s"] = wall
    return res


def _row(res: dict, encoders: list[str], processes: int) -> dict:
    t = res["timing"]
    n = res["n"]
    work = t["encoder_s"] + t["metrics_s"]
    return {
        "images": n,
        "processes": processes,
        "encoders": "+".join(encoders),
        "images_per_s": n / work,
        "encoder_s_per_img_enc": t["encoder_s"] / (n * len(encoders)),
        "metrics_s_per_img_enc": t["metrics_s"] / (n * len(encoders)),
        "controls_s_per_img": t["controls_s"] / n,
        "controls_share": t["controls_s"] / work,
        "wall_images_per_s": n / t["stream_wall_s"],
        "wall_s": res["wall_s"],
        "peak_rss_MiB": res["maxrss_kb"] / 1024,
        "speedup": "–",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", default="20,200")
    p.add_argument("--encoders", default="dinov3_vits16,sam2_hiera_t")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--processes", type=int, default=2, help="sharded run of the first count (1 = none)")
    p.add_argument("--variant", default="reference")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "profile_speed.json"))
    args = p.parse_args()
    encoders = args.encoders.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        counts = [int(c) for c in args.counts.split(",")]
        for i, n in enumerate(counts):
            images = Path(tmp) / f"images_{n}"
            make_images(images, n, args.size)
            runs = [1] + ([args.processes] if i == 0 and args.processes > 1 else [])
            for procs in runs:
                res = run_once(images, Path(tmp) / f"run_{n}_{procs}", encoders, args.size, args.batch, args.threads,
                               args.variant, processes=procs)
                rows.append(_row(res, encoders, procs))
                r = rows[-1]
                print(f"{n} images, {procs} process(es): {r['wall_images_per_s']:.2f} img/s wall, controls "
                      f"{100 * r['controls_share']:.0f}% of encoders + metrics, peak RSS {r['peak_rss_MiB']:.0f} MiB",
                      flush=True)
            if len(runs) > 1:
                rows[-2]["speedup"] = 1.0
                rows[-1]["speedup"] = rows[-1]["wall_images_per_s"] / rows[-2]["wall_images_per_s"]
    print(f"\nprofile_encoders on CPU ({args.threads} threads), {args.size}x{args.size}, batch {args.batch}, "
          f"variant {args.variant}; images_per_s counts both encoders and all metrics (4 strides); controls = noise + "
          "pixel rows (controls_share: their time over the encoders + metrics time)")
    print(format_table(rows))
    write_results(args.out, "profile_speed", rows, size=args.size, batch=args.batch, variant=args.variant,
                  threads=args.threads,
                  note="memory should be flat in the number of images: results stream to per_image.jsonl; "
                       "controls_share target < 0.25; speedup = sharded vs single-process wall images/s")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
