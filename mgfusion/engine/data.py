"""Data side of the engine: dataset registration from the config, loading (and so checking) the datasets before
anything else is built, and detectron2 train/test loaders.

Registration is explicit: :func:`register_datasets` instantiates the dataset config's ``register`` node (nothing
relies on an import registering datasets). :func:`load_datasets` then reads the dataset dicts, so a missing dataset
fails with the loader's own message (``mgfusion.data.DatasetNotFoundError`` names the expected path) before a model
is built; the loaded dicts are handed to the loaders instead of being read again.

The train loader uses :class:`ResumableTrainingSampler`: detectron2's infinite shuffled index stream (seeded with
the run's seed, identical on every rank) started at the position a resumed run had reached, so a resumed run sees
the same images in the same order as an uninterrupted one. Random augmentation draws cannot be restored (they live
in data-loader worker processes); they are re-seeded deterministically from (seed, rank, resumed position).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from detectron2.data import (
    DatasetCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm
from hydra.utils import instantiate
from omegaconf import DictConfig

__all__ = [
    "ResumableTrainingSampler",
    "build_test_loader",
    "build_train_loader",
    "dataset_dicts",
    "load_datasets",
    "register_datasets",
]

logger = logging.getLogger(__name__)


class ResumableTrainingSampler(TrainingSampler):
    """detectron2's ``TrainingSampler`` that skips the first ``start_index`` indices of each rank's share.

    Args:
        size: dataset length.
        shuffle: shuffle each pass (``False``: ``0..size-1`` repeated).
        seed: shuffle seed, identical on all ranks (None: a shared random seed).
        start_index: number of samples this rank already consumed (``start_iter * per-rank images per step``).
    """

    def __init__(self, size: int, *, shuffle: bool = True, seed: int | None = None, start_index: int = 0) -> None:
        super().__init__(size, shuffle=shuffle, seed=seed)
        if start_index < 0:
            raise ValueError(f"start_index must be >= 0, got {start_index}")
        self._start_index = int(start_index)

    def __iter__(self) -> Iterator[int]:
        start = self._rank + self._start_index * self._world_size
        yield from itertools.islice(self._infinite_indices(), start, None, self._world_size)


def register_datasets(dataset_cfg: DictConfig) -> None:
    """Instantiate ``dataset.register`` if present (main process first, so a dataset generated on first use is
    written once), then check that every ``train``/``test`` name is registered in ``DatasetCatalog``."""
    register = dataset_cfg.get("register")
    if register is not None:
        if comm.is_main_process():
            instantiate(register, _convert_="all")
        comm.synchronize()
        if not comm.is_main_process():
            instantiate(register, _convert_="all")
    names = list(dataset_cfg.get("train") or []) + list(dataset_cfg.get("test") or [])
    missing = [n for n in names if n not in DatasetCatalog.list()]
    if missing:
        raise KeyError(
            f"dataset {dataset_cfg.get('name')!r}: {missing} not registered in detectron2's DatasetCatalog; "
            f"registered: {sorted(DatasetCatalog.list())}"
        )


def load_datasets(dataset_cfg: DictConfig, *, train: bool = True, test: bool = True) -> dict[str, list[dict]]:
    """Read the dataset dicts of the config's ``train`` and/or ``test`` names: ``{name: dicts}``.

    Raises the loader's error for a missing dataset (``DatasetNotFoundError``, a ``FileNotFoundError``, naming the
    expected path), ``ValueError`` for an empty one. Call it after :func:`register_datasets`, before building the model.
    """
    names = [*(dataset_cfg.get("train") or [] if train else []), *(dataset_cfg.get("test") or [] if test else [])]
    loaded: dict[str, list[dict]] = {}
    for name in dict.fromkeys(names):
        loaded[name] = DatasetCatalog.get(name)
        if len(loaded[name]) == 0:
            raise ValueError(f"dataset {name!r} is empty")
        logger.info("Dataset %s: %d images", name, len(loaded[name]))
    return loaded


def dataset_dicts(names: list[str], loaded: Mapping[str, list[dict]] | None = None) -> list[dict[str, Any]]:
    """Concatenated dataset dicts of the registered ``names`` (taken from ``loaded`` when there; error if a split
    is empty)."""
    dicts: list[dict[str, Any]] = []
    for name in names:
        d = loaded[name] if loaded is not None and name in loaded else DatasetCatalog.get(name)
        if len(d) == 0:
            raise ValueError(f"dataset {name!r} is empty")
        dicts.extend(d)
    return dicts


def drop_images_without_instances(dicts: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """The training images that have at least one non-crowd instance annotation (detectron2's
    ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``, on by default in Mask2Former's instance configs; docs/training.md, T7).
    Logs how many were dropped; raises if none is left. (detectron2's ``filter_images_with_only_crowd_annotations``
    does the filtering but fails with a bare KeyError on dicts without ``annotations`` and accepts an empty result.)"""
    kept = [d for d in dicts if any(int(a.get("iscrowd", 0)) == 0 for a in d.get("annotations", ()))]
    logger.info("filter_empty_annotations: dropped %d of %d training images of %s that have no non-crowd instance",
                len(dicts) - len(kept), len(dicts), ", ".join(names))
    if not kept:
        raise ValueError(f"no training image of {', '.join(names)} has a non-crowd instance annotation; check the "
                         "annotations or set dataset.filter_empty_annotations=false")
    return kept


def build_train_loader(
    dataset_cfg: DictConfig,
    *,
    images_per_step: int,
    batches_consumed: int,
    seed: int,
    num_workers: int,
    aspect_ratio_grouping: bool = True,
    loaded: Mapping[str, list[dict]] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Infinite loader of training micro-batches (``list[dict]`` of ``images_per_step // world_size`` images).

    Args:
        dataset_cfg: the ``dataset`` node (``train`` names, ``train_mapper``).
        images_per_step: images per micro-batch summed over all processes.
        batches_consumed: micro-batches the run already consumed (resumed position; 0 for a fresh run).
        seed: shuffle seed (same on all ranks).
        num_workers: data-loader worker processes per rank.
        loaded: dataset dicts already read by :func:`load_datasets` (not read again).
    """
    names = list(dataset_cfg.train)
    dicts = dataset_dicts(names, loaded)
    if dataset_cfg.get("filter_empty_annotations", False):
        dicts = drop_images_without_instances(dicts, names)
    mapper = instantiate(dataset_cfg.train_mapper, _convert_="all")
    per_rank = images_per_step // comm.get_world_size()
    sampler = ResumableTrainingSampler(len(dicts), shuffle=True, seed=seed, start_index=batches_consumed * per_rank)
    worker_seed = hash((seed, comm.get_rank(), batches_consumed)) & 0x7FFFFFFF  # int hashing is not salted
    return build_detection_train_loader(
        dataset=dicts, mapper=mapper, sampler=sampler, total_batch_size=images_per_step,
        aspect_ratio_grouping=aspect_ratio_grouping, num_workers=num_workers, seed=worker_seed,
    )  # fmt: skip


def build_test_loader(dataset_cfg: DictConfig, name: str, *, num_workers: int,
                      loaded: Mapping[str, list[dict]] | None = None) -> Any:
    """detectron2 inference loader of the registered test set ``name`` (batch 1, split across ranks); its dicts are
    taken from ``loaded`` when there."""
    mapper: Callable = instantiate(dataset_cfg.test_mapper, _convert_="all")
    return build_detection_test_loader(dataset=dataset_dicts([name], loaded), mapper=mapper, num_workers=num_workers)

