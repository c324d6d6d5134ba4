"""Turn one image's query predictions into semantic, instance or panoptic segmentation (Mask2Former rules)."""

from __future__ import annotations

import torch
from detectron2.structures import Boxes, Instances
from torch import Tensor

__all__ = ["instance_inference", "masks_to_boxes", "panoptic_inference", "semantic_inference"]


def semantic_inference(mask_cls: Tensor, mask_pred: Tensor) -> Tensor:
    """Per-class scores: sum over queries of p(class) * sigmoid(mask).

    Args:
        mask_cls: (Q, K+1) class logits (last = no object); mask_pred: (Q, H, W) mask logits.

    Returns:
        (K, H, W) float scores.
    """
    probs = mask_cls.float().softmax(-1)[:, :-1]
    return torch.einsum("qk,qhw->khw", probs, mask_pred.float().sigmoid())


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight XYXY boxes (max exclusive, pixel units) of binary masks (N, H, W); empty masks give zeros."""
    num, height, width = masks.shape
    if num == 0:
        return torch.zeros(0, 4, device=masks.device)
    rows = masks.any(dim=2).to(torch.uint8)  # (N, H)
    cols = masks.any(dim=1).to(torch.uint8)  # (N, W)
    y0 = rows.argmax(1)
    y1 = height - rows.flip(1).argmax(1)
    x0 = cols.argmax(1)
    x1 = width - cols.flip(1).argmax(1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return boxes * rows.any(dim=1, keepdim=True)


def panoptic_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    *,
    is_thing: Tensor,
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> tuple[Tensor, list[dict]]:
    """Panoptic segmentation by pixel-wise argmax of score-weighted masks of confident queries.

    Queries whose best class is not "no object" with probability > ``object_mask_threshold`` compete for
    pixels by score * sigmoid(mask); a query keeps the pixels it wins where its own mask is >= 0.5, and is
    dropped when that is less than ``overlap_threshold`` of its own mask. Stuff queries of the same class are
    merged into one segment.

    Args:
        mask_cls: (Q, K+1) class logits; mask_pred: (Q, H, W) mask logits.
        is_thing: bool (K,) True for thing classes.

    Returns:
        panoptic_seg int32 (H, W) with segment ids (0 = void) and segments_info, a list of
        {"id", "isthing", "category_id"} dicts (contiguous category ids), in the detectron2 format.
    """
    num_classes = mask_cls.shape[-1] - 1
    height, width = mask_pred.shape[-2:]
    scores, labels = mask_cls.float().softmax(-1).max(-1)
    keep = (labels != num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes = scores[keep], labels[keep]
    cur_masks = mask_pred[keep].float().sigmoid()
    panoptic_seg = torch.zeros((height, width), dtype=torch.int32, device=mask_pred.device)
    num = cur_masks.shape[0]
    if num == 0:
        return panoptic_seg, []
    owner = (cur_scores[:, None, None] * cur_masks).argmax(0)  # (H, W) winning query
    owner_fg = cur_masks.gather(0, owner[None])[0] >= 0.5
    won_area = torch.bincount(owner.flatten(), minlength=num)
    kept_area = torch.bincount(owner[owner_fg], minlength=num)
    own_area = (cur_masks >= 0.5).flatten(1).sum(1)
    stats = torch.stack([won_area, kept_area, own_area, cur_classes]).cpu().tolist()
    thing_flags = is_thing.cpu().tolist()

    segment_of_query = [0] * num
    segments_info: list[dict] = []
    stuff_segment: dict[int, int] = {}
    for k in range(num):
        won, kept, own, cls = stats[0][k], stats[1][k], stats[2][k], int(stats[3][k])
        if won <= 0 or own <= 0 or kept <= 0 or won / own < overlap_threshold:
            continue
        isthing = bool(thing_flags[cls])
        if not isthing and cls in stuff_segment:
            segment_of_query[k] = stuff_segment[cls]
            continue
        segment_id = len(segments_info) + 1
        if not isthing:
            stuff_segment[cls] = segment_id
        segment_of_query[k] = segment_id
        segments_info.append({"id": segment_id, "isthing": isthing, "category_id": cls})
    lut = torch.tensor(segment_of_query, dtype=torch.int32, device=mask_pred.device)
    panoptic_seg = torch.where(owner_fg, lut[owner], panoptic_seg)
    return panoptic_seg, segments_info


def instance_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    *,
    topk: int = 100,
    is_thing: Tensor | None = None,
) -> Instances:
    """Top-k (query, class) pairs as instances; score = p(class) * mean sigmoid(mask) inside the mask.

    Args:
        mask_cls: (Q, K+1) class logits; mask_pred: (Q, H, W) mask logits at the output size.
        topk: number of (query, class) pairs kept before the thing filter.
        is_thing: optional bool (K,); when given only thing classes are kept (panoptic models).

    Returns:
        Instances of size (H, W) with pred_masks bool (N, H, W), pred_boxes (XYXY from the masks), scores,
        pred_classes.
    """
    num_queries, num_logits = mask_cls.shape
    num_classes = num_logits - 1
    probs = mask_cls.float().softmax(-1)[:, :-1]
    top_scores, top_index = probs.flatten().topk(min(topk, probs.numel()), sorted=False)
    labels = top_index % num_classes
    queries = torch.div(top_index, num_classes, rounding_mode="floor")
    if is_thing is not None:
        keep = is_thing[labels]
        top_scores, labels, queries = top_scores[keep], labels[keep], queries[keep]
    masks = mask_pred[queries].float()
    binary = masks > 0
    mask_scores = (masks.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    result = Instances(tuple(mask_pred.shape[-2:]))
    result.pred_masks = binary
    result.pred_boxes = Boxes(masks_to_boxes(binary))
    result.scores = top_scores * mask_scores
    result.pred_classes = labels
    return result
