#!/usr/bin/env python
"""Write synscapes/img/class/*_labelTrainIds.png (Cityscapes label ids -> train ids) and
synscapes/synscapes_instance_train.json (Cityscapes' 8 thing classes from img/instance + meta/*.json, RLE masks).
Needed by mgf_synscapes_sem_seg_train and mgf_synscapes_instance_seg_train (datasets/README.md, Synscapes)."""

import os

from _common import parser, require_dir

from mgfusion.data.synscapes import prepare_synscapes


def main() -> None:
    args = parser(__doc__).parse_args()
    synscapes = require_dir(os.path.join(args.root, "synscapes"), "Synscapes (synscapes/img, synscapes/meta)")
    summary = prepare_synscapes(synscapes, workers=args.workers)
    print(f"wrote {summary['json']} ({summary['images']} images) and the train-id labels under "
          f"{os.path.join(synscapes, 'img', 'class')}")
    if summary["unclassified"]:
        print(f"{summary['unclassified']} instance ids of img/instance have no class in meta/*.json; they got no "
              f"annotation")


if __name__ == "__main__":
    main()
