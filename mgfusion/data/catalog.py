"""Dataset root resolution, mgfusion's dataset names, and checked registration into detectron2's catalogs.

Every mgfusion dataset is registered through :func:`register_dataset` under a name that starts with
:data:`PREFIX` (``mgf_``), so detectron2's built-in names (``coco_2017_train``, ``cityscapes_fine_*``,
``ade20k_sem_seg_*``, ...) and their metadata stay intact. Registering an mgfusion name again replaces it (a new
root takes effect); a name that mgfusion did not register (detectron2's or a user's) is replaced only with
``replace=True``. Each loader is wrapped so that a missing folder or file fails at load time with a
:class:`DatasetNotFoundError` naming the expected path, ``$DETECTRON2_DATASETS`` and ``datasets/README.md``.
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
#: every dataset name mgfusion registers starts with this prefix (see :func:`mgf_name`).
PREFIX = "mgf_"

__all__ = [
    "ENV_VAR",
    "PREFIX",
    "DatasetNotFoundError",
    "DatasetRegistrationError",
    "RequiredPath",
    "alias_dataset",
    "datasets_root",
    "is_mgfusion_dataset",
    "mgf_name",
    "register_dataset",
]

# names registered by this module (and not replaced since): only these are re-registered without replace=True
_OWNED: set[str] = set()


class DatasetNotFoundError(FileNotFoundError):
    """A registered dataset's folder or annotation file is missing."""


class DatasetRegistrationError(ValueError):
    """A registration would replace a dataset name that mgfusion does not own (e.g. a detectron2 built-in)."""


def mgf_name(name: str) -> str:
    """mgfusion's registered name of the dataset known to detectron2 / Mask2Former as ``name``
    (``"coco_2017_val"`` -> ``"mgf_coco_2017_val"``)."""
    return name if name.startswith(PREFIX) else PREFIX + name


def is_mgfusion_dataset(name: str) -> bool:
    """Whether ``name`` is currently registered by mgfusion (not by detectron2 or another library)."""
    return name in _OWNED and name in DatasetCatalog.list()


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
        (
            f"The datasets root is '{root}' ({origin}; relative paths are taken from the current directory "
            f"'{os.getcwd()}'). Point ${ENV_VAR} at the folder that holds the dataset, or prepare it there."
        ),
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


def _check_replaceable(name: str, replace: bool) -> None:
    taken = name in DatasetCatalog.list() or name in MetadataCatalog.list()
    if taken and not replace and name not in _OWNED:
        raise DatasetRegistrationError(
            f"Dataset name '{name}' is already registered by another library (e.g. detectron2's built-in datasets); "
            f"mgfusion does not replace it unless asked. Use mgfusion's own name '{mgf_name(name)}', or pass "
            f"replace=True (mgfusion.data.register_all(replace_builtin=True)) to replace it deliberately."
        )


def _remove(name: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def register_dataset(
    name: str,
    loader: Callable[[], list[dict]],
    metadata: Mapping[str, Any],
    *,
    root: Path,
    required: Sequence[RequiredPath] = (),
    prepare: Callable[[], object] | None = None,
    replace: bool = False,
) -> None:
    """(Re-)register ``name``: its loader checks ``required`` paths first; its metadata replaces any old one.

    ``prepare`` (optional) runs at load time before the check, e.g. to generate synthetic data on first use.

    Idempotent for mgfusion's own names: registering one again replaces the previous registration, so a new root
    or new metadata takes effect.

    Raises:
        DatasetRegistrationError: ``name`` is registered by someone else (detectron2's built-ins, a user) and
            ``replace`` is false.
    """
    _check_replaceable(name, replace)
    _remove(name)
    DatasetCatalog.register(name, functools.partial(_checked_load, name, loader, tuple(required), root, prepare))
    MetadataCatalog.get(name).set(dataset_root=str(root), **metadata)
    _OWNED.add(name)


def alias_dataset(name: str, alias: str, *, replace: bool = False) -> None:
    """Register the mgfusion dataset ``name`` also as ``alias`` (same loader, same metadata).

    Used by ``register_all(replace_builtin=True)`` to make detectron2's built-in names point at mgfusion's
    registrations. Raises :class:`DatasetRegistrationError` as :func:`register_dataset` does.
    """
    if name not in _OWNED:
        raise DatasetRegistrationError(f"'{name}' is not an mgfusion dataset; only those can be aliased")
    _check_replaceable(alias, replace)
    _remove(alias)
    DatasetCatalog.register(alias, DatasetCatalog[name])
    metadata = {k: v for k, v in MetadataCatalog.get(name).as_dict().items() if k != "name"}
    MetadataCatalog.get(alias).set(**metadata)
    _OWNED.add(alias)
