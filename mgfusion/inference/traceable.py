"""Tensor-in / tensor-out views of a trained MaskFormer, for tracing and export (ONNX, TorchScript).

Both modules take raw RGB pixels (B, 3, H, W) float 0-255 with H and W multiples of the model's
``size_divisibility`` (pad the image beforehand: padding raw pixels with ``model.pixel_mean`` equals the model's own
zero padding after normalization) and contain no Python control flow that depends on values.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MaskFormerLogits", "SemanticScores"]


class MaskFormerLogits(nn.Module):
    """images (B, 3, H, W) → class logits (B, Q, K+1) (last = no object) and mask logits (B, Q, H/4, W/4).

    Instance and panoptic post-processing of these raw outputs is
    :func:`mgfusion.modeling.instance_inference` / :func:`mgfusion.modeling.panoptic_inference` per image, after the
    mask logits are bilinearly resized to (H, W) and cropped to the unpadded image.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = (images - self.model.pixel_mean) / self.model.pixel_std
        outputs = self.model.forward_head(x)
        return outputs["pred_logits"], outputs["pred_masks"]


class SemanticScores(nn.Module):
    """images (B, 3, H, W) → semantic scores (B, K, H, W): sum over queries of p(class) * sigmoid(mask), masks
    bilinearly upsampled to (H, W) first (= :meth:`MaskFormer.semantic_scores`; argmax over K = the class map)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.logits = MaskFormerLogits(model)

    def forward(self, images: Tensor) -> Tensor:
        pred_logits, pred_masks = self.logits(images)
        masks = F.interpolate(pred_masks.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
        probs = pred_logits.float().softmax(-1)[..., :-1]
        return (probs.transpose(1, 2) @ masks.sigmoid().flatten(2)).unflatten(2, masks.shape[-2:])
