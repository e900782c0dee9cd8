"""Bilinear resizing as two matrix products, so its gradient is two matrix products too.

torch's upsample_bilinear2d backward has no ONNX lowering, and its scatter-style kernels are exactly what
the STAC head must avoid; a dense interpolation matrix [out, in] is exportable, works with symbolic
sizes, and gives the same values as ``F.interpolate(mode="bilinear", align_corners=False)`` when
enlarging. When shrinking it widens the triangle filter to the scale (antialiasing, as PIL and
``antialias=True`` do), so every input pixel contributes and receives gradient.
"""
from __future__ import annotations

import torch


def interp_matrix(n_out: int, n_in: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Row-normalized triangle-filter weights [n_out, n_in] (half-pixel centres)."""
    # a tensor, not a Python max(): under symbolic tracing a Python comparison of sizes would silently
    # fix the branch taken for the example's size
    scale = torch.full((), n_in / n_out, dtype=dtype, device=device)
    support = torch.clamp(scale, min=1.0)
    centre = (torch.arange(n_out, dtype=dtype, device=device) + 0.5) * scale
    pos = torch.arange(n_in, dtype=dtype, device=device) + 0.5
    w = torch.clamp(1.0 - torch.abs(pos[None, :] - centre[:, None]) / support, min=0.0)
    return w / w.sum(dim=1, keepdim=True)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, h, w]. Rows first: shrinking a large frame, that is the cheaper order."""
    h, w = size
    rows = interp_matrix(h, x.shape[-2], x.device, x.dtype)
    cols = interp_matrix(w, x.shape[-1], x.device, x.dtype)
    return torch.matmul(torch.matmul(rows, x), cols.t())
