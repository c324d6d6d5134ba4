"""Speed of the full label-free SC + EF suite on a SAM2 Hiera-B+-shaped pyramid of one 512x1024 image.

Levels (C x H x W): 112x128x256, 224x64x128, 448x32x64, 896x16x32; image: a real CC0 photo (scikit-image's
``coffee``) resized to 512x1024. Two feature kinds: ``noise`` (i.i.d. Gaussian, the slowest case for k-means) and
``structured`` (random projections of multi-scale image colour + smooth random fields + noise, closer to real
encoder features). Prints seconds per image for batch sizes 1 and 8 and writes JSON. ``--large`` adds one OS4 level
of a 1024x2048 image (256 channels, 256x512 map) with its time and peak resident-memory increase.

Bar (issue #3): <= 0.3 s per image on a 2-core CPU; the authors' code needs 3.0-4.9 s per image (SPEC §8.3).

    python benchmarks/metrics_speed.py --threads 2 --out benchmarks/results/metrics_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from mgfusion.metrics import compute_pyramid_metrics

LEVELS = {4: 112, 8: 224, 16: 448, 32: 896}
IMAGE_HW = (512, 1024)
REFERENCE_SECONDS_PER_IMAGE = (3.0, 4.9)
BAR_SECONDS_PER_IMAGE = 0.3


def photo(batch: int) -> torch.Tensor:
    """``(B,3,512,1024)`` uint8: scikit-image's coffee photo (CC0) resized, flipped per image for variety."""
    from skimage import data

    img = torch.from_numpy(data.coffee()).permute(2, 0, 1)[None].float()
    img = F.interpolate(img, size=IMAGE_HW, mode="bilinear", antialias=True, align_corners=False)
    imgs = [img.flip(-1) if i % 2 else img for i in range(batch)]
    return torch.cat(imgs).round().clamp(0, 255).to(torch.uint8)


def pyramid(kind: str, images: torch.Tensor, seed: int = 0) -> dict[int, torch.Tensor]:
    """SAM2-shaped features ``{stride: (B,C,H/s,W/s)}`` of the given kind."""
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


def time_suite(feats, images, variant: str, repeats: int) -> list[float]:
    compute_pyramid_metrics(feats, images, variant=variant)  # warm-up (caches, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        compute_pyramid_metrics(feats, images, variant=variant)
        times.append(time.perf_counter() - t0)
    return times


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--kinds", nargs="+", default=["structured", "noise"], choices=["structured", "noise"])
    ap.add_argument("--variants", nargs="+", default=["reference", "corrected"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--large", action="store_true", help="also time an OS4 level of a 1024x2048 image")
    ap.add_argument("--out", default="benchmarks/results/metrics_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    large = None  # first, so the peak-RSS reading is not masked by earlier runs
    if args.large:
        large = large_level(args.variants[-1])
        print(f"OS4 of 1024x2048 (256x512 map, C=256, {large['variant']}): {large['seconds']:.2f} s, peak RSS "
              f"+{large['peak_rss_increase_mb']:.0f} MB (features {large['features_mb']:.0f} MB)")
    rows = []
    print(f"{'kind':>10} {'variant':>10} {'batch':>5} {'s/image (median)':>17} {'s/image (min)':>14} "
          f"{'vs bar 0.3':>10} {'speed-up vs ref 3.0-4.9 s':>26}")
    for kind in args.kinds:
        for batch in args.batch_sizes:
            images = photo(batch)
            feats = pyramid(kind, images)
            for variant in args.variants:
                per_image = [t / batch for t in time_suite(feats, images, variant, args.repeats)]
                med, best = statistics.median(per_image), min(per_image)
                lo, hi = (r / med for r in REFERENCE_SECONDS_PER_IMAGE)
                rows.append({"kind": kind, "variant": variant, "batch": batch, "seconds_per_image_median": med,
                             "seconds_per_image_min": best, "seconds_per_image_all": per_image,
                             "speedup_vs_reference": [lo, hi]})
                print(f"{kind:>10} {variant:>10} {batch:>5} {med:>17.3f} {best:>14.3f} "
                      f"{BAR_SECONDS_PER_IMAGE / med:>9.2f}x {lo:>11.1f}x - {hi:.1f}x")
    result = {"benchmark": "metrics_speed", "threads": args.threads, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "levels": {str(s): [c, IMAGE_HW[0] // s, IMAGE_HW[1] // s] for s, c in LEVELS.items()},
              "bar_seconds_per_image": BAR_SECONDS_PER_IMAGE,
              "reference_seconds_per_image": list(REFERENCE_SECONDS_PER_IMAGE), "rows": rows, "large_os4": large}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
