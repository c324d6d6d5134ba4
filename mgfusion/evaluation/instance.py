"""COCO mask AP for instance predictions whose class ids live in a dataset's (panoptic) contiguous space."""

from __future__ import annotations

import logging

import torch
from detectron2.data.catalog import Metadata
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import BitMasks

__all__ = ["InstanceSegEvaluator"]

logger = logging.getLogger(__name__)


class InstanceSegEvaluator(COCOEvaluator):
    """``COCOEvaluator`` on masks (task ``segm``) that accepts class ids in the metadata's contiguous space.

    Plain instance datasets use thing ids ``0..T-1`` and nothing changes. Panoptic datasets (Mask2Former
    convention) give things ids among all K classes (e.g. ADE20K: 100 things spread over 0..149); predictions are
    mapped to the things' rank and predictions of stuff classes are dropped. Missing ``pred_boxes`` are computed
    from the masks. Results: ``{"segm": {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-<class>", ...}}``.
    """

    def __init__(self, dataset_name: str, output_dir: str | None = None, *, distributed: bool = True):
        super().__init__(dataset_name, tasks=("segm",), distributed=distributed, output_dir=output_dir)
        meta = self._metadata
        by_dataset_id = sorted(meta.thing_dataset_id_to_contiguous_id.items())  # COCOeval orders by dataset id
        globals_sorted = sorted(g for _, g in by_dataset_id)
        if len(meta.thing_classes) == len(by_dataset_id):
            name_of = dict(zip(globals_sorted, meta.thing_classes))
        else:  # class lists that hold every category (detectron2's Cityscapes / COCO "standard" panoptic metadata)
            name_of = {g: meta.thing_classes[g] for g in globals_sorted}
        lut = torch.full((max(globals_sorted) + 1,), -1, dtype=torch.int64)
        for local, (_, global_id) in enumerate(by_dataset_id):
            lut[global_id] = local
        self._global_to_local = lut
        self._metadata = Metadata(
            name=meta.name,
            json_file=meta.json_file,
            thing_classes=[name_of[g] for _, g in by_dataset_id],
            thing_dataset_id_to_contiguous_id={d: i for i, (d, _) in enumerate(by_dataset_id)},
        )

    def _to_local(self, instances):
        instances = instances.to("cpu")
        classes = instances.pred_classes.to(torch.int64)
        if classes.numel() and classes.min() < 0:
            raise ValueError(f"Predicted class ids must be >= 0, got {classes.unique().tolist()}")
        known = classes < len(self._global_to_local)  # larger ids are stuff classes of a panoptic dataset
        local = torch.full_like(classes, -1)
        local[known] = self._global_to_local[classes[known]]
        keep = local >= 0
        instances = instances[keep]
        instances.pred_classes = local[keep]
        if not instances.has("pred_boxes"):
            instances.pred_boxes = BitMasks(instances.pred_masks).get_bounding_boxes()
        return instances

    def process(self, inputs, outputs):
        converted = [
            {**out, "instances": self._to_local(out["instances"])} if "instances" in out else out for out in outputs
        ]
        super().process(inputs, converted)
