#!/usr/bin/env python
"""Write cityscapes/gtFine/*/*/*_gtFine_labelTrainIds.png and gtFine/cityscapes_panoptic_{train,val}[.json] (with
cityscapesscripts' createPanopticImgs); needed by mgf_cityscapes_fine_sem_seg_* and mgf_cityscapes_fine_panoptic_*."""

import os

from _common import parser, require_dir

from mgfusion.data.preparation import prepare_cityscapes


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--splits", nargs="+", default=["train", "val"])
    args = p.parse_args()
    cityscapes = require_dir(os.path.join(args.root, "cityscapes"), "Cityscapes")
    for out in prepare_cityscapes(cityscapes, splits=args.splits, workers=args.workers, verbose=True):
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
