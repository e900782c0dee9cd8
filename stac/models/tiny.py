"""A tiny three-class network with fixed random weights: fast tests of the export and head machinery.

It is deliberately made of the layers the real models use (strided and depthwise convolutions with
symmetric padding, BatchNorm, a global squeeze-excite gate), so a graph that is right for it is tested
on every kind of backward the real ones need.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import SegModel


class TinySeg(SegModel):
    """RGB [1, 3, H, W] (multiples of 4) -> logits [1, 3, H/4, W/4]."""

    name = "tiny"
    classes = ("dark", "mid", "bright")
    size_multiple = 4

    def __init__(self, seed: int = 0):
        super().__init__()
        self.native_size = (144, 256)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.depthwise = nn.Conv2d(8, 8, 3, 2, padding=1, groups=8)
        self.gate = nn.Conv2d(8, 8, 1)
        self.classify = nn.Conv2d(8, len(self.classes), 1)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
            bn = self.stem[1]
            bn.running_mean.copy_(torch.randn(8, generator=generator) * 0.1)
            bn.running_var.copy_(torch.rand(8, generator=generator) + 0.5)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = self.depthwise(self.stem(rgb * (2.0 / 255.0) - 1.0)).relu()
        x = x * torch.sigmoid(self.gate(x.mean(dim=(2, 3), keepdim=True)))
        return self.classify(x)
