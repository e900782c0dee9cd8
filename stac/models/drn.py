"""DRN-D-22 and DRN-D-38 semantic segmentation (Yu et al., "Dilated Residual Networks", CVPR 2017).

Written from the paper and the published architecture so that the state_dict layout is the one of
fyu/drn's ``DRNSeg`` checkpoints (``drn_d_22_cityscapes.pth``): ``base.{0..8}.*`` for the dilated
backbone without its classifier, ``seg.*`` the 1x1 class projection at stride 8, ``up.*`` the fixed
bilinear 16x16 transposed convolution back to full resolution. No weights ship in any registry: bring a
checkpoint with ``--weights``; without one the weights are random (tests and timing only).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import SegModel

CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle")
# fyu/drn's Cityscapes normalization (info.json), for RGB in 0..1
CITYSCAPES_MEAN = (0.29010095242892997, 0.32808144844279574, 0.28696394422942517)
CITYSCAPES_STD = (0.1829540508368939, 0.18656561047509476, 0.18447508988480435)


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual; [N, cin, H, W] -> [N, cout, H/stride, W/stride]."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: tuple[int, int] = (1, 1)):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride, dilation[0])
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout, 1, dilation[1])
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + residual)


def _conv_layers(cin: int, cout: int, convs: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """DRN-D's plain conv-BN-ReLU stages (they replace residual blocks where gridding would appear)."""
    modules = []
    for i in range(convs):
        modules += [nn.Conv2d(cin if i == 0 else cout, cout, 3, stride if i == 0 else 1, padding=dilation,
                              dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*modules)


def _residual_layer(cin: int, cout: int, blocks: int, stride: int = 1, dilation: int = 1,
                    new_level: bool = True) -> nn.Sequential:
    first = (1, 1) if dilation == 1 else (dilation // 2 if new_level else dilation, dilation)
    layers = [BasicBlock(cin, cout, stride, first)]
    layers += [BasicBlock(cout, cout, 1, (dilation, dilation)) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def drn_d_base(layers: tuple[int, ...], channels=(16, 32, 64, 128, 256, 512, 512, 512)) -> nn.Sequential:
    """The DRN-D backbone: [N, 3, H, W] -> [N, 512, H/8, W/8] (stride 8, dilation 2 and 4 after)."""
    c = channels
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, c[0], 7, 1, padding=3, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU()),
        _conv_layers(c[0], c[0], layers[0]),
        _conv_layers(c[0], c[1], layers[1], stride=2),
        _residual_layer(c[1], c[2], layers[2], stride=2),
        _residual_layer(c[2], c[3], layers[3], stride=2),
        _residual_layer(c[3], c[4], layers[4], dilation=2, new_level=False),
        _residual_layer(c[4], c[5], layers[5], dilation=4, new_level=False),
        _conv_layers(c[5], c[6], layers[6], dilation=2),
        _conv_layers(c[6], c[7], layers[7]),
    )


def bilinear_up_weights(classes: int, stride: int = 8) -> torch.Tensor:
    """Fixed per-class bilinear kernel [classes, 1, 2*stride, 2*stride] of DRNSeg's ``up`` layer."""
    size = 2 * stride
    f = math.ceil(size / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ramp = 1 - torch.abs(torch.arange(size, dtype=torch.float32) / f - c)
    return (ramp[:, None] * ramp[None, :]).expand(classes, 1, size, size).clone()


class DRNSeg(SegModel):
    """RGB [1, 3, H, W] (H, W multiples of 8) -> logits [1, 19, H, W]."""

    classes = CITYSCAPES_CLASSES
    size_multiple = 8
    full_resolution = True
    layers: tuple[int, ...]

    def __init__(self, seed: int = 0):
        super().__init__()
        self.native_size = (1024, 2048)
        self.base = drn_d_base(self.layers)
        self.seg = nn.Conv2d(512, len(self.classes), 1, bias=True)
        self.up = nn.ConvTranspose2d(len(self.classes), len(self.classes), 16, stride=8, padding=4,
                                     groups=len(self.classes), bias=False)
        generator = torch.Generator().manual_seed(seed)  # the same random model in every process
        with torch.no_grad():  # fyu/drn's initialization; a checkpoint overwrites all of it
            for m in self.base.modules():
                if isinstance(m, nn.Conv2d):
                    fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                    m.weight.normal_(0, math.sqrt(2.0 / fan), generator=generator)
            self.seg.weight.normal_(0, math.sqrt(2.0 / len(self.classes)), generator=generator)
            # fyu/drn zeroes this; random here so a random model has no tied logits (ties make the
            # fake-label loss non-differentiable)
            self.seg.bias.normal_(0, 1.0, generator=generator)
            self.up.weight.copy_(bilinear_up_weights(len(self.classes)))
        self.register_buffer("mean", torch.tensor(CITYSCAPES_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(CITYSCAPES_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.up(self.seg(self.base((rgb - self.mean) / self.std)))


class DRND22(DRNSeg):
    name = "drn_d_22"
    layers = (1, 1, 2, 2, 2, 2, 1, 1)


class DRND38(DRNSeg):
    name = "drn_d_38"
    layers = (1, 1, 3, 4, 6, 3, 1, 1)
