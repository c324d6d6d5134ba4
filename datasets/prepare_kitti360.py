#!/usr/bin/env python
"""Write KITTI-360/kitti360_instance_{train,val}.json (Cityscapes' 8 thing classes, RLE masks) from the instance labels
of the official split files data_2d_semantics/train/2013_05_28_drive_{train,val}_frames.txt. Needed by
mgf_kitti360_instance_seg_* (datasets/README.md, KITTI-360)."""

import os

from _common import parser, require_dir

from mgfusion.data.kitti360 import prepare_kitti360


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    args = p.parse_args()
    kitti = require_dir(os.path.join(args.root, "KITTI-360"), "KITTI-360 (KITTI-360/data_2d_raw, data_2d_semantics)")
    for out in prepare_kitti360(kitti, workers=args.workers, splits=args.splits):
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
