#!/usr/bin/env python
"""Write ADEChallengeData2016/ade20k_panoptic_{train,val}[.json] and ade20k_instance_{train,val}.json from the
SceneParsing annotations plus the instance annotations (annotations_instance/, R = class, G = instance id);
needed by mgf_ade20k_panoptic_* and mgf_ade20k_instance_* (datasets/README.md)."""

import os

from _common import parser, require_dir

from mgfusion.data.preparation import prepare_ade20k_panoptic_and_instance


def main() -> None:
    args = parser(__doc__).parse_args()
    ade = require_dir(os.path.join(args.root, "ADEChallengeData2016"), "ADEChallengeData2016")
    require_dir(os.path.join(ade, "annotations_instance"), "ADE20K instance annotations (annotations_instance/)")
    for out in prepare_ade20k_panoptic_and_instance(ade, workers=args.workers):
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
