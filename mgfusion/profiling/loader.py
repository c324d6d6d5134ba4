"""Decode, resize and batch images (and optional label maps) for profiling.

Unreadable or corrupt images do not stop a run: the dataset returns an error entry naming the path, the collate
function drops it, and the runner reports and counts it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .sources import ImageRecord

Resolution = int | Sequence[int] | None


def target_size(h: int, w: int, resolution: Resolution, max_size: int | None) -> tuple[int, int]:
    """Output size for an ``h x w`` image.

    ``resolution``: ``[H, W]`` exact size; an int = short side (aspect kept, long side capped at ``max_size``);
    ``None`` = native size (long side still capped at ``max_size`` if given).
    """
    if resolution is not None and not isinstance(resolution, int):
        rh, rw = (int(v) for v in resolution)
        return rh, rw
    scale = 1.0 if resolution is None else resolution / min(h, w)
    if max_size and max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _decode_segmentation(ann: dict[str, Any], h: int, w: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    seg = ann["segmentation"]
    if isinstance(seg, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = seg
    return mask_utils.decode(rle).astype(bool)


def label_maps(record: ImageRecord, h: int, w: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(semantic, instance) int64 maps at the image's native ``h x w``; -1 = void (semantic) / no instance.

    Returns None when the record has no labels.
    """
    if not record.has_labels:
        return None
    sem = np.full((h, w), -1, dtype=np.int64)
    inst = np.full((h, w), -1, dtype=np.int64)
    if record.pan_seg_path and record.segments_info is not None:
        rgb = np.asarray(Image.open(record.pan_seg_path).convert("RGB"), dtype=np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
        for k, seg in enumerate(record.segments_info, start=1):
            m = ids == seg["id"]
            sem[m] = int(seg["category_id"])
            if seg.get("isthing", True):
                inst[m] = k
        return sem, inst
    if record.sem_seg_path:
        s = np.asarray(Image.open(record.sem_seg_path), dtype=np.int64)
        if s.ndim == 3:
            s = s[..., 0]
        sem = np.where(s == record.ignore_label, -1, s)
    if record.annotations:
        anns = sorted(record.annotations, key=lambda a: -float(a.get("area", 0.0)))  # small objects painted last
        for k, ann in enumerate(anns, start=1):
            m = _decode_segmentation(ann, h, w)
            if m.shape != (h, w):
                continue
            if not record.sem_seg_path:
                sem[m] = int(ann.get("category_id", 0))
            if not ann.get("iscrowd", 0):
                inst[m] = k
    return sem, inst


class ProfileImageDataset(Dataset):
    """Items: ``{"id", "image": uint8 (3,H,W) RGB, "labels": (sem, inst) int64 (H,W) or None}`` or ``{"error"}``."""

    def __init__(self, records: Sequence[ImageRecord], resolution: Resolution = None, max_size: int | None = None,
                 load_labels: bool = True) -> None:
        self.records = list(records)
        self.resolution = resolution
        self.max_size = max_size
        self.load_labels = load_labels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        try:
            with Image.open(rec.path) as im:
                im.load()
                rgb = np.array(im.convert("RGB"), dtype=np.uint8)
        except Exception as e:  # reported by path and counted by the runner; the run goes on
            return {"id": rec.image_id, "error": f"{rec.path}: {type(e).__name__}: {e}"}
        h0, w0 = rgb.shape[:2]
        h, w = target_size(h0, w0, self.resolution, self.max_size)
        image = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
        if (h, w) != (h0, w0):
            image = F.interpolate(image[None].float(), size=(h, w), mode="bilinear", align_corners=False,
                                  antialias=True)[0].round().clamp(0, 255).to(torch.uint8)
        labels = None
        if self.load_labels:
            try:
                maps = label_maps(rec, h0, w0)
            except Exception as e:
                return {"id": rec.image_id, "error": f"labels of {rec.path}: {type(e).__name__}: {e}"}
            if maps is not None:
                labels = tuple(
                    F.interpolate(torch.from_numpy(m)[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
                    for m in maps
                )
        return {"id": rec.image_id, "image": image, "labels": labels}


def collate_profile_batch(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pad a list of items to one batch: images (B,3,Hmax,Wmax) uint8, valid_hw (B,2), labels padded with void."""
    good = [it for it in items if "error" not in it]
    errors = [(it["id"], it["error"]) for it in items if "error" in it]
    if not good:
        return {"ids": [], "errors": errors}
    hmax = max(it["image"].shape[1] for it in good)
    wmax = max(it["image"].shape[2] for it in good)
    images = torch.zeros(len(good), 3, hmax, wmax, dtype=torch.uint8)
    valid = torch.zeros(len(good), 2, dtype=torch.long)
    has_labels = all(it["labels"] is not None for it in good)
    sem = torch.full((len(good), hmax, wmax), -1, dtype=torch.long) if has_labels else None
    inst = torch.full((len(good), hmax, wmax), -1, dtype=torch.long) if has_labels else None
    for b, it in enumerate(good):
        _, h, w = it["image"].shape
        images[b, :, :h, :w] = it["image"]
        valid[b] = torch.tensor([h, w])
        if has_labels:
            sem[b, :h, :w], inst[b, :h, :w] = it["labels"]
    return {"ids": [it["id"] for it in good], "images": images, "valid_hw": valid, "sem": sem, "inst": inst,
            "errors": errors}


def make_loader(records: Sequence[ImageRecord], *, batch_size: int, resolution: Resolution, max_size: int | None,
                num_workers: int, load_labels: bool = True) -> DataLoader:
    """A DataLoader over ``records`` in order (no shuffling, so resumed runs see the same batches)."""
    ds = ProfileImageDataset(records, resolution=resolution, max_size=max_size, load_labels=load_labels)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate_profile_batch, persistent_workers=False)
