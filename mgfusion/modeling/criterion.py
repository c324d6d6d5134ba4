"""Mask2Former set criterion: class CE + point-sampled mask BCE and dice after Hungarian matching, all layers."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import small_tensor
from .matcher import HungarianMatcher, Target, concat_target_masks
from .point_sampling import point_sample, sample_uncertain_points

__all__ = ["SetCriterion", "dice_loss", "sigmoid_bce_loss"]


def sigmoid_bce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean sigmoid BCE over points: (N, P) logits and labels -> (N,)."""
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1)


def dice_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Soft dice loss with +1 smoothing: (N, P) logits and labels -> (N,)."""
    probs = logits.sigmoid()
    numerator = 2.0 * (probs * labels).sum(1)
    denominator = probs.sum(1) + labels.sum(1)
    return 1.0 - (numerator + 1.0) / (denominator + 1.0)


def stack_layer_predictions(outputs: dict) -> tuple[Tensor, Tensor]:
    """(L, B, Q, K+1) logits and (L, B, Q, h, w) masks of all layers, last layer last.

    Uses the decoder's stacked ``layer_logits``/``layer_masks`` when present, else stacks ``aux_outputs`` and
    the final ``pred_logits``/``pred_masks`` (original Mask2Former output format).
    """
    if "layer_logits" in outputs:
        return outputs["layer_logits"], outputs["layer_masks"]
    preds = list(outputs.get("aux_outputs", [])) + [outputs]
    return torch.stack([p["pred_logits"] for p in preds]), torch.stack([p["pred_masks"] for p in preds])


def _average_num_masks(num_masks: int, device: torch.device) -> Tensor:
    """Number of target masks per worker (averaged over DDP workers), at least 1."""
    total = small_tensor(float(num_masks), torch.float32, device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(total)
        total = total / dist.get_world_size()
    return total.clamp(min=1.0)


class SetCriterion(nn.Module):
    """Mask2Former losses with deep supervision.

    Each layer's predictions are matched to the targets (:class:`HungarianMatcher`); then
    ``loss_ce`` = class cross-entropy over all queries (unmatched -> "no object", weighted ``no_object_weight``),
    ``loss_mask`` = sigmoid BCE and ``loss_dice`` = dice of matched masks on ``num_points`` points per mask
    (``importance_sample_ratio`` of them the most uncertain of ``oversample_ratio * num_points`` random
    candidates), summed over masks and divided by the number of target masks. All layers are computed in one
    batched pass in fp32.

    Returns weighted losses: ``loss_ce``, ``loss_mask``, ``loss_dice`` for the last layer and ``loss_ce_i``,
    ``loss_mask_i``, ``loss_dice_i`` for the earlier predictions i = 0 .. L-2 (with ``deep_supervision``).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        matcher: HungarianMatcher | None = None,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher or HungarianMatcher(
            class_weight=class_weight, mask_weight=mask_weight, dice_weight=dice_weight, num_points=num_points
        )
        self.weight_dict = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.deep_supervision = deep_supervision
        class_weights = torch.ones(num_classes + 1)
        class_weights[-1] = no_object_weight
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(
        self, outputs: dict, targets: list[Target], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Compute the losses.

        Args:
            outputs: decoder output (``layer_logits``/``layer_masks`` or Mask2Former's pred_*/aux_outputs).
            targets: per image {"labels": int64 (T,), "masks": (T, H, W) at the padded image size}.
            generator: optional RNG for the point sampling.

        Returns:
            dict of scalar fp32 loss tensors (already multiplied by their weights).
        """
        layer_logits, layer_masks = stack_layer_predictions(outputs)
        if layer_logits.shape[-1] != self.num_classes + 1:
            raise ValueError(
                f"criterion built for {self.num_classes} classes got logits with {layer_logits.shape[-1]} entries"
            )
        if not self.deep_supervision:
            layer_logits, layer_masks = layer_logits[-1:], layer_masks[-1:]
        device = layer_logits.device
        matches = self.matcher.match_layers(layer_logits, layer_masks, targets, generator=generator)
        index = _flatten_matches(matches, [len(t["labels"]) for t in targets], device)
        num_masks = _average_num_masks(sum(len(t["labels"]) for t in targets), device)
        with torch.autocast(device_type=device.type, enabled=False):
            loss_ce = self._class_losses(layer_logits.float(), targets, index)
            loss_mask, loss_dice = self._mask_losses(layer_masks, targets, index, num_masks, generator)
        losses: dict[str, Tensor] = {}
        num_preds = layer_logits.shape[0]
        for i in range(num_preds):
            suffix = "" if i == num_preds - 1 else f"_{i}"
            losses["loss_ce" + suffix] = loss_ce[i] * self.weight_dict["loss_ce"]
            losses["loss_mask" + suffix] = loss_mask[i] * self.weight_dict["loss_mask"]
            losses["loss_dice" + suffix] = loss_dice[i] * self.weight_dict["loss_dice"]
        return losses

    def _class_losses(self, layer_logits: Tensor, targets: list[Target], index: dict[str, Tensor]) -> Tensor:
        """Weighted-mean cross-entropy per layer: (L,)."""
        num_layers, batch, num_queries, num_logits = layer_logits.shape
        labels = torch.cat([t["labels"] for t in targets]).to(device=layer_logits.device, dtype=torch.int64)
        target_classes = torch.full(
            (num_layers, batch, num_queries), self.num_classes, dtype=torch.int64, device=layer_logits.device
        )
        target_classes[index["layer"], index["image"], index["query"]] = labels[index["target"]]
        nll = F.cross_entropy(
            layer_logits.reshape(-1, num_logits), target_classes.flatten(), weight=self.class_weights, reduction="none"
        ).view(num_layers, -1)
        return nll.sum(1) / self.class_weights[target_classes].view(num_layers, -1).sum(1)

    def _mask_losses(
        self,
        layer_masks: Tensor,
        targets: list[Target],
        index: dict[str, Tensor],
        num_masks: Tensor,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        """Point-sampled BCE and dice summed per layer over matched masks / num_masks: two (L,) tensors."""
        num_layers = layer_masks.shape[0]
        if index["layer"].numel() == 0:
            zero = layer_masks.sum() * 0.0
            return zero.float().expand(num_layers), zero.float().expand(num_layers)
        # index the decoder's (B, L, Q, h, w) storage directly so the backward fills a tensor of that layout
        pred = layer_masks.transpose(0, 1)[index["image"], index["layer"], index["query"]].float()  # (M, h, w)
        points = sample_uncertain_points(
            pred, self.num_points, self.oversample_ratio, self.importance_sample_ratio, generator=generator
        )  # (M, P, 2)
        pred_points = point_sample(pred.unsqueeze(1), points).squeeze(1)  # (M, P)
        with torch.no_grad():
            target_masks = concat_target_masks(targets)
            # each target is sampled once per layer at that layer's points: grid (T, L, P, 2)
            grid = points.new_zeros(target_masks.shape[0], num_layers, self.num_points, 2)
            grid[index["target"], index["layer"]] = points
            target_points = point_sample(target_masks, grid)[:, 0][index["target"], index["layer"]]  # (M, P)
        per_mask_bce = sigmoid_bce_loss(pred_points, target_points)
        per_mask_dice = dice_loss(pred_points, target_points)
        zeros = pred_points.new_zeros(num_layers)
        loss_mask = zeros.index_add(0, index["layer"], per_mask_bce) / num_masks
        loss_dice = zeros.index_add(0, index["layer"], per_mask_dice) / num_masks
        return loss_mask, loss_dice


def _flatten_matches(
    matches: list[list[tuple[Tensor, Tensor]]], num_targets: list[int], device: torch.device
) -> dict[str, Tensor]:
    """Matched pairs of all layers and images as flat index tensors on ``device``.

    Returns {"layer", "image", "query", "target"} int64 (M,) tensors; "target" indexes the batch's concatenated
    targets.
    """
    offsets = torch.tensor([0] + num_targets).cumsum(0)
    layer, image, query, target = [], [], [], []
    for layer_id, per_image in enumerate(matches):
        for image_id, (queries, targets) in enumerate(per_image):
            layer.append(torch.full_like(queries, layer_id))
            image.append(torch.full_like(queries, image_id))
            query.append(queries)
            target.append(targets + offsets[image_id])
    flat = torch.stack([torch.cat(layer), torch.cat(image), torch.cat(query), torch.cat(target)])
    flat = flat.to(device, non_blocking=True)
    return {"layer": flat[0], "image": flat[1], "query": flat[2], "target": flat[3]}
