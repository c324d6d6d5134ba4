"""The classes a model predicts (names, colours, dataset category ids), from the dataset's detectron2 metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from detectron2.data import Metadata

from mgfusion.data.categories import distinct_colors

__all__ = ["ClassTable"]


def _reverse(mapping: Any, num_classes: int) -> list[int] | None:
    """Dataset ids by contiguous id from ``{dataset_id: contiguous_id}``, if it covers ``0..num_classes-1``."""
    if not mapping:
        return None
    by_contiguous = {int(c): int(d) for d, c in dict(mapping).items()}
    if sorted(by_contiguous) != list(range(num_classes)):
        return None
    return [by_contiguous[i] for i in range(num_classes)]


@dataclass(frozen=True)
class ClassTable:
    """Per contiguous class id ``0..K-1``: name, RGB colour, dataset category id and whether it is a thing.

    Built from Mask2Former-convention metadata (see :mod:`mgfusion.data.categories`): ``stuff_classes`` lists all K
    classes of panoptic/semantic datasets, ``thing_classes`` those of instance datasets. Semantic-only datasets
    without a dataset-id mapping use the contiguous id as category id.
    """

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    dataset_ids: tuple[int, ...]
    is_thing: tuple[bool, ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @classmethod
    def from_metadata(cls, metadata: Metadata, num_classes: int) -> ClassTable:
        """Raises ValueError naming the metadata's class lists when neither has ``num_classes`` entries."""
        stuff = list(getattr(metadata, "stuff_classes", None) or [])
        things = list(getattr(metadata, "thing_classes", None) or [])
        if len(stuff) == num_classes:
            names, colors = stuff, getattr(metadata, "stuff_colors", None)
        elif len(things) == num_classes:
            names, colors = things, getattr(metadata, "thing_colors", None)
        else:
            raise ValueError(
                f"the model predicts {num_classes} classes but dataset {getattr(metadata, 'name', '?')!r} lists "
                f"{len(stuff)} stuff_classes and {len(things)} thing_classes; the run's dataset config does not "
                "match its model"
            )
        if colors is None or len(colors) != num_classes:
            colors = distinct_colors(num_classes)
        thing_map = getattr(metadata, "thing_dataset_id_to_contiguous_id", None) or {}
        ids = (_reverse(getattr(metadata, "stuff_dataset_id_to_contiguous_id", None), num_classes)
               or _reverse(thing_map, num_classes) or list(range(num_classes)))
        thing_ids = {int(c) for c in dict(thing_map).values()}
        return cls(names=tuple(str(n) for n in names), colors=tuple(tuple(int(v) for v in c) for c in colors),
                   dataset_ids=tuple(ids), is_thing=tuple(i in thing_ids for i in range(num_classes)))

    def visual_metadata(self) -> Metadata:
        """Metadata for detectron2's ``Visualizer`` in which thing and stuff lists are both indexed by contiguous id
        (panoptic datasets whose thing ids are not ``0..T-1`` would otherwise be labelled with the wrong names)."""
        names, colors = list(self.names), [list(c) for c in self.colors]
        return Metadata(name="mgfusion_predictions", thing_classes=names, thing_colors=colors,
                        stuff_classes=names, stuff_colors=colors)

    def categories(self) -> list[dict[str, Any]]:
        """COCO ``categories`` entries: id, name, isthing, color."""
        return [{"id": d, "name": n, "isthing": int(t), "color": list(c)}
                for d, n, t, c in zip(self.dataset_ids, self.names, self.is_thing, self.colors)]
