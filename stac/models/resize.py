"""Bilinear resizing as two matrix products, so its gradient is two matrix products too.

torch's upsample_bilinear2d backward has no ONNX lowering, and its scatter-style kernels are exactly what
the STAC head must avoid; a dense interpolation matrix [out, in] is exportable, works with symbolic
sizes, and gives the same values as ``F.interpolate(mode="bilinear", align_corners=False)`` when
enlarging. When shrinking it widens the triangle filter to the scale (antialiasing, as PIL and
``antialias=True`` do), so every input pixel contributes and receives gradient.
"""
from __future__ import annotations

import torch


def interp_matrix(n_out: int, n_in: int, device=None, dtype=torch.float32, transposed: bool = False) -> torch.Tensor:
    """Row-normalized triangle-filter weights [n_out, n_in] (half-pixel centres), or built as their transpose
    [n_in, n_out] (the same numbers: a transpose the graph never has to make)."""
    # a tensor, not a Python max(): under symbolic tracing a Python comparison of sizes would silently
    # fix the branch taken for the example's size
    scale = torch.full((), n_in / n_out, dtype=dtype, device=device)
    support = torch.clamp(scale, min=1.0)
    centre = (torch.arange(n_out, dtype=dtype, device=device) + 0.5) * scale
    pos = torch.arange(n_in, dtype=dtype, device=device) + 0.5
    if transposed:
        w = torch.clamp(1.0 - torch.abs(pos[:, None] - centre[None, :]) / support, min=0.0)
        return w / w.sum(dim=0, keepdim=True)
    w = torch.clamp(1.0 - torch.abs(pos[None, :] - centre[:, None]) / support, min=0.0)
    return w / w.sum(dim=1, keepdim=True)


class _ShrinkRows(torch.autograd.Function):
    """rows [h, H] @ x [B, H, W] -> [B, h, W], whose backward multiplies by rows_t [H, h], built as such:
    torch's own backward transposes rows inside the product, which onnxruntime runs at half the speed."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rows: torch.Tensor, rows_t: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows_t)
        return torch.bmm(rows.expand(x.shape[0], -1, -1), x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rows_t,) = ctx.saved_tensors
        return torch.bmm(rows_t.expand(grad.shape[0], -1, -1), grad), None, None


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, h, w]. Rows first: shrinking a large frame, that is the cheaper order."""
    h, w = size
    n, c, height, width = x.shape
    rows = interp_matrix(h, height, x.device, x.dtype)
    rows_t = interp_matrix(h, height, x.device, x.dtype, transposed=True)
    cols = interp_matrix(w, width, x.device, x.dtype)
    # x as a batch of matrices, not broadcast against rows: ONNX would copy x to broadcast it to its own shape
    shrunk = _ShrinkRows.apply(x.reshape(n * c, height, width), rows, rows_t)
    return torch.matmul(shrunk, cols.t()).reshape(n, c, h, w)
