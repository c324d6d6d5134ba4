"""Run an encoder at one fixed input size: SAM's and SAM2's official 1024x1024 (paper §4.1) inside Mask2Former.

The paper trains every model with Mask2Former's dataset defaults (Cityscapes: 512x1024 crops, full 1024x2048 images at
test time) and states that SAM and SAM2 nevertheless use their official 1024x1024 input. The authors' code did this,
in a code path later disabled, by giving the encoder 1024x1024 canvases at the image's own scale: a 512x1024 training
crop was stacked twice vertically into 1024x1024 and the top half of every feature map kept; a 1024x2048 test image
was cut into its left and right 1024x1024 halves whose feature maps were put side by side. :class:`FixedSizeInput`
generalises this without resizing anything:

* the normalized input ``(B, 3, H, W)`` is extended to a whole number of tiles, ``ceil(H/th) * th`` by
  ``ceil(W/tw) * tw``, with ``fill="zeros"`` (zero = the mean colour, as SAM pads its inputs and as every mgfusion
  encoder pads) or ``fill="repeat"`` (the image repeated periodically: a 512x1024 crop becomes the crop stacked twice,
  the authors' variant);
* each ``th x tw`` tile is encoded separately (all tiles of the batch in one call of the wrapped encoder);
* the tiles' feature maps are put back in place and cropped to ``ceil(H/s) x ceil(W/s)``.

So a 512x1024 crop is one 1024x1024 encoder input, a 1024x2048 image two, a 1024x1024 COCO crop one (unchanged).
The output keeps the wrapped encoder's strides, channels and pixel statistics: the decoder sees the usual pyramid.
``input_size=None`` passes the batch to the encoder as it comes (the authors' code at its last commit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import Encoder
from .sam2_fpn import apply_level_aliases

__all__ = ["FILL_MODES", "FixedSizeInput", "fill_canvas"]

#: how the canvas around an image is filled: zeros (mean colour) or the image repeated periodically
FILL_MODES = ("zeros", "repeat")


def fill_canvas(x: torch.Tensor, height: int, width: int, fill: str) -> torch.Tensor:
    """Extend ``x (B, C, H, W)`` at the bottom/right to ``(B, C, height, width)`` (``height >= H``, ``width >= W``).

    ``zeros``: zero padding. ``repeat``: pixel ``(i, j)`` of the canvas is pixel ``(i mod H, j mod W)`` of ``x``.
    """
    h, w = x.shape[-2:]
    if height < h or width < w:
        raise ValueError(f"canvas {height}x{width} is smaller than the input {h}x{w}")
    if (height, width) == (h, w):
        return x
    if fill == "zeros":
        return F.pad(x, (0, width - w, 0, height - h))
    if fill == "repeat":
        rows = torch.arange(height, device=x.device) % h
        cols = torch.arange(width, device=x.device) % w
        return x.index_select(-2, rows).index_select(-1, cols)
    raise ValueError(f"fill={fill!r}; valid: {', '.join(FILL_MODES)}")


class FixedSizeInput(Encoder):
    """An encoder that only ever sees ``input_size`` inputs (tiles of the image; module docstring).

    Args:
        encoder: the wrapped encoder (e.g. ``build_encoder("samvit_b", weights=...)``); freezing and tuning are
            the wrapped encoder's own settings.
        input_size: ``(th, tw)`` or one int for a square, each a multiple of the encoder's largest stride and of its
            ``size_divisibility`` (1024 for SAM and SAM2); ``None``: no tiling, the encoder sees the input as is.
        fill: ``zeros`` (default) or ``repeat`` (see :func:`fill_canvas`).

    ``forward(x: (B,3,H,W) normalized) -> {stride: (B, C_s, ceil(H/s), ceil(W/s))}``, like the wrapped encoder.
    """

    def __init__(self, *, encoder: Encoder, input_size: int | Sequence[int] | None, fill: str = "zeros") -> None:
        super().__init__()
        if not isinstance(encoder, Encoder):
            raise TypeError(f"FixedSizeInput wraps an mgfusion Encoder, got {type(encoder).__name__}")
        size = None
        if input_size is not None:
            size = (int(input_size),) * 2 if isinstance(input_size, int) else tuple(int(v) for v in input_size)
            if len(size) != 2:
                raise ValueError(f"input_size must be an int, (height, width) or null, got {input_size!r}")
            multiple = math.lcm(max(encoder.out_strides), int(encoder.size_divisibility))
            if any(v <= 0 or v % multiple for v in size):
                raise ValueError(f"input_size {size} must be positive multiples of {multiple} (the encoder's largest "
                                 f"stride {max(encoder.out_strides)} and its size_divisibility "
                                 f"{encoder.size_divisibility}), so that the tiles' feature maps fit together exactly")
        if fill not in FILL_MODES:
            raise ValueError(f"fill={fill!r}; valid: {', '.join(FILL_MODES)}")
        self.encoder = encoder
        self.input_size: tuple[int, int] | None = size
        self.fill = fill
        self.out_strides = tuple(encoder.out_strides)
        self.out_channels = dict(encoder.out_channels)
        self.pixel_mean = tuple(encoder.pixel_mean)
        self.pixel_std = tuple(encoder.pixel_std)
        self.size_divisibility = 1  # any input: the canvas is built here
        #: {output stride: stride whose map it repeats}, the wrapped encoder's (e.g. its reproduce_b9)
        self.level_aliases: dict[int, int] = dict(getattr(encoder, "level_aliases", {}) or {})
        if getattr(encoder, "registry_name", None):
            self.registry_name = encoder.registry_name

    @property
    def frozen(self) -> bool:
        """True when this wrapper or the wrapped encoder is frozen."""
        return self._frozen or bool(getattr(self.encoder, "frozen", False))

    def level_only_parameters(self, stride: int) -> list[nn.Parameter]:
        return self.encoder.level_only_parameters(stride)

    def tiles(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """The encoder inputs of ``x (B,3,H,W)``: ``(B * nh * nw, 3, th, tw)`` in batch, row, column order, and
        ``(nh, nw)``; ``x`` itself and (1, 1) without ``input_size``."""
        if self.input_size is None:
            return x, 1, 1
        th, tw = self.input_size
        nh, nw = math.ceil(x.shape[-2] / th), math.ceil(x.shape[-1] / tw)
        canvas = fill_canvas(x, nh * th, nw * tw, self.fill)
        b, c = x.shape[:2]
        tiles = canvas.reshape(b, c, nh, th, nw, tw).permute(0, 2, 4, 1, 3, 5).reshape(b * nh * nw, c, th, tw)
        return tiles, nh, nw

    def forward_padded(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        tiles, nh, nw = self.tiles(x)
        feats = self.encoder(tiles)
        b = x.shape[0]
        out = {}
        for s in self.out_strides:
            f = feats[s]
            c, h, w = f.shape[1:]
            out[s] = f.reshape(b, nh, nw, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b, c, nh * h, nw * w)
        return out

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Args: x: (B, 3, H, W) normalized images, any H, W.

        Returns: {stride: (B, out_channels[stride], ceil(H/stride), ceil(W/stride))}.
        """
        return apply_level_aliases(super().forward(x), self.level_aliases)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, fill={self.fill}, " + super().extra_repr()
