"""The STAC head (paper III-C) and the plain segmentation graph, as torch modules built for ONNX export.

Head: quantized coefficients + level map -> dequantize with each region's table -> inverse DCT ->
YCbCr->RGB -> the model (its own preprocessing inside) -> logits. MASK is the argmax at full padded
resolution. The fake label is that argmax (no gradient through it) and the loss is the pixel-wise
cross-entropy against it, **averaged** over the model's output pixels:
mean(logsumexp(z) - max(z)), which is that cross-entropy without a LogSoftmax pass. GRAD is
d loss / d dequantized coefficient; Algorithm 1 turns |GRAD| into each region's cost per level and
its next level.

The differentiable part (``Decoded``) is turned into a forward-backward graph by ``to_onnx``; the
rest (``StacHead``) only gathers tables and reduces the gradient, so it needs no autograd.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..tables import BLOCK
from .base import SegModel


def idct_matrix() -> torch.Tensor:
    """[64, 64]: row (u, v) of a block's natural-order coefficients -> its 8x8 samples (y, x), orthonormal."""
    n = torch.arange(BLOCK, dtype=torch.float64)
    c = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / (2 * BLOCK))  # [u, y]
    c[0] /= math.sqrt(2)
    c *= math.sqrt(2 / BLOCK)
    return torch.einsum("uy,vx->uvyx", c, c).reshape(64, 64).float()


# JFIF YCbCr -> RGB, applied to (Y, Cb - 128, Cr - 128)
YCC_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


class _Clamp(torch.autograd.Function):
    """clamp(x, low, high) with torch's gradient (passed where low <= x <= high, else 0) as one product with a
    mask kept from the forward pass: torch's own clamp backward exports as four full-frame passes
    (GreaterOrEqual, LessOrEqual, And, Where), which at 2048x1024 cost the head more than its network."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, low: float, high: float) -> torch.Tensor:
        y = torch.clamp(x, low, high)
        ctx.save_for_backward((y == x).to(x.dtype))
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (kept,) = ctx.saved_tensors
        return grad * kept, None, None


def coeffs_to_rgb(deq: torch.Tensor, basis: torch.Tensor, ycc_to_rgb: torch.Tensor) -> torch.Tensor:
    """Dequantized coefficients [N, 3, Hb, Wb, 64] (Y, Cb, Cr) -> RGB float [N, 3, 8*Hb, 8*Wb] in 0..255.

    Samples are clamped to 0..255 after the IDCT and after the colour conversion, as the 8-bit decoder
    does, but not rounded: rounding would make the forward pass depend on which side of .5 a sample
    falls, which float32 and float64 do not always agree on. The mask sees the decoded frame to +-0.5.
    Samples stay centred on 0 (-128..127) through the colour conversion, one [3, 3] matrix product whose
    backward is one too: Y's +128 passes to R, G and B alike (the matrix's first column is all ones).
    """
    n, _, hb, wb, _ = deq.shape
    ycc = torch.matmul(deq, basis).reshape(n, 3, hb, wb, BLOCK, BLOCK).permute(0, 1, 2, 4, 3, 5)
    ycc = _Clamp.apply(ycc.reshape(n, 3, hb * BLOCK * wb * BLOCK), -128.0, 127.0)
    rgb = _Clamp.apply(torch.matmul(ycc_to_rgb, ycc), -128.0, 127.0) + 128.0
    return rgb.reshape(n, 3, hb * BLOCK, wb * BLOCK)


def fake_label_loss(logits: torch.Tensor) -> torch.Tensor:
    """Each frame's mean pixel-wise cross-entropy of logits [N, K, h, w] against their own argmax -> [N]."""
    return (torch.logsumexp(logits, dim=1) - logits.amax(dim=1)).mean(dim=(1, 2))


def full_resolution_mask(logits: torch.Tensor, height, width, resize: bool) -> torch.Tensor:
    """logits [N, K, h, w] -> class ids uint8 [N, height, width] (bilinear logits, then argmax).

    ``resize`` is static (the model's ``full_resolution``): comparing symbolic sizes would pin them.
    """
    if resize:
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    return logits.argmax(dim=1).to(torch.uint8)


