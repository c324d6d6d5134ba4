#!/usr/bin/env python
"""Write coco/panoptic_semseg_{train,val}2017/*.png (contiguous ids 0..132, things first, 255 = unlabeled) from the
COCO panoptic annotations; needed by mgf_coco_2017_*_panoptic_with_sem_seg (datasets/README.md)."""

import os

from _common import parser, require_dir

from mgfusion.data.preparation import prepare_coco_semantic_from_panoptic


def main() -> None:
    args = parser(__doc__).parse_args()
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    coco = require_dir(os.path.join(args.root, "coco"), "COCO")
    for split in ("train", "val"):
        out = prepare_coco_semantic_from_panoptic(
            os.path.join(coco, "annotations", f"panoptic_{split}2017.json"),
            require_dir(os.path.join(coco, f"panoptic_{split}2017"), f"panoptic_{split}2017 PNGs"),
            os.path.join(coco, f"panoptic_semseg_{split}2017"),
            category_order=[c["id"] for c in COCO_CATEGORIES],
            workers=args.workers,
        )
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
