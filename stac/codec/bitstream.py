"""The STAC bitstream (docs/bitstream.md): a baseline JPEG carrying region-quantized coefficients, with
the region level map in an APP11 segment right after SOI.

The JPEG's DQT tables are all ones; the coefficients stored are already divided by each region's table,
so any JPEG parser reads the file, and only a STAC decoder holding the table set can dequantize it.
The decoder trusts nothing: every field is checked and every failure is a BitstreamError.
"""
from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import Iterable

import numpy as np

from ..tables import TableSet, block_levels, blocks_for, region_grid
from . import _libjpeg
from .transform import BLOCK, MAX_AC, check_size

MAGIC = b"STAC\0"
VERSION = 1
MAP_PACKED, MAP_ZLIB = 0, 1
# magic, version, flags, block, region blocks, L, table-set id, height, width, map encoding
_HEADER = struct.Struct(">5sBBBBB8sHHB")
DEFAULT_MAX_PIXELS = 4096 * 4096
MAX_DC = 1024  # |DC| of an 8-bit level-shifted block never exceeds 8 * 128

SOI, EOI, SOS, SOF0, DHT, DQT, APP11 = 0xD8, 0xD9, 0xDA, 0xC0, 0xC4, 0xDB, 0xEB
_ONES_TABLE = np.ones((1, 64), np.uint16)


class BitstreamError(ValueError):
    """The bytes are not a STAC bitstream this decoder accepts; the message names the problem."""


@dataclasses.dataclass(frozen=True)
class StacFrame:
    """A decoded bitstream, before dequantization."""

    coeffs: np.ndarray  # int16 [3, Hb, Wb, 64], quantized
    levels: np.ndarray  # uint8 [Rh, Rw]
    height: int
    width: int
    tables: TableSet

    def block_levels(self) -> np.ndarray:
        """uint8 [Hb, Wb]."""
        return block_levels(self.levels, *self.coeffs.shape[1:3], self.tables.region_blocks)


def level_bits(levels: int) -> int:
    """Bits per level in the packed map: ceil(log2 L) (0 when L = 1)."""
    return (levels - 1).bit_length()


def pack_levels(levels: np.ndarray, bits: int) -> bytes:
    """Levels row-major, `bits` each, most significant bit first, zero-padded to a byte."""
    if bits == 0:
        return b""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint8)
    return np.packbits((levels.reshape(-1, 1) >> shifts) & 1).tobytes()


def unpack_levels(data: bytes, count: int, bits: int) -> np.ndarray:
    if bits == 0:
        if data:
            raise BitstreamError(f"level map has {len(data)} bytes, expected 0 for L = 1")
        return np.zeros(count, np.uint8)
    expected = -(-count * bits // 8)
    if len(data) != expected:
        raise BitstreamError(f"level map has {len(data)} bytes, expected {expected}")
    flat = np.unpackbits(np.frombuffer(data, np.uint8))
    if flat[count * bits:].any():
        raise BitstreamError("level map padding bits are not zero")
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint16)
    return (flat[:count * bits].reshape(count, bits) @ weights).astype(np.uint8)


def write_stac(coeffs: np.ndarray, levels: np.ndarray, height: int, width: int, tables: TableSet) -> bytes:
    """Quantized coefficients int16 [3, Hb, Wb, 64] + level map uint8 [Rh, Rw] -> the bitstream bytes."""
    hb, wb = blocks_for(height, width)
    if coeffs.shape != (3, hb, wb, 64):
        raise ValueError(f"coefficients {coeffs.shape} do not match a {height}x{width} frame")
    if levels.shape != region_grid(hb, wb, tables.region_blocks):
        raise ValueError(f"level map {levels.shape} does not match the region grid")
    if levels.size and int(levels.max()) >= tables.levels:
        raise ValueError(f"level {int(levels.max())} >= L = {tables.levels}")
    packed = pack_levels(np.asarray(levels, np.uint8), level_bits(tables.levels))
    squeezed = zlib.compress(packed, 9)
    encoding, payload = (MAP_ZLIB, squeezed) if len(squeezed) < len(packed) else (MAP_PACKED, packed)
    header = _HEADER.pack(MAGIC, VERSION, 0, BLOCK, tables.region_blocks, tables.levels, tables.id,
                          height, width, encoding)
    return _libjpeg.write(np.ascontiguousarray(coeffs, np.int16), height, width, _ONES_TABLE, header + payload)


def read_stac(data: bytes, tables: TableSet | Iterable[TableSet], max_pixels: int = DEFAULT_MAX_PIXELS,
              max_side: int | None = None) -> StacFrame:
    """Parse and validate a bitstream; raises BitstreamError naming the first problem found (a frame over
    ``max_pixels`` or ``max_side`` among them, before any decoding)."""
    known = {t.id: t for t in ([tables] if isinstance(tables, TableSet) else tables)}
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"bitstream must be bytes, got {type(data).__name__}")
    data = bytes(data)
    segments, scan_start = _segments(data)
    if not segments or segments[0][0] != APP11:
        raise BitstreamError("no APP11 segment right after SOI")
    ts, height, width, levels = _parse_header(segments[0][1], known, max_pixels, max_side)
    _check_jpeg_segments(segments[1:], height, width)
    if not data.endswith(b"\xff\xd9") or scan_start > len(data) - 2:
        raise BitstreamError("truncated: no EOI marker at the end")
    hb, wb = blocks_for(height, width)
    coeffs = np.empty((3, hb, wb, 64), np.int16)
    try:
        max_ac, max_dc = _libjpeg.read(data, height, width, coeffs)
    except ValueError as e:
        raise BitstreamError(f"JPEG data: {e}") from None
    if max_ac > MAX_AC or max_dc > MAX_DC:
        raise BitstreamError(f"coefficients out of JPEG's 8-bit range (|AC| {max_ac} > {MAX_AC} "
                             f"or |DC| {max_dc} > {MAX_DC})")
    return StacFrame(coeffs, levels, height, width, ts)


