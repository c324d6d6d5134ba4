#!/usr/bin/env python
"""Generate the synthetic shapes dataset now (it is otherwise generated on first use) under
<root>/mgfusion_synthetic/<variant>; prints the folder."""

import os

from _common import parser

from mgfusion.data.synthetic import SyntheticConfig, generate


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--num-train", type=int, default=64)
    p.add_argument("--num-val", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    config = SyntheticConfig(image_size=args.image_size, num_train=args.num_train, num_val=args.num_val, seed=args.seed)
    print(generate(config, os.path.join(args.root, "mgfusion_synthetic")))


if __name__ == "__main__":
    main()
