"""BiSeNet V1 (Yu et al., ECCV 2018) with a ResNet-18 context path: the paper's model on CamVid (Fig. 9).

Written from the paper so that its state_dict layout is the one of the most used public PyTorch
implementation, CoinCheung/BiSeNet (``lib/models/bisenetv1.py``, current layout): ``cp.resnet.*`` the
ResNet-18 backbone, ``cp.arm16/arm32`` attention refinement, ``cp.conv_head16/32`` and ``cp.conv_avg``,
``sp.*`` the spatial path, ``ffm.*`` feature fusion (a 1x1 conv + BN attention), ``conv_out.*`` the
classifier. Training checkpoints also hold the auxiliary heads ``conv_out16.*`` and ``conv_out32.*``; they
are dropped by name, every other key is loaded strictly. No weights ship anywhere: bring a checkpoint.

Layers whose backward torch would write as a scatter are written so it is not (the STAC head's graph
must hold none): max pooling as a maximum of shifted copies, nearest upsampling as a broadcast, the
final x8 bilinear upsampling as two interpolation matrices (``resize``). The network needs sides that
are multiples of 32; other frames are zero-padded (after normalization: the mean colour) and the logits
cropped, so any multiple of 8 (every padded STAC frame) works.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegModel
from .drn import CITYSCAPES_CLASSES, BasicBlock
from .resize import interp_matrix

# CoinCheung/BiSeNet's Cityscapes statistics (RGB, 0..1); used for both variants
MEAN = (0.3257, 0.3690, 0.3223)
STD = (0.2112, 0.2148, 0.2115)
CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian",
                  "bicyclist")


class ConvBNReLU(nn.Module):
    """conv (no bias) -> BN -> ReLU; keys conv.*, bn.*."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def max_pool_3x3_s2(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(x, 3, 2, padding=1) for even H and W: [N, C, H, W] -> [N, C, H/2, W/2].

    Shifts are pads (negative ones crop), the window a maximum of shifted copies, and the stride a product
    with a one-hot pattern: the backward of each is a pad or elementwise. Slicing and strided indexing
    would put slice_scatter, hence ScatterND, into the gradient.
    """
    n, c, h, w = x.shape
    rows = F.pad(x, (0, 0, 1, 1), value=-math.inf)
    rows = torch.maximum(torch.maximum(F.pad(rows, (0, 0, 0, -2)), F.pad(rows, (0, 0, -1, -1))),
                         F.pad(rows, (0, 0, -2, 0)))
    cols = F.pad(rows, (1, 1), value=-math.inf)
    full = torch.maximum(torch.maximum(F.pad(cols, (0, -2)), F.pad(cols, (-1, -1))), F.pad(cols, (-2, 0)))
    first = torch.tensor([1.0, 0.0], dtype=x.dtype, device=x.device)  # every window holds a real value: no inf * 0
    pick = first[:, None, None] * first[None, None, :]  # [2, 1, 2]
    return (full.reshape(n, c, h // 2, 2, w // 2, 2) * pick).sum(dim=(3, 5))


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Nearest x2: [N, C, H, W] -> [N, C, 2H, 2W]."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h, 1, w, 1).expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


class ResNet18(nn.Module):
    """[N, 3, H, W] -> features at 1/8, 1/16, 1/32: [N, 128, H/8, W/8], [N, 256, ...], [N, 512, ...]."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths = (64, 64, 128, 256, 512)
        for i in range(1, 5):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(widths[i - 1], widths[i], stride),
                                                     BasicBlock(widths[i], widths[i])))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(max_pool_3x3_s2(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinement(nn.Module):
    """A 3x3 ConvBNReLU whose channels are gated by a sigmoid of their global mean (1x1 conv + BN)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean(dim=(2, 3), keepdim=True))))


class ContextPath(nn.Module):
    """[N, 3, H, W] -> [N, 128, H/8, W/8] (and the 1/16 feature the auxiliary head would use)."""

    def __init__(self):
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, feat16, feat32 = self.resnet(x)
        context = self.conv_avg(feat32.mean(dim=(2, 3), keepdim=True))
        up32 = self.conv_head32(upsample2(self.arm32(feat32) + context))
        return self.conv_head16(upsample2(self.arm16(feat16) + up32))


class SpatialPath(nn.Module):
    """Three stride-2 ConvBNReLUs and a 1x1: [N, 3, H, W] -> [N, 128, H/8, W/8]."""

    def __init__(self):
        super().__init__()
        self.conv1 = ConvBNReLU(3, 64, kernel=7, stride=2)
        self.conv2 = ConvBNReLU(64, 64, stride=2)
        self.conv3 = ConvBNReLU(64, 64, stride=2)
        self.conv_out = ConvBNReLU(64, 128, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv3(self.conv2(self.conv1(x))))


class FeatureFusion(nn.Module):
    """Concatenated paths -> 1x1 ConvBNReLU, plus itself gated by a channel attention (1x1 conv + BN)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, kernel=1)
        self.conv = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        return feat + feat * torch.sigmoid(self.bn(self.conv(feat.mean(dim=(2, 3), keepdim=True))))


class Output(nn.Module):
    """3x3 ConvBNReLU then a 1x1 classifier with bias: [N, cin, h, w] -> [N, K, h, w]."""

    def __init__(self, cin: int, mid: int, classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNetV1(SegModel):
    """RGB [1, 3, H, W] (H, W multiples of 8) -> logits [1, K, H, W]."""

    name = "bisenet_v1"
    classes = CITYSCAPES_CLASSES
    size_multiple = 8
    full_resolution = True
    dropped_prefixes = ("conv_out16.", "conv_out32.")  # training-only auxiliary heads
    native = (1024, 2048)

    def __init__(self, seed: int = 0):
        super().__init__()
        self.native_size = self.native
        self.cp = ContextPath()
        self.sp = SpatialPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = Output(256, 256, len(self.classes))
        generator = torch.Generator().manual_seed(seed)  # the same random model in every process
        with torch.no_grad():  # a checkpoint overwrites all of it
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    fan = m.kernel_size[0] * m.kernel_size[1] * m.in_channels
                    m.weight.normal_(0, math.sqrt(2.0 / fan), generator=generator)
                    if m.bias is not None:
                        m.bias.normal_(0, 1.0, generator=generator)  # no tied logits in a random model
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1) * 255, persistent=False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        h, w = rgb.shape[-2], rgb.shape[-1]
        x = F.pad((rgb - self.mean) / self.std, (0, (32 - w % 32) % 32, 0, (32 - h % 32) % 32))
        logits = self.conv_out(self.ffm(self.sp(x), self.cp(x)))  # [1, K, H'/8, W'/8], H' >= H
        # bilinear x8 (align_corners=False) of the padded frame's logits, then its first h rows and w columns
        h8, w8 = logits.shape[-2], logits.shape[-1]
        rows = interp_matrix(8 * h8, h8, logits.device, logits.dtype)[:h]
        cols = interp_matrix(8 * w8, w8, logits.device, logits.dtype)[:w]
        return torch.matmul(torch.matmul(rows, logits), cols.t())


class BiSeNetV1CamVid(BiSeNetV1):
    """The same network with CamVid's 11 classes (paper Fig. 9), at CamVid's 720x960."""

    name = "bisenet_v1_camvid"
    classes = CAMVID_CLASSES
    native = (720, 960)
