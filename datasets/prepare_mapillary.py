#!/usr/bin/env python
"""Write mapillary/cityscapes_trainIdLabel/{train,val}/label/*.png: the Mapillary Vistas v1.2 labels (66 classes, from
the v1.2 or the v2.0 release) mapped to Cityscapes' 19 train ids by the table of Rein / VFMSeg / MFuser. Needed by
mgf_mapillary_sem_seg_* (datasets/README.md, Mapillary Vistas)."""

import os

from _common import parser, require_dir

from mgfusion.data.mapillary import mapillary_release, prepare_mapillary


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    args = p.parse_args()
    mapillary = require_dir(os.path.join(args.root, "mapillary"), "Mapillary Vistas (mapillary/)")
    release, config, _ = mapillary_release(mapillary)
    print(f"Mapillary Vistas {release} release ({config})")
    for out in prepare_mapillary(mapillary, workers=args.workers, splits=args.splits):
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
