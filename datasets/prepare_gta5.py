#!/usr/bin/env python
"""Write gta/labels/*_labelTrainIds.png (Cityscapes label ids -> the 19 train ids, 255 = ignore) for every image in
gta/images/; labels whose size differs from their image are resized to it (nearest neighbour) and listed. Needed by
mgf_gta5_sem_seg_train (datasets/README.md, GTA5)."""

import os

from _common import parser, require_dir

from mgfusion.data.gta5 import prepare_gta5


def main() -> None:
    args = parser(__doc__).parse_args()
    gta = require_dir(os.path.join(args.root, "gta"), "GTA5 (gta/images, gta/labels)")
    summary = prepare_gta5(gta, workers=args.workers)
    print(f"wrote {summary['written']} train-id labels under {os.path.join(gta, 'labels')}")
    if summary["resized"]:
        print(f"{len(summary['resized'])} labels had another size than their image and were resized to it: "
              f"{', '.join(summary['resized'][:20])}{' ...' if len(summary['resized']) > 20 else ''}")


if __name__ == "__main__":
    main()
