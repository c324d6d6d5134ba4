"""PCA first-component maps of a few images per encoder (the paper's Fig. 2), saved as the profile streams.

Maps go to ``pca/<encoder>/<image id>.npz`` (the image and one float16 map in [0, 1] per stride), written atomically,
so a resumed run keeps those of finished images and the final plot covers every (image, encoder).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mgfusion.metrics import pca_map

from .features import EncodedBatch


def safe_name(image_id: str) -> str:
    """An image id as a file name (characters other than letters, digits and ``-_.`` become ``_``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in image_id)


class PCAMaps:
    """Save and collect PCA maps of the images ``image_ids`` (the first ``num_pca_images`` of the source)."""

    def __init__(self, out_dir: str | os.PathLike, image_ids: Sequence[str]) -> None:
        self.root = Path(out_dir) / "pca"
        self.image_ids = list(image_ids)
        self._wanted = set(self.image_ids)

    def _path(self, encoder: str, image_id: str) -> Path:
        return self.root / safe_name(encoder) / f"{safe_name(image_id)}.npz"

    def save(self, encoder: str, batch: EncodedBatch) -> None:
        """Write the maps of the wanted images of ``batch`` (features cropped to each image's valid size)."""
        for b, iid in enumerate(batch.ids):
            if iid not in self._wanted:
                continue
            h, w = (int(v) for v in batch.valid_hw[b])
            maps = {}
            for s, f in batch.features.items():
                fh, fw = -(-h // s), -(-w // s)
                maps[str(s)] = pca_map(f[b: b + 1, :, :fh, :fw])[0].cpu().numpy().astype(np.float16)
            path = self._path(encoder, iid)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name("." + path.name + ".tmp.npz")
            np.savez_compressed(tmp, image=batch.images[b, :, :h, :w].permute(1, 2, 0).cpu().numpy(), **maps)
            os.replace(tmp, path)

    def entries(self, encoders: Sequence[str]) -> list[dict[str, Any]]:
        """``[{"image_id", "encoder", "image": (H,W,3) uint8, "maps": {stride: (h,w) float32}}]`` found on disk."""
        entries = []
        for iid in self.image_ids:
            for name in encoders:
                path = self._path(name, iid)
                if path.exists():
                    with np.load(path) as z:
                        entries.append({"image_id": iid, "encoder": name, "image": z["image"],
                                        "maps": {int(k): z[k].astype(np.float32) for k in z.files if k != "image"}})
        return entries
