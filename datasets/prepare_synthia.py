#!/usr/bin/env python
"""Write synthia/GT/LABELS/*_labelTrainIds.png (SYNTHIA class ids -> Cityscapes train ids) and
synthia/synthia_instance_train.json (Cityscapes' 8 thing classes, RLE masks) from SYNTHIA-RAND-CITYSCAPES. Needed by
mgf_synthia_sem_seg_train and mgf_synthia_instance_seg_train (datasets/README.md, SYNTHIA)."""

import os

from _common import parser, require_dir

from mgfusion.data.synthia import prepare_synthia


def main() -> None:
    args = parser(__doc__).parse_args()
    synthia = require_dir(os.path.join(args.root, "synthia"), "SYNTHIA-RAND-CITYSCAPES (synthia/RGB, synthia/GT/LABELS)")
    for out in prepare_synthia(synthia, workers=args.workers):
        print(f"wrote {out} and the train-id labels under {os.path.join(synthia, 'GT', 'LABELS')}")


if __name__ == "__main__":
    main()
