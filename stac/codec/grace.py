"""GRACE (Xie & Kim, MobiCom'19): one DNN-derived table per component for every block.

The table comes from GRACE's own water-filling (stac.tables.grace_table) over the table set's mean
gradients and coefficient magnitudes. The stream is a standard baseline JPEG carrying that table in
its DQT, made with the same DCT and Huffman coder as STAC, so the two differ only in quantization.
"""
from __future__ import annotations

import numpy as np

from ..tables import TableSet, blocks_for, grace_table
from . import _libjpeg
from .base import Codec
from .jpeg import decode_jpeg
from .transform import dct_quantize


class GraceCodec(Codec):
    name = "grace"
    ext = ".jpg"
    route = "jpeg"
    options = {"b": float, "scale": float}

    def __init__(self, tables: TableSet, b: float | None = None, scale: float | None = None):
        """b: GRACE's loss bound; scale: the bound as a multiple of the table set's B (default: B)."""
        if b is not None and scale is not None:
            raise ValueError("give GRACE a bound b or a scale of the table set's B, not both")
        self.tables = tables
        self.bound = b if b is not None else tables.bound * (1.0 if scale is None else scale)
        if not self.bound > 0:
            raise ValueError(f"GRACE bound must be positive, got {self.bound}")
        self.table = grace_table(tables.gradients, tables.magnitudes, self.bound, tables.num_coeffs)

    @classmethod
    def create(cls, tables: TableSet, **options) -> "GraceCodec":
        return cls(tables, **options)

    @property
    def spec(self) -> str:
        return f"grace:b={self.bound:g}"

    def encode(self, frame: np.ndarray) -> bytes:
        hb, wb = blocks_for(*frame.shape[:2])
        coeffs = dct_quantize(frame, np.zeros((hb, wb), np.uint8), self.table[None].astype(np.float32))
        return _libjpeg.write(coeffs, frame.shape[0], frame.shape[1], self.table, b"")

    def decode(self, data: bytes) -> np.ndarray:
        return decode_jpeg(data)

    def side_files(self) -> dict[str, bytes]:
        return {"tables.json": self.tables.to_json().encode()}
