"""detectron2's COCOEvaluator, SemSegEvaluator and COCOPanopticEvaluator consume MaskFormer outputs.

Oracle query predictions built from the ground truth go through the library's inference functions and must
score 100 (AP, mIoU, PQ); a real (untrained) model's outputs must be accepted, and its mIoU must equal an independent
computation from its semantic output.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator
from detectron2.structures import BitMasks, BoxMode
from hydra.utils import instantiate
from omegaconf import OmegaConf
from panopticapi.utils import id2rgb
from PIL import Image

from mgfusion.modeling import instance_inference, panoptic_inference, semantic_inference

from .conftest import SHAPE_CLASSES, TinyBackbone, make_shapes_dataset

# detectron2's evaluators call np.array(torch_tensor, ...): torch's __array__ has no copy keyword (numpy 2 warns)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

THING_IDS = {1: 0, 2: 1}  # dataset category id -> contiguous id
STUFF_IDS = {1: 0, 2: 1, 3: 2}  # all categories, as in Mask2Former's panoptic registrations
IGNORE = 255


def load_png(path: str, dtype=np.uint8) -> np.ndarray:
    """SemSegEvaluator loader that works with numpy 2 (docs/install.md, breakages and workarounds)."""
    with open(path, "rb") as f:
        return np.asarray(Image.open(f), dtype=dtype)


@pytest.fixture(scope="module")
def shapes_dataset(tmp_path_factory):
    """Register 3 synthetic images with instance, semantic and panoptic ground truth; yield (name, samples)."""
    root = tmp_path_factory.mktemp("shapes")
    (root / "panoptic").mkdir()
    samples = make_shapes_dataset(3, size=64, seed=4)
    records, panoptic_annotations = [], []
    for sample in samples:
        masks, classes = sample["instances"].gt_masks.numpy(), sample["instances"].gt_classes.numpy()
        image_id, stem = sample["image_id"], f"image{sample['image_id']}"
        semantic = np.full((64, 64), IGNORE, dtype=np.uint8)
        panoptic = np.zeros((64, 64), dtype=np.uint32)
        annotations, segments = [], []
        for segment_id, (mask, cls) in enumerate(zip(masks, classes), start=1):
            semantic[mask] = cls
            panoptic[mask] = segment_id
            bbox = BitMasks(torch.from_numpy(mask[None])).get_bounding_boxes().tensor[0].tolist()
            xywh = [bbox[0], bbox[1], bbox[2] - bbox[0], bbox[3] - bbox[1]]
            segments.append(
                {"id": segment_id, "category_id": int(cls) + 1, "iscrowd": 0, "area": int(mask.sum()), "bbox": xywh}
            )
            if cls in THING_IDS.values():
                rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                annotations.append(
                    {
                        "bbox": xywh,
                        "bbox_mode": BoxMode.XYWH_ABS,
                        "category_id": int(cls),
                        "segmentation": rle,
                        "iscrowd": 0,
                    }
                )
        Image.fromarray(semantic).save(root / f"{stem}_sem.png")
        Image.fromarray(id2rgb(panoptic)).save(root / "panoptic" / f"{stem}.png")
        panoptic_annotations.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments})
        records.append(
            {
                "file_name": str(root / f"{stem}.jpg"),
                "image_id": image_id,
                "height": 64,
                "width": 64,
                "annotations": annotations,
                "sem_seg_file_name": str(root / f"{stem}_sem.png"),
            }
        )
    panoptic_json = root / "panoptic.json"
    panoptic_json.write_text(
        json.dumps(
            {
                "images": [
                    {"id": r["image_id"], "file_name": Path(r["file_name"]).name, "height": 64, "width": 64}
                    for r in records
                ],
                "annotations": panoptic_annotations,
                "categories": [
                    {"id": i + 1, "name": name, "isthing": int(i in THING_IDS.values())}
                    for i, (name, _) in enumerate(SHAPE_CLASSES)
                ],
            }
        )
    )
    name = f"mgfusion_test_shapes_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        thing_classes=[n for n, _ in SHAPE_CLASSES[:2]],
        thing_dataset_id_to_contiguous_id=THING_IDS,
        stuff_classes=[n for n, _ in SHAPE_CLASSES],
        stuff_dataset_id_to_contiguous_id=STUFF_IDS,
        ignore_label=IGNORE,
        panoptic_root=str(root / "panoptic"),
        panoptic_json=str(panoptic_json),
    )
    yield name, samples, records
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def evaluate_all(name: str, records: list[dict], outputs: list[dict], output_dir: Path) -> dict:
    evaluators = [
        COCOEvaluator(name, tasks=("segm",), distributed=False, output_dir=str(output_dir)),
        SemSegEvaluator(name, distributed=False, sem_seg_loading_fn=load_png),
        COCOPanopticEvaluator(name, output_dir=str(output_dir)),
    ]
    inputs = [{"file_name": r["file_name"], "image_id": r["image_id"]} for r in records]
    results = {}
    for evaluator in evaluators:
        evaluator.reset()
        evaluator.process(inputs, outputs)
        results.update(evaluator.evaluate())
    return results


def test_oracle_predictions_score_perfectly(shapes_dataset, tmp_path):
    name, samples, records = shapes_dataset
    is_thing = torch.tensor([True, True, False])
    outputs = []
    for sample in samples:
        masks, classes = sample["instances"].gt_masks, sample["instances"].gt_classes
        mask_pred = torch.where(masks, 10.0, -10.0)
        mask_cls = torch.zeros(len(classes), 4)
        mask_cls[torch.arange(len(classes)), classes] = 12.0
        outputs.append(
            {
                "sem_seg": semantic_inference(mask_cls, mask_pred),
                "instances": instance_inference(mask_cls, mask_pred, topk=100, is_thing=is_thing),
                "panoptic_seg": panoptic_inference(mask_cls, mask_pred, is_thing=is_thing),
            }
        )
    results = evaluate_all(name, records, outputs, tmp_path)
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert results["sem_seg"]["mIoU"] == pytest.approx(100.0)
    assert results["panoptic_seg"]["PQ"] == pytest.approx(100.0)


def test_model_outputs_are_accepted(shapes_dataset, tmp_path, tiny_model_cfg):
    name, samples, records = shapes_dataset
    torch.manual_seed(0)
    cfg = OmegaConf.merge(tiny_model_cfg, {"num_classes": 3, "instance_on": True, "panoptic_on": True})
    model = instantiate(cfg, backbone=TinyBackbone(), metadata=MetadataCatalog.get(name)).eval()
    with torch.no_grad():
        outputs = model([{"image": s["image"], "height": 64, "width": 64} for s in samples])
    results = evaluate_all(name, records, outputs, tmp_path)
    assert {"AP", "AP-rectangle", "AP-disc"} <= set(results["segm"]) and "AP-ground" not in results["segm"]
    assert {"PQ", "PQ_th", "PQ_st"} <= set(results["panoptic_seg"])
    # the model's semantic output, scored independently: IoU over the labelled pixels of every class in the ground
    # truth, averaged (detectron2's mIoU definition)
    pred = torch.stack([out["sem_seg"].argmax(0) for out in outputs])
    gt = torch.full_like(pred, IGNORE)
    for i, sample in enumerate(samples):
        for mask, cls in zip(sample["instances"].gt_masks, sample["instances"].gt_classes):
            gt[i][mask] = int(cls)
    labelled = gt != IGNORE
    ious = [((pred == c) & (gt == c)).sum() / (((pred == c) | (gt == c)) & labelled).sum()
            for c in range(3) if (gt == c).any()]
    assert results["sem_seg"]["mIoU"] == pytest.approx(100 * torch.stack(ious).mean().item(), rel=1e-6)
