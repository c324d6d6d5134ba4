"""Source of a user's encoder module (written outside the repository by the plugin tests of both tools): a tiny
convolutional mgfusion Encoder class, without its registration (each test appends its own)."""

TINY_ENCODER_SOURCE = '''
import torch.nn.functional as F
from torch import nn

from mgfusion.backbones import Encoder, register_encoder


class TinyConvEncoder(Encoder):
    """Four strided convolutions: {4: w, 8: 2w, 16: 4w, 32: 8w} channels."""

    size_divisibility = 32

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        self.out_channels = {s: chans[i + 1] for i, s in enumerate((4, 8, 16, 32))}
        self.stages = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, stride=4 if i == 0 else 2, padding=1)
                                    for i in range(4))

    def forward_padded(self, x):
        out = {}
        for s, conv in zip((4, 8, 16, 32), self.stages):
            x = F.gelu(conv(x))
            out[s] = x
        return out
'''