def _segments(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """Marker segments between SOI and SOS (SOS included) and the offset where entropy data begins."""
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        raise BitstreamError("not a JPEG: no SOI marker")
    pos, segments = 2, []
    while True:
        if pos + 4 > len(data):
            raise BitstreamError("truncated in the JPEG header")
        if data[pos] != 0xFF:
            raise BitstreamError(f"expected a marker at byte {pos}")
        marker = data[pos + 1]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2 or pos + 2 + length > len(data):
            raise BitstreamError(f"truncated or bad length in segment FF{marker:02X} at byte {pos}")
        segments.append((marker, data[pos + 4:pos + 2 + length]))
        pos += 2 + length
        if marker == SOS:
            return segments, pos


def _parse_header(payload: bytes, known: dict, max_pixels: int, max_side: int | None):
    if len(payload) < _HEADER.size:
        raise BitstreamError(f"APP11 header is {len(payload)} bytes, shorter than {_HEADER.size}")
    magic, version, flags, block, region, n_levels, set_id, height, width, encoding = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise BitstreamError(f"bad magic {magic!r} (not a STAC bitstream)")
    if version != VERSION:
        raise BitstreamError(f"unsupported version {version} (this decoder reads {VERSION})")
    if flags != 0:
        raise BitstreamError(f"unsupported flags 0x{flags:02x} (4:2:0 and other options are not supported)")
    if block != BLOCK:
        raise BitstreamError(f"block size {block}, expected {BLOCK}")
    if set_id not in known:
        raise BitstreamError(f"unknown table set {set_id.hex()} (this decoder holds "
                             f"{', '.join(k.hex() for k in known) or 'none'})")
    ts = known[set_id]
    if n_levels != ts.levels:
        raise BitstreamError(f"header says L = {n_levels}, table set {set_id.hex()} has {ts.levels}")
    if region != ts.region_blocks:
        raise BitstreamError(f"region size {region} blocks, table set {set_id.hex()} uses {ts.region_blocks}")
    if height == 0 or width == 0:
        raise BitstreamError(f"empty frame {height}x{width}")
    try:
        check_size("frame", height, width, max_pixels, max_side)
    except ValueError as e:
        raise BitstreamError(str(e)) from None
    rh, rw = region_grid(*blocks_for(height, width), region)
    bits, count = level_bits(n_levels), rh * rw
    body = payload[_HEADER.size:]
    if encoding == MAP_ZLIB:
        expected = -(-count * bits // 8)
        inflater = zlib.decompressobj()
        try:
            body = inflater.decompress(body, expected + 1)
        except zlib.error as e:
            raise BitstreamError(f"level map: bad zlib data ({e})") from None
        if not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
            raise BitstreamError("level map: zlib stream is truncated, too long or followed by garbage")
    elif encoding != MAP_PACKED:
        raise BitstreamError(f"unknown level map encoding {encoding}")
    levels = unpack_levels(body, count, bits)
    if levels.size and int(levels.max()) >= n_levels:
        raise BitstreamError(f"level {int(levels.max())} >= L = {n_levels}")
    return ts, height, width, levels.reshape(rh, rw)


def _check_jpeg_segments(segments: list[tuple[int, bytes]], height: int, width: int) -> None:
    seen_sof = False
    for marker, body in segments:
        if marker == DQT:
            if len(body) % 65 != 0 or any(body[i] >> 4 != 0 for i in range(0, len(body), 65)):
                raise BitstreamError("DQT is not a set of 8-bit tables")
            if any(body[i + 1:i + 65] != b"\x01" * 64 for i in range(0, len(body), 65)):
                raise BitstreamError("DQT table is not all ones (coefficients must be pre-quantized)")
        elif marker == SOF0:
            if len(body) != 15:
                raise BitstreamError("SOF0 is not a 3-component frame header")
            precision, h, w, n = struct.unpack_from(">BHHB", body)
            if precision != 8 or n != 3:
                raise BitstreamError(f"frame is {precision}-bit with {n} components, expected 8-bit YCbCr")
            if (h, w) != (height, width):
                raise BitstreamError(f"JPEG frame is {h}x{w}, STAC header says {height}x{width}")
            if any(body[6 + 3 * c + 1] != 0x11 for c in range(3)):
                raise BitstreamError("chroma subsampling is not 4:4:4")
            seen_sof = True
        elif marker in (DHT, SOS):
            continue
        elif 0xC0 <= marker <= 0xCF:
            raise BitstreamError(f"frame type FF{marker:02X} is not baseline JPEG (SOF0)")
        else:
            raise BitstreamError(f"unexpected segment FF{marker:02X} in the JPEG header")
    if not seen_sof:
        raise BitstreamError("no SOF0 frame header")
