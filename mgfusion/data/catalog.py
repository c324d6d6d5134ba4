"""Dataset root resolution and checked registration into detectron2's catalogs.

Every mgfusion dataset name is registered through :func:`register_dataset`, which replaces any earlier
registration of that name (detectron2's builtin ones included) and wraps the loader so that a missing folder or
file fails at load time with a :class:`DatasetNotFoundError` naming the expected path, ``$DETECTRON2_DATASETS``
and ``datasets/README.md``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectron2.data import DatasetCatalog, MetadataCatalog

ENV_VAR = "DETECTRON2_DATASETS"
DEFAULT_ROOT = "datasets"
README = "datasets/README.md"

__all__ = [
    "ENV_VAR",
    "DatasetNotFoundError",
    "RequiredPath",
    "datasets_root",
    "register_dataset",
]


class DatasetNotFoundError(FileNotFoundError):
    """A registered dataset's folder or annotation file is missing."""


@dataclass(frozen=True)
class RequiredPath:
    """A path a dataset loader needs, what it holds, and how to create it when it is derived data."""

    path: str
    what: str
    how_to_create: str = ""


def datasets_root(root: str | os.PathLike | None = None) -> Path:
    """The datasets root: ``root`` if given, else ``$DETECTRON2_DATASETS``, else ``datasets`` (relative to cwd)."""
    if root is None:
        root = os.environ.get(ENV_VAR, DEFAULT_ROOT)
    return Path(os.path.expanduser(str(root)))


def _missing_path_message(name: str, required: RequiredPath, root: Path) -> str:
    env_value = os.environ.get(ENV_VAR)
    origin = (
        f"${ENV_VAR}={env_value!r}"
        if env_value is not None
        else f"${ENV_VAR} is unset, so the default '{DEFAULT_ROOT}'"
    )
    lines = [
        f"Dataset '{name}' expects its {required.what} at '{required.path}', which does not exist.",
        f"The datasets root is '{root}' ({origin}; relative paths are taken from the current directory "
        f"'{os.getcwd()}'). Point ${ENV_VAR} at the folder that holds the dataset, or prepare it there.",
    ]
    if required.how_to_create:
        lines.append(f"This path is derived data: {required.how_to_create}")
    lines.append(f"See {README} for how to download and prepare each dataset.")
    return "\n".join(lines)


def check_required_paths(name: str, required: Sequence[RequiredPath], root: Path) -> None:
    """Raise :class:`DatasetNotFoundError` for the first path in ``required`` that does not exist."""
    for item in required:
        if not os.path.exists(item.path):
            raise DatasetNotFoundError(_missing_path_message(name, item, root))


def _checked_load(
    name: str,
    loader: Callable[[], list[dict]],
    required: tuple[RequiredPath, ...],
    root: Path,
    prepare: Callable[[], object] | None,
) -> list[dict]:
    if prepare is not None:
        prepare()
    check_required_paths(name, required, root)
    return loader()


def register_dataset(
    name: str,
    loader: Callable[[], list[dict]],
    metadata: Mapping[str, Any],
    *,
    root: Path,
    required: Sequence[RequiredPath] = (),
    prepare: Callable[[], object] | None = None,
) -> None:
    """(Re-)register ``name``: its loader checks ``required`` paths first; its metadata replaces any old one.

    ``prepare`` (optional) runs at load time before the check, e.g. to generate synthetic data on first use.

    Idempotent: registering the same name again replaces the previous registration (also detectron2's builtin
    registration of that name), so a new root or new metadata takes effect.
    """
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, functools.partial(_checked_load, name, loader, tuple(required), root, prepare))
    MetadataCatalog.get(name).set(dataset_root=str(root), **metadata)
