#!/usr/bin/env python
"""Write ADEChallengeData2016/annotations_detectron2/{training,validation} (class ids 0..149, 255 = "other") from
the SceneParsing annotations; needed by mgf_ade20k_sem_seg_* and mgf_ade20k_panoptic_* (datasets/README.md)."""

import os

from _common import parser, require_dir

from mgfusion.data.preparation import prepare_ade20k_semantic


def main() -> None:
    args = parser(__doc__).parse_args()
    ade = require_dir(os.path.join(args.root, "ADEChallengeData2016"), "ADEChallengeData2016")
    for out in prepare_ade20k_semantic(ade, workers=args.workers):
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
