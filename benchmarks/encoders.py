"""Parameters and CPU forward time of every registered encoder at 512x512 (random init, batch 1).

    python benchmarks/encoders.py [--size 512] [--repeats 5] [--threads 2] [--only dinov3_vitb16,sam2_hiera_bplus]

Prints a Markdown table and writes JSON (default benchmarks/results/encoders.json).
"""

from __future__ import annotations

import argparse
import warnings

import torch

from mgfusion.backbones import build_encoder, list_encoders
from mgfusion.utils.bench import format_table, time_call, write_results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512, help="square input side in pixels")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", default="", help="comma-separated encoder names (default: all registered)")
    p.add_argument("--out", default="benchmarks/results/encoders.json")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    names = [n for n in args.only.split(",") if n] or list_encoders()
    rows = []
    for name in names:
        torch.manual_seed(0)
        enc = build_encoder(name).eval().to(args.device)
        x = torch.randn(1, 3, args.size, args.size, device=args.device)
        with torch.inference_mode():
            t = time_call(lambda: enc(x), repeats=args.repeats, warmup=1)
        trunk = sum(p.numel() for p in enc.trunk.parameters())
        rows.append({
            "encoder": name,
            "params_M": enc.num_parameters() / 1e6,
            "trunk_params_M": trunk / 1e6,
            "channels (4/8/16/32)": "/".join(str(enc.out_channels[s]) for s in enc.out_strides),
            "fwd_median_s": t["median_s"],
            "fwd_min_s": t["min_s"],
        })
        print(f"{name}: {t['median_s']:.3f} s", flush=True)
        del enc
    print()
    print(f"Encoders at {args.size}x{args.size}, batch 1, {args.device}, {args.threads} threads, "
          f"median of {args.repeats}")
    print(format_table(rows))
    write_results(args.out, "encoders", rows, size=args.size, device=args.device, repeats=args.repeats)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
