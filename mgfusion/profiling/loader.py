"""The first stage of a profile: decode, check, resize and batch images (and optional label maps).

Decoding (:func:`decode_rgb`) always yields 8-bit RGB, so the metrics receive ``uint8`` images in 0..255 (the
explicit range of ``mgfusion.metrics``): 16-bit images (PNG / TIFF, grey or colour) are scaled by ``value / 257``
rounded (65535 -> 255, exact for 8-bit values stored as 16-bit), never clipped; 32-bit integer and float images have
no defined range and are refused. Palette, grey, CMYK and alpha images are converted to RGB (alpha dropped).

Images that cannot be profiled do not stop a run; each becomes an entry that names the path and the reason:

* unreadable or corrupt files (``error``), listed in ``failed_images.txt``;
* images too small (shorter side below ``min_image_side``, default 32 px) or too elongated (long/short side ratio
  above ``max_aspect_ratio``, default 8) to give meaningful feature maps at strides 4..32 (``skipped``), listed in
  ``skipped_images.txt``. They are checked at their native size, before any resizing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .settings import DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MIN_IMAGE_SIDE
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


class UnsupportedImageError(ValueError):
    """An image whose pixel values have no defined 0..255 range (32-bit integer or float)."""


_SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N")


def _rawmode(im: Image.Image) -> str:
    """The decoder's raw mode of the first tile (e.g. ``RGB;16B`` for a 48-bit PNG); '' when unknown."""
    try:
        args = im.tile[0][3] if len(im.tile[0]) > 3 else im.tile[0].args
    except (IndexError, AttributeError, TypeError):
        return ""
    return args[0] if isinstance(args, tuple) and args else args if isinstance(args, str) else ""


def sixteen_to_eight(a: np.ndarray) -> np.ndarray:
    """16-bit values (0..65535) -> uint8 by ``round(value / 257)``."""
    return np.rint(a.astype(np.float32) / 257.0).astype(np.uint8)


def decode_rgb(path: str) -> np.ndarray:
    """Read ``path`` as ``(H, W, 3)`` uint8 RGB (rules in the module docstring)."""
    with Image.open(path) as im:
        raw = _rawmode(im)
        im.load()
        if im.mode in _SIXTEEN_BIT_GREY or (im.mode == "I" and im.format == "PNG"):  # 16-bit grey
            a = np.asarray(im)
            if a.min() < 0 or a.max() > 65535:
                raise UnsupportedImageError(f"{path}: 16-bit image with values outside 0..65535")
            return np.repeat(sixteen_to_eight(a)[..., None], 3, axis=2)
        if im.mode in ("I", "F"):
            raise UnsupportedImageError(f"{path}: {im.mode!r} ({'32-bit integer' if im.mode == 'I' else 'float'}) "
                                        "image has no defined value range; convert it to 8- or 16-bit")
        if raw.endswith((";16B", ";16L", ";16N", ";16")):  # 48/64-bit colour: Pillow keeps only the high byte
            import cv2

            a = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if a is None or a.dtype != np.uint16:
                raise UnsupportedImageError(f"{path}: could not decode its 16-bit channels")
            if a.ndim == 2:
                a = np.repeat(a[..., None], 3, axis=2)
            elif a.shape[2] == 2:  # grey + alpha
                a = np.repeat(a[..., :1], 3, axis=2)
            else:
                a = a[..., 2::-1]  # BGR(A) -> RGB
            return sixteen_to_eight(a)
        return np.array(im.convert("RGB"), dtype=np.uint8)


def size_problem(h: int, w: int, *, min_side: int, max_aspect: float) -> str | None:
    """Why an ``h x w`` image is skipped (too small or too elongated), or None if it is profiled."""
    if min(h, w) < min_side:
        return f"too small: {h}x{w} px, shorter side {min(h, w)} < min_image_side={min_side}"
    if max(h, w) / min(h, w) > max_aspect:
        return (f"extreme aspect ratio: {h}x{w} px, long/short side {max(h, w) / min(h, w):.1f} > "
                f"max_aspect_ratio={max_aspect:g}")
    return None


class ProfileImageDataset(Dataset):
    """Items: ``{"id", "image": uint8 (3,H,W) RGB, "labels": (sem, inst) int64 (H,W) or None}``, or
    ``{"id", "error": message}`` (unreadable), or ``{"id", "skipped": reason}`` (too small / too elongated)."""

    def __init__(self, records: Sequence[ImageRecord], resolution: Resolution = None, max_size: int | None = None,
                 load_labels: bool = True, min_side: int = DEFAULT_MIN_IMAGE_SIDE,
                 max_aspect: float = DEFAULT_MAX_ASPECT_RATIO) -> None:
        self.records = list(records)
        self.resolution = resolution
        self.max_size = max_size
        self.load_labels = load_labels
        self.min_side = min_side
        self.max_aspect = max_aspect

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        try:
            rgb = decode_rgb(rec.path)
        except Exception as e:  # noqa: BLE001 - any decoder error: reported by path and counted, the run goes on
            return {"id": rec.image_id, "error": f"{rec.path}: {type(e).__name__}: {e}"}
        h0, w0 = rgb.shape[:2]
        problem = size_problem(h0, w0, min_side=self.min_side, max_aspect=self.max_aspect)
        if problem:
            return {"id": rec.image_id, "skipped": f"{rec.path}: {problem}"}
        h, w = target_size(h0, w0, self.resolution, self.max_size)
        image = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
        if (h, w) != (h0, w0):
            image = F.interpolate(image[None].float(), size=(h, w), mode="bilinear", align_corners=False,
                                  antialias=True)[0].round().clamp(0, 255).to(torch.uint8)
        labels = None
        if self.load_labels:
            try:
                maps = label_maps(rec, h0, w0)
            except Exception as e:  # noqa: BLE001 - a broken label file is reported like a broken image
                return {"id": rec.image_id, "error": f"labels of {rec.path}: {type(e).__name__}: {e}"}
            if maps is not None:
                labels = tuple(
                    F.interpolate(torch.from_numpy(m)[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
                    for m in maps
                )
        return {"id": rec.image_id, "image": image, "labels": labels}


def collate_profile_batch(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pad a list of items to one batch: images (B,3,Hmax,Wmax) uint8, valid_hw (B,2), labels padded with void.

    ``errors`` / ``skipped``: ``[(image_id, message)]`` of the items that are not in the batch.
    """
    good = [it for it in items if "image" in it]
    errors = [(it["id"], it["error"]) for it in items if "error" in it]
    skipped = [(it["id"], it["skipped"]) for it in items if "skipped" in it]
    if not good:
        return {"ids": [], "errors": errors, "skipped": skipped}
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
            "errors": errors, "skipped": skipped}


class ImageStream:
    """Batches (see :func:`collate_profile_batch`) of the given records, in order (no shuffling, so a resumed run
    sees the same batches); ``len()`` is the number of records."""

    def __init__(self, records: Sequence[ImageRecord], *, batch_size: int, resolution: Resolution,
                 max_size: int | None, num_workers: int, load_labels: bool = True,
                 min_side: int = DEFAULT_MIN_IMAGE_SIDE, max_aspect: float = DEFAULT_MAX_ASPECT_RATIO) -> None:
        self.records = list(records)
        dataset = ProfileImageDataset(self.records, resolution=resolution, max_size=max_size,
                                      load_labels=load_labels, min_side=min_side, max_aspect=max_aspect)
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                 collate_fn=collate_profile_batch, persistent_workers=False)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.loader)
