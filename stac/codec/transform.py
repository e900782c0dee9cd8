"""Colour conversion and the quantizing 8x8 block DCT.

Conventions used across STAC:
- frames are RGB uint8 [H, W, 3];
- coefficients are int16 [3, Hb, Wb, 64]: component (Y, Cb, Cr), block row, block column,
  coefficient in natural row-major order (u * 8 + v), Hb = ceil(H / 8), Wb = ceil(W / 8);
- the DCT is JPEG's: orthonormal 2-D DCT-II of samples level-shifted by -128;
- each block is quantized with one of L tables, steps float32 [L, 3, 64], chosen by a block level map
  uint8 [Hb, Wb]. Baseline JPEG is the special case L = 1.

The block transforms run in C (`_libjpeg`), fused with (de)quantization: done per block in cache they
take a third of the time of whole-plane numpy matrix products.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..tables import BLOCK, blocks_for
from . import _libjpeg

MAX_AC = 1023  # baseline Huffman coding: AC magnitude category <= 10
MAX_DC_DIFF = 2047  # DC difference category <= 11


def pad_to_multiple(frame: np.ndarray, multiple: int) -> np.ndarray:
    """[H, W, ...] -> H and W rounded up to a multiple, by edge replication (what libjpeg does at the border)."""
    h, w = frame.shape[:2]
    if h % multiple == 0 and w % multiple == 0:
        return frame
    pad = [(0, -h % multiple), (0, -w % multiple)] + [(0, 0)] * (frame.ndim - 2)
    return np.pad(frame, pad, mode="edge")


def pad_to_blocks(frame: np.ndarray) -> np.ndarray:
    """[H, W, ...] -> [8*Hb, 8*Wb, ...]."""
    return pad_to_multiple(frame, BLOCK)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> JFIF YCbCr uint8 planes [3, H, W] (rounded to 8 bits, as libjpeg does)."""
    ycrcb = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YCrCb)
    return np.stack([ycrcb[..., 0], ycrcb[..., 2], ycrcb[..., 1]])


def check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"expected an RGB uint8 frame [H, W, 3], got {got}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"empty frame {frame.shape}")


def check_size(what: str, height: int, width: int, max_pixels: int | None, max_side: int | None = None) -> None:
    """ValueError unless a frame of ``height`` x ``width`` (from its header, before any decoding) is within
    ``max_pixels`` pixels and ``max_side`` on either side (None: no limit). The side matters besides the pixels:
    strips no camera makes (144x16560) grow the edge's memory past what its largest square frame took, for good."""
    over_pixels = max_pixels is not None and height * width > max_pixels
    if over_pixels or (max_side is not None and max(height, width) > max_side):
        limits = ([f"{max_pixels} pixels"] * (max_pixels is not None)
                  + [f"{max_side} on a side"] * (max_side is not None))
        raise ValueError(f"{what} {width}x{height} is larger than this edge accepts ({', '.join(limits)})")


def dct_quantize(frame: np.ndarray, block_levels: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> quantized coefficients int16 [3, Hb, Wb, 64].

    block_levels uint8 [Hb, Wb] picks each block's table in steps float32 [L, 3, 64] (all >= 1).
    Raises ValueError instead of producing values baseline JPEG cannot code.
    """
    check_frame(frame)
    hb, wb = blocks_for(*frame.shape[:2])
    planes = np.ascontiguousarray(rgb_to_ycbcr(pad_to_blocks(frame)))
    out = np.empty((3, hb, wb, BLOCK * BLOCK), np.int16)
    max_ac, max_dc_diff = _libjpeg.dct_quantize(
        planes, hb, wb, _levels_buffer(block_levels, hb, wb), _steps_buffer(steps), out
    )
    if max_ac > MAX_AC or max_dc_diff > MAX_DC_DIFF:
        raise ValueError(f"coefficients exceed baseline JPEG limits (|AC| {max_ac} > {MAX_AC} "
                         f"or DC difference {max_dc_diff} > {MAX_DC_DIFF}); are all steps >= 1?")
    return out


def dequantize_idct(coeffs: np.ndarray, block_levels: np.ndarray, steps: np.ndarray,
                    height: int, width: int) -> np.ndarray:
    """Quantized coefficients int16 [3, Hb, Wb, 64] -> RGB uint8 [height, width, 3]."""
    _, hb, wb, _ = coeffs.shape
    ycrcb = np.empty((hb * BLOCK, wb * BLOCK, 3), np.uint8)  # interleaved by the C kernel: no plane stacking
    _libjpeg.dequantize_idct(np.ascontiguousarray(coeffs, np.int16), hb, wb,
                             _levels_buffer(block_levels, hb, wb), _steps_buffer(steps), ycrcb)
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)[:height, :width]


def _levels_buffer(block_levels: np.ndarray, hb: int, wb: int) -> np.ndarray:
    if block_levels.shape != (hb, wb):
        raise ValueError(f"block level map {block_levels.shape} does not match the block grid {(hb, wb)}")
    return np.ascontiguousarray(block_levels, np.uint8)


def _steps_buffer(steps: np.ndarray) -> np.ndarray:
    steps = np.ascontiguousarray(steps, np.float32)
    if steps.ndim != 3 or steps.shape[1:] != (3, BLOCK * BLOCK):
        raise ValueError(f"quantization steps must be [L, 3, 64], got {steps.shape}")
    if steps.min() < 1:
        raise ValueError("quantization steps must be >= 1 (smaller steps overflow baseline JPEG)")
    return steps
