"""STAC: per-region quantization tables chosen from L levels (the bitstream of docs/bitstream.md)."""
from __future__ import annotations

import numpy as np

from ..tables import TableSet, block_levels, blocks_for
from .base import Codec
from .bitstream import DEFAULT_MAX_PIXELS, read_stac, write_stac
from .transform import check_frame, dct_quantize, dequantize_idct


class StacCodec(Codec):
    name = "stac"
    ext = ".stac"
    route = "stac"
    options = {"level": int}

    def __init__(self, tables: TableSet, level: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.tables = tables
        self.level = tables.middle_level if level is None else level
        if not 0 <= self.level < tables.levels:
            raise ValueError(f"level must be 0..{tables.levels - 1}, got {self.level}")
        self.max_pixels = max_pixels
        self._steps = tables.steps

    @classmethod
    def create(cls, tables: TableSet, **options) -> "StacCodec":
        return cls(tables, **options)

    @property
    def spec(self) -> str:
        return f"stac:level={self.level}"

    def uniform_levels(self, height: int, width: int) -> np.ndarray:
        """The level map that codes every region at this codec's level, uint8 [Rh, Rw]."""
        return np.full(self.tables.regions(height, width), self.level, np.uint8)

    def encode(self, frame: np.ndarray) -> bytes:
        check_frame(frame)
        return self.encode_levels(frame, self.uniform_levels(*frame.shape[:2]))

    def encode_levels(self, frame: np.ndarray, levels: np.ndarray) -> bytes:
        """Encode with a level per region, uint8 [Rh, Rw] (the edge's NEXT_LEVELS, propagated)."""
        check_frame(frame)
        h, w = frame.shape[:2]
        if h * w > self.max_pixels:  # what read_stac refuses is never written
            raise ValueError(f"frame {w}x{h} exceeds the STAC decoder's limit of {self.max_pixels} pixels")
        blv = block_levels(levels, *blocks_for(h, w), self.tables.region_blocks)
        return write_stac(dct_quantize(frame, blv, self._steps), levels, h, w, self.tables)

    def decode(self, data: bytes) -> np.ndarray:
        frame = read_stac(data, self.tables, self.max_pixels)
        return dequantize_idct(frame.coeffs, frame.block_levels(), self._steps, frame.height, frame.width)

    def side_files(self) -> dict[str, bytes]:
        return {"tables.json": self.tables.to_json().encode()}

