#!/usr/bin/env python
"""Write urbansyn/ss/*_labelTrainIds.png (the ss grey values 0..18 = Cityscapes train ids, others -> 255) and
urbansyn/urbansyn_instance_train.json (one instance per colour of panoptic/*.png, its class the majority ss class;
Cityscapes' 8 thing classes, RLE masks). Needed by mgf_urbansyn_sem_seg_train and mgf_urbansyn_instance_seg_train
(datasets/README.md, UrbanSyn)."""

import os

from _common import parser, require_dir

from mgfusion.data.urbansyn import prepare_urbansyn


def main() -> None:
    args = parser(__doc__).parse_args()
    urbansyn = require_dir(os.path.join(args.root, "urbansyn"), "UrbanSyn (urbansyn/rgb, ss, panoptic)")
    for out in prepare_urbansyn(urbansyn, workers=args.workers):
        print(f"wrote {out} and the train-id labels under {os.path.join(urbansyn, 'ss')}")


if __name__ == "__main__":
    main()
