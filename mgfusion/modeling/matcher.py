"""Hungarian matching of predicted masks to ground-truth segments (class + sigmoid BCE + dice costs)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from .point_sampling import point_sample

__all__ = ["HungarianMatcher", "Target"]

Target = dict[str, Tensor]  # {"labels": int64 (T,), "masks": bool/uint8/float (T, H, W) at the padded image size}


def concat_target_masks(targets: list[Target]) -> Tensor:
    """All images' target masks as one float32 (T_total, 1, H, W) batch (same padded size per batch)."""
    masks = [t["masks"] for t in targets]
    sizes = {tuple(m.shape[-2:]) for m in masks}
    if len(sizes) > 1:
        raise ValueError(f"target masks of one batch must share the padded image size, got {sorted(sizes)}")
    return torch.cat(masks, dim=0).unsqueeze(1).float()


def pairwise_mask_costs(pred_points: Tensor, target_points: Tensor) -> tuple[Tensor, Tensor]:
    """Mean sigmoid BCE and dice loss between every prediction and every target on shared points.

    Args:
        pred_points: (N, P) float32 mask logits; target_points: (T, P) float32 labels in [0, 1].

    Returns:
        (N, T) BCE cost and (N, T) dice cost.
    """
    num_points = pred_points.shape[1]
    # BCE(x, t) = softplus(x) - x * t, averaged over points
    bce = (F.softplus(pred_points).sum(-1, keepdim=True) - pred_points @ target_points.T) / num_points
    probs = pred_points.sigmoid()
    numerator = 2.0 * (probs @ target_points.T)
    denominator = probs.sum(-1, keepdim=True) + target_points.sum(-1)[None, :]
    dice = 1.0 - (numerator + 1.0) / (denominator + 1.0)
    return bce, dice


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets minimizing a weighted cost, per image and layer.

    cost = class_weight * (-p(target class)) + mask_weight * BCE + dice_weight * dice, with BCE and dice on
    ``num_points`` uniformly random points shared by predictions and targets (the same points for every layer
    and image of one call). Costs are computed batched on the predictions' device in fp32; one host copy per
    call feeds scipy's ``linear_sum_assignment``.
    """

    def __init__(
        self, *, class_weight: float = 2.0, mask_weight: float = 5.0, dice_weight: float = 5.0, num_points: int = 12544
    ) -> None:
        super().__init__()
        if class_weight == 0 and mask_weight == 0 and dice_weight == 0:
            raise ValueError("matcher cost weights cannot all be 0")
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrices(
        self, layer_logits: Tensor, layer_masks: Tensor, targets: list[Target], points: Tensor
    ) -> Tensor:
        """Costs of all (layer, image, query) predictions against all targets of the batch.

        Args:
            layer_logits: (L, B, Q, K+1) class logits; layer_masks: (L, B, Q, h, w) mask logits.
            targets: B dicts with "labels" (T_b,) and "masks" (T_b, H, W).
            points: (P, 2) normalized (x, y) points.

        Returns:
            (L, B, Q, T_total) float32; image b's block is columns sum(T_<b) ... sum(T_<=b).
        """
        num_layers, batch, num_queries = layer_logits.shape[:3]
        if len(targets) != batch:
            raise ValueError(f"got {len(targets)} targets for a batch of {batch} images")
        with torch.autocast(device_type=layer_logits.device.type, enabled=False):
            labels = torch.cat([t["labels"] for t in targets])
            probs = layer_logits.float().softmax(-1)
            cost_class = -probs[..., labels]  # (L, B, Q, T)
            target_points = point_sample(
                concat_target_masks(targets), points.expand(labels.shape[0], -1, -1)
            ).squeeze(1)  # (T, P)
            height, width = layer_masks.shape[-2:]
            masks = layer_masks.transpose(0, 1).reshape(batch, num_layers * num_queries, height, width).float()
            pred_points = point_sample(masks, points.expand(batch, -1, -1))  # (B, L*Q, P)
            pred_points = pred_points.view(batch, num_layers, num_queries, -1).transpose(0, 1).flatten(0, 2)
            cost_bce, cost_dice = pairwise_mask_costs(pred_points, target_points)
            cost_mask = (self.mask_weight * cost_bce + self.dice_weight * cost_dice).view(cost_class.shape)
            return self.class_weight * cost_class + cost_mask

    @torch.no_grad()
    def match_layers(
        self, layer_logits: Tensor, layer_masks: Tensor, targets: list[Target], generator: torch.Generator | None = None
    ) -> list[list[tuple[Tensor, Tensor]]]:
        """Match every layer's predictions (shapes as in :meth:`cost_matrices`).

        Returns:
            [layer][image] -> (query indices, target indices), int64 CPU tensors of equal length
            min(Q, T_b), sorted by query index.
        """
        device = layer_logits.device
        points = torch.rand(self.num_points, 2, device=device, generator=generator)
        costs = self.cost_matrices(layer_logits, layer_masks, targets, points)
        costs = np.nan_to_num(costs.cpu().numpy(), nan=1e8, posinf=1e8, neginf=-1e8)
        bounds = np.cumsum([0] + [len(t["labels"]) for t in targets])
        matches = []
        for layer_costs in costs:
            per_image = []
            for b, image_costs in enumerate(layer_costs):
                rows, cols = linear_sum_assignment(image_costs[:, bounds[b] : bounds[b + 1]])
                per_image.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
            matches.append(per_image)
        return matches

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], targets: list[Target]) -> list[tuple[Tensor, Tensor]]:
        """Match one prediction set: ``outputs`` has "pred_logits" (B, Q, K+1) and "pred_masks" (B, Q, h, w).

        Returns one (query indices, target indices) pair per image.
        """
        return self.match_layers(outputs["pred_logits"][None], outputs["pred_masks"][None], targets)[0]