class Decoded(torch.nn.Module):
    """forward(deq float32 [N, 3, Hb, Wb, 64]) -> (loss [N], logits [N, K, h, w]); the part GRAD comes from.

    The model's weights are frozen, so no weight gradient is ever computed. Frames of a batch do not mix (the model
    runs in eval mode), so the gradient of the losses' sum is each frame's gradient of its own loss.
    """

    def __init__(self, model: SegModel):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.register_buffer("basis", idct_matrix())
        self.register_buffer("ycc_to_rgb", torch.tensor(YCC_TO_RGB))

    def forward(self, deq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(coeffs_to_rgb(deq, self.basis, self.ycc_to_rgb))
        return fake_label_loss(logits), logits


def block_tables(levels: torch.Tensor, tables: torch.Tensor, hb, wb, region_blocks: int) -> torch.Tensor:
    """Each block's steps: levels [N, Rh, Rw], tables [N, L, 3, 64] (each frame its own set) -> [N, 3, Hb, Wb, 64]."""
    n, n_levels = tables.shape[0], tables.shape[1]
    rows = torch.arange(hb, device=levels.device) // region_blocks
    cols = torch.arange(wb, device=levels.device) // region_blocks
    # row of each block's table in the frames' tables stacked [N * L]
    offsets = torch.arange(n, device=levels.device)[:, None] * n_levels
    rows_of = (levels.long()[:, rows][:, :, cols].reshape(n, -1) + offsets).reshape(-1)
    # a Gather per channel straight into channel-first order, then one Concat: no full-frame transpose
    steps = tables.reshape(n * n_levels, tables.shape[2], -1)  # [N * L, 3, 64]
    channels = [torch.index_select(steps[:, c], 0, rows_of).reshape(n, 1, hb, wb, -1) for c in range(steps.shape[1])]
    return torch.cat(channels, dim=1)


def region_cost(grad: torch.Tensor, tables: torch.Tensor, region_blocks: int) -> torch.Tensor:
    """Algorithm 1's cost, as stac.select.region_cost, of each frame: grad [N, 3, Hb, Wb, 64], tables [N, L, 3, 64]
    -> [N, Rh, Rw, L]."""
    n, _, hb, wb, _ = grad.shape
    n_levels = tables.shape[1]
    # per channel, then summed: the gradient is never transposed
    block = torch.matmul(grad.abs(), tables.permute(0, 2, 3, 1)[:, :, None]).sum(dim=1) * 0.5  # [N, Hb, Wb, L]
    rh, rw = (hb + region_blocks - 1) // region_blocks, (wb + region_blocks - 1) // region_blocks
    block = F.pad(block, (0, 0, 0, rw * region_blocks - wb, 0, rh * region_blocks - hb))
    return block.reshape(n, rh, region_blocks, rw, region_blocks, n_levels).sum(dim=(2, 4))


def select_levels(cost: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """argmin_l |cost[n, r, l] - B_n / r_max| -> uint8 [N, Rh, Rw] (cost [N, Rh, Rw, L], bound [N, 1]), as
    stac.select.select_levels: distances in float64 (in float32 a cost far below B / r_max vanishes and every level
    ties), the coarsest level on ties."""
    r_max = cost.shape[1] * cost.shape[2]
    distance = torch.abs(cost.double() - bound.double()[:, :, None, None] / r_max)
    return (cost.shape[-1] - 1 - torch.argmin(distance.flip(-1), dim=-1)).to(torch.uint8)


class StacHead(torch.nn.Module):
    """N same-size keyframes, each with its own level map, table set and bound:
    (COEFFS int16 [N, 3, Hb, Wb, 64], LEVELS uint8 [N, Rh, Rw], TABLES float32 [N, L, 3, 64], BOUND float32 [N, 1])
    -> (MASK uint8 [N, 8Hb, 8Wb], NEXT_LEVELS uint8 [N, Rh, Rw], REGION_COST float32 [N, Rh, Rw, L],
        GRAD float32 [N, 3, Hb, Wb, 64], LOSS float32 [N, 1]).

    ``decoded`` maps deq to (loss, logits, grad): ``AutogradDecoded`` (eager) or its trace for export.
    """

    def __init__(self, decoded: torch.nn.Module, model: SegModel, region_blocks: int):
        super().__init__()
        self.decoded = decoded
        self.full_resolution = model.full_resolution
        self.region_blocks = region_blocks

    def forward(self, coeffs, levels, tables, bound):
        _, _, hb, wb, _ = coeffs.shape
        deq = coeffs.float() * block_tables(levels, tables, hb, wb, self.region_blocks)
        loss, logits, grad = self.decoded(deq)
        mask = full_resolution_mask(logits, hb * BLOCK, wb * BLOCK, not self.full_resolution)
        cost = region_cost(grad, tables, self.region_blocks)
        return mask, select_levels(cost, bound), cost, grad, loss[:, None]


class AutogradDecoded(torch.nn.Module):
    """Decoded plus its gradient by eager autograd: the reference the exported graph is checked against."""

    def __init__(self, decoded: Decoded):
        super().__init__()
        self.inner = decoded

    def forward(self, deq: torch.Tensor):
        deq = deq.detach().requires_grad_(True)
        with torch.enable_grad():
            loss, logits = self.inner(deq)
            (grad,) = torch.autograd.grad(loss.sum(), deq)
        return loss.detach(), logits.detach(), grad


class Segment(torch.nn.Module):
    """IMAGE uint8 [N, H, W, 3] RGB -> MASK uint8 [N, H, W]: the model on plain frames (raw or baseline-coded), a
    batch of one or of several same-size frames (the edge batches devices' keyframes)."""

    def __init__(self, model: SegModel):
        super().__init__()
        self.model = model.eval().requires_grad_(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[1], image.shape[2]
        logits = self.model(image.permute(0, 3, 1, 2).float())
        return full_resolution_mask(logits, h, w, not self.model.full_resolution)
