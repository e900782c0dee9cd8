"""The edge's answers on the wire: class-id masks coded losslessly, a few hundred bytes where the raw mask is
hundreds of kilobytes (380 KB at 720x528, 2 MB at 2048x1024).

Format (docs/bitstream.md, "Coded masks"): ``b"M"``, a version byte, height and width (big-endian uint16), the
number of bit planes of the class ids (1..8; 1 for a two-class model), then the planes coded by ``_mask`` (a
context-adaptive binary range coder, JBIG's template). The decoder is strict: a truncated, padded or garbled
coding, or a header that does not fit, is a MaskError naming the problem.
"""
from __future__ import annotations

import struct

import cv2
import numpy as np

from . import _mask

MAGIC, VERSION = b"M", 1
HEADER = struct.Struct(">cBHHB")  # magic, version, height, width, planes
MAX_SIDE = 2 ** 16 - 1


class MaskError(ValueError):
    """Bytes that are not a coded mask this decoder accepts."""


def planes_for(mask: np.ndarray) -> int:
    """Bit planes the mask's largest class id needs (at least one)."""
    return max(1, int(mask.max()).bit_length()) if mask.size else 1


def encode_mask(mask: np.ndarray) -> bytes:
    """uint8 [H, W] class ids -> coded bytes."""
    if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"a mask is uint8 [H, W], got {getattr(mask, 'dtype', type(mask).__name__)} "
                         f"{list(getattr(mask, 'shape', []))}")
    h, w = mask.shape
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise ValueError(f"mask {w}x{h}: each side must be 1..{MAX_SIDE}")
    planes = planes_for(mask)
    return HEADER.pack(MAGIC, VERSION, h, w, planes) + _mask.encode(np.ascontiguousarray(mask).tobytes(), h, w,
                                                                     planes)


def decode_mask(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Coded bytes -> uint8 [H, W]; MaskError for anything else, before any work for a frame over ``max_pixels``."""
    if len(data) < HEADER.size:
        raise MaskError(f"coded mask of {len(data)} bytes is shorter than its {HEADER.size}-byte header")
    magic, version, h, w, planes = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise MaskError(f"not a coded mask of version {VERSION} (starts {bytes(data[:2])!r})")
    if not (h and w and 1 <= planes <= 8):
        raise MaskError(f"coded mask header declares {w}x{h} with {planes} planes")
    if max_pixels is not None and h * w > max_pixels:
        raise MaskError(f"coded mask {w}x{h} is larger than {max_pixels} pixels")
    try:
        raw = _mask.decode(bytes(data[HEADER.size:]), h, w, planes)
    except ValueError as e:
        raise MaskError(str(e)) from None
    return np.frombuffer(raw, np.uint8).reshape(h, w)


def fit(mask: np.ndarray, frame: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """``mask`` (uint8 [H', W'], H', W' >= the frame's H, W: padded) cropped to the frame and given at ``size`` (h, w),
    nearest neighbour, as the device would scale it; ValueError for sizes that do not fit (no enlarging)."""
    (fh, fw), (h, w) = frame, size
    if not (0 < fh <= mask.shape[0] and 0 < fw <= mask.shape[1] and 0 < h <= fh and 0 < w <= fw):
        raise ValueError(f"ANSWER_SIZE: a {mask.shape[1]}x{mask.shape[0]} mask cannot be cropped to {fw}x{fh} and "
                         f"given at {w}x{h}")
    cropped = mask[:fh, :fw]
    return cropped if (h, w) == (fh, fw) else cv2.resize(cropped, (w, h), interpolation=cv2.INTER_NEAREST)
