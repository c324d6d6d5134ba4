"""What to predict on: image files, folders, globs, text files of paths and videos, each with a stable output name."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
from detectron2.data import detection_utils

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "InputItem",
    "expand_inputs",
    "iter_video_frames",
    "read_image",
    "video_info",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputItem:
    """One input: ``path`` on disk, ``name`` = its output name (relative path without extension, ``/``-separated;
    unique among the inputs of one call), ``kind`` = ``image`` or ``video``."""

    path: str
    name: str
    kind: str


def _kind(path: str) -> str:
    return "video" if path.lower().endswith(VIDEO_EXTENSIONS) else "image"


def _relative_names(paths: Sequence[str], root: str | None) -> list[str]:
    if root is None:
        root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]) if paths else ""
    return [str(PurePosixPath(*Path(os.path.relpath(os.path.abspath(p), root)).with_suffix("").parts))
            for p in paths]


def _from_text_file(path: Path) -> list[str]:
    """Paths listed one per line (blank lines and lines starting with # skipped), relative to the file's folder."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entry = Path(line).expanduser()
            entries.append(str(entry if entry.is_absolute() else path.parent / entry))
    return entries


def _expand_one(spec: str) -> list[tuple[str, str]]:
    """(path, name) pairs of one input spec."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                       + VIDEO_EXTENSIONS)
        if not files:
            raise FileNotFoundError(f"input folder {path} holds no image or video files "
                                    f"({', '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})")
        return list(zip(files, _relative_names(files, str(path.resolve()))))
    if _GLOB_CHARS & set(spec) and not path.exists():
        files = sorted(p for p in glob.glob(str(path), recursive=True) if os.path.isfile(p))
        if not files:
            raise FileNotFoundError(f"input pattern {spec!r} matches no files")
        return list(zip(files, _relative_names(files, None)))
    if path.suffix.lower() == ".txt" and path.is_file():
        files = _from_text_file(path)
        if not files:
            raise ValueError(f"input list {path} names no files")
        return list(zip(files, _relative_names(files, None)))
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist (give an image, a folder, a glob pattern, "
                                "a .txt file with one path per line, or a video)")
    return [(str(path), path.stem)]


def expand_inputs(specs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[InputItem]:
    """Input items of one or several specs: an image or video file, a folder (recursive), a glob pattern
    (``**`` recursive), or a ``.txt`` file listing paths. Paths inside a text file that do not exist are kept (and
    reported as unreadable when read).

    Output names keep the path relative to the folder / the pattern's and list's common folder, so inputs with equal
    file names in different subfolders do not collide; a collision between specs raises ValueError.
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    items: list[InputItem] = []
    seen: dict[str, str] = {}
    for spec in specs:
        for path, name in _expand_one(os.fspath(spec)):
            if name in seen and os.path.abspath(seen[name]) != os.path.abspath(path):
                raise ValueError(f"inputs {seen[name]} and {path} would both write outputs named {name!r}; "
                                 "predict them into different output folders")
            if name not in seen:
                seen[name] = path
                items.append(InputItem(path=path, name=name, kind=_kind(path)))
    return items


def read_image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB (EXIF orientation applied, as detectron2's data loaders read images).

    Raises:
        OSError: naming the file when it is missing or not a readable image.
    """
    try:
        return detection_utils.read_image(path, format="RGB")
    except (OSError, ValueError, SyntaxError) as err:
        raise OSError(f"cannot read image {path}: {err}") from err


def video_info(path: str) -> tuple[float, int, int, int]:
    """(frames per second, frame count (0 if unknown), width, height) of a video; OSError if OpenCV cannot open
    it or it has no frame rate."""
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise OSError(f"cannot open video {path} with OpenCV")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        frames = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    if not fps > 0:
        raise OSError(f"video {path} reports no frame rate; re-encode it (e.g. ffmpeg -i IN -r 30 OUT.mp4)")
    return fps, frames, width, height


def iter_video_frames(path: str) -> Iterator[np.ndarray]:
    """Frames of a video as (H, W, 3) uint8 RGB, in order."""
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise OSError(f"cannot open video {path} with OpenCV")
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
