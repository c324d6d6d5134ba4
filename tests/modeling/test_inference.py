"""Semantic, instance and panoptic inference rules on hand-built query predictions."""

from __future__ import annotations

import math

import torch
from detectron2.structures import BitMasks

from mgfusion.modeling import (
    instance_inference,
    masks_to_boxes,
    panoptic_inference,
    semantic_inference,
)


def class_logits(probabilities):
    """Logits whose softmax is the given rows of probabilities (K+1 entries each)."""
    return torch.tensor([[math.log(p) for p in row] for row in probabilities])


def test_semantic_inference_sums_class_probability_times_mask_probability():
    generator = torch.Generator().manual_seed(0)
    mask_cls = torch.randn(5, 4, generator=generator)
    mask_pred = torch.randn(5, 6, 7, generator=generator)
    out = semantic_inference(mask_cls, mask_pred)
    assert out.shape == (3, 6, 7)
    probs = mask_cls.softmax(-1)
    expected = sum(probs[q, :3, None, None] * mask_pred[q].sigmoid()[None] for q in range(5))
    torch.testing.assert_close(out, expected)


def test_masks_to_boxes_matches_detectron2_bitmasks():
    masks = torch.zeros(3, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 9, 0] = True
    boxes = masks_to_boxes(masks)
    torch.testing.assert_close(boxes, BitMasks(masks).get_bounding_boxes().tensor)
    assert boxes[2].tolist() == [0, 0, 0, 0]


def panoptic_case():
    """Classes: 0, 1 things; 2 stuff. 8x8 masks as +-10 logits."""
    h = w = 8
    region = torch.zeros(6, h, w, dtype=torch.bool)
    region[0, :, :4] = True  # thing 0, left half
    region[1, 6:, 4:] = True  # stuff 2, bottom right
    region[2, :2, 4:] = True  # stuff 2, top right -> merged with query 1
    region[3, 2:6, 4:] = True  # "no object" query -> dropped
    region[4, :, :3] = True  # thing 1 inside query 0's area but lower score -> loses pixels, dropped
    region[5, 2:6, 4:] = True  # thing 1 with low confidence -> dropped
    mask_pred = torch.where(region, 10.0, -10.0)
    mask_cls = class_logits(
        [
            [0.95, 0.02, 0.02, 0.01],
            [0.02, 0.02, 0.9, 0.06],
            [0.03, 0.02, 0.9, 0.05],
            [0.05, 0.05, 0.05, 0.85],
            [0.02, 0.85, 0.03, 0.1],
            [0.2, 0.5, 0.2, 0.1],
        ]
    )
    return mask_cls, mask_pred, region


def test_panoptic_inference_thresholds_overlap_and_stuff_merging():
    mask_cls, mask_pred, region = panoptic_case()
    is_thing = torch.tensor([True, True, False])
    panoptic, segments = panoptic_inference(mask_cls, mask_pred, is_thing=is_thing)
    assert panoptic.dtype == torch.int32 and panoptic.shape == (8, 8)
    assert segments == [
        {"id": 1, "isthing": True, "category_id": 0},
        {"id": 2, "isthing": False, "category_id": 2},
    ]
    expected = torch.zeros(8, 8, dtype=torch.int32)
    expected[region[0]] = 1
    expected[region[1] | region[2]] = 2
    assert torch.equal(panoptic, expected)


def test_panoptic_overlap_threshold_keeps_partially_covered_segment_when_lowered():
    mask_cls, mask_pred, _ = panoptic_case()
    # query 4 keeps none of its pixels (query 0 wins all): dropped at any threshold
    is_thing = torch.tensor([True, True, False])
    _, segments = panoptic_inference(mask_cls, mask_pred, is_thing=is_thing, overlap_threshold=0.0)
    assert [s["category_id"] for s in segments] == [0, 2]
    # query 5 becomes confident enough with a lower object threshold and owns its area
    _, segments = panoptic_inference(mask_cls, mask_pred, is_thing=is_thing, object_mask_threshold=0.4)
    assert [s["category_id"] for s in segments] == [0, 2, 1]


def test_panoptic_without_confident_queries_is_void():
    mask_cls = class_logits([[0.1, 0.1, 0.1, 0.7]] * 3)
    panoptic, segments = panoptic_inference(mask_cls, torch.randn(3, 5, 5), is_thing=torch.tensor([True, True, False]))
    assert segments == [] and panoptic.abs().sum() == 0


def test_instance_inference_top_k_scores_and_thing_filter():
    mask_pred = torch.full((2, 6, 6), -10.0)
    mask_pred[0, :3, :3] = 2.0
    mask_pred[1, 3:, 2:] = 0.5
    mask_cls = class_logits([[0.7, 0.1, 0.15, 0.05], [0.2, 0.6, 0.1, 0.1]])
    result = instance_inference(mask_cls, mask_pred, topk=4)
    assert len(result) == 4 and result.image_size == (6, 6)
    order = result.scores.argsort(descending=True)
    top = order[0]
    assert result.pred_classes[top] == 0
    torch.testing.assert_close(result.scores[top], torch.tensor(0.7) * torch.sigmoid(torch.tensor(2.0)))
    assert result.pred_masks.dtype == torch.bool
    assert result.pred_boxes.tensor[top].tolist() == [0, 0, 3, 3]
    things_only = instance_inference(mask_cls, mask_pred, topk=6, is_thing=torch.tensor([True, False, False]))
    assert set(things_only.pred_classes.tolist()) == {0} and len(things_only) == 2
