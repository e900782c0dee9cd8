import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import tables_with_levels
from stac.codec import BitstreamError, StacCodec, read_stac, write_stac
from stac.codec import _libjpeg
from stac.codec.bitstream import MAGIC, level_bits, pack_levels
from stac.codec.transform import dct_quantize
from stac.tables import block_levels, blocks_for, region_grid


def encode_random(frame, tables, seed):
    h, w = frame.shape[:2]
    hb, wb = blocks_for(h, w)
    levels = np.random.default_rng(seed).integers(0, tables.levels, region_grid(hb, wb, tables.region_blocks)).astype(np.uint8)
    coeffs = dct_quantize(frame, block_levels(levels, hb, wb, tables.region_blocks), tables.steps)
    return coeffs, levels, write_stac(coeffs, levels, h, w, tables)


def app11_payload(data: bytes) -> bytes:
    assert data[:4] == b"\xff\xd8\xff\xeb"
    (length,) = struct.unpack(">H", data[4:6])
    return data[6:4 + length]


@pytest.mark.parametrize("n_levels", [2, 16, 32])
@pytest.mark.parametrize("shape", [(144, 176), (100, 203), (272, 640), (57, 49)])
def test_round_trip_bit_exact(n_levels, shape, bikes_frames):
    tables = tables_with_levels(n_levels)
    frame = np.ascontiguousarray(bikes_frames[n_levels % 8][:shape[0], :shape[1]])
    coeffs, levels, data = encode_random(frame, tables, seed=n_levels)
    got = read_stac(data, tables)
    np.testing.assert_array_equal(got.coeffs, coeffs)
    np.testing.assert_array_equal(got.levels, levels)
    assert (got.height, got.width) == shape and got.tables is tables
    # a legal JPEG: both libjpeg-based readers parse it at its true size
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (*shape, 3)
    im = Image.open(io.BytesIO(data))
    im.load()
    assert im.size == (shape[1], shape[0])


def test_header_fields_follow_the_documented_layout(bikes_frames, default_tables):
    frame = bikes_frames[0]
    _, levels, data = encode_random(frame, default_tables, seed=1)
    p = app11_payload(data)
    assert p[:5] == MAGIC and p[5] == 1 and p[6] == 0 and p[7] == 8 and p[8] == 3 and p[9] == 16
    assert p[10:18] == default_tables.id
    assert struct.unpack(">HH", p[18:22]) == frame.shape[:2]
    packed = pack_levels(levels, 4)
    assert len(packed) == -(-levels.size * 4 // 8)
    assert p[23:] == (zlib.compress(packed, 9) if p[22] == 1 else packed)
    # first region's level is the high nibble of the first packed byte
    assert packed[0] >> 4 == levels[0, 0]


def test_smooth_map_is_zlib_coded_and_small(bikes_frames, default_tables):
    data = StacCodec(default_tables).encode(bikes_frames[0])
    p = app11_payload(data)
    assert p[22] == 1 and len(p) < 60  # uniform map of 12 x 27 regions collapses


def test_size_counted_is_the_bytes(bikes_frames, default_tables):
    codec = StacCodec(default_tables)
    data = codec.encode(bikes_frames[0])
    assert isinstance(data, bytes) and data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    assert codec.decode(data).shape == bikes_frames[0].shape


def test_level_bits():
    assert [level_bits(n) for n in (1, 2, 3, 16, 17, 32)] == [0, 1, 2, 4, 5, 5]


def rewrite_header(data: bytes, **fields) -> bytes:
    """Same stream with header fields replaced (offsets from docs/bitstream.md)."""
    p = bytearray(app11_payload(data))
    offsets = {"version": 5, "flags": 6, "block": 7, "region": 8, "levels": 9, "encoding": 22}
    for name, value in fields.items():
        if name == "id":
            p[10:18] = value
        elif name == "size":
            p[18:22] = struct.pack(">HH", *value)
        elif name == "map":
            p[23:] = value
        else:
            p[offsets[name]] = value
    return data[:4] + struct.pack(">H", len(p) + 2) + bytes(p) + data[6 + len(app11_payload(data)):]


@pytest.fixture(scope="module")
def good(bikes_frames):
    tables = tables_with_levels(12)  # L = 12 leaves 4-bit codes 12..15 unused
    return tables, encode_random(bikes_frames[2][:96, :120], tables, seed=3)[2]


@pytest.mark.parametrize("fields, message", [
    ({"version": 2}, "unsupported version 2"),
    ({"flags": 1}, "unsupported flags"),
    ({"block": 16}, "block size 16"),
    ({"region": 4}, "region size 4"),
    ({"levels": 16}, "L = 16"),
    ({"id": b"\x01" * 8}, "unknown table set 0101010101010101"),
    ({"size": (96, 119)}, "JPEG frame is 96x120, STAC header says 96x119"),
    ({"encoding": 7}, "unknown level map encoding 7"),
])
def test_rejects_header_problems(good, fields, message):
    tables, data = good
    with pytest.raises(BitstreamError, match=message):
        read_stac(rewrite_header(data, **fields), tables)


def test_rejects_level_out_of_range(good):
    tables, data = good
    count = 4 * 5  # 96x120 -> 12x15 blocks -> 4x5 regions
    bad = pack_levels(np.full(count, 13, np.uint8), 4)
    with pytest.raises(BitstreamError, match="level 13 >= L = 12"):
        read_stac(rewrite_header(data, encoding=0, map=bad), tables)


def test_rejects_map_of_wrong_length(good):
    tables, data = good
    with pytest.raises(BitstreamError, match="level map has 9 bytes, expected 10"):
        read_stac(rewrite_header(data, encoding=0, map=b"\0" * 9), tables)


def test_rejects_wrong_magic_and_non_stac(good, bikes_frames):
    tables, data = good
    with pytest.raises(BitstreamError, match="bad magic"):
        read_stac(data[:6] + b"XTAC" + data[10:], tables)
    plain = cv2.imencode(".jpg", bikes_frames[0])[1].tobytes()
    with pytest.raises(BitstreamError, match="no APP11"):
        read_stac(plain, tables)
    with pytest.raises(BitstreamError, match="no SOI"):
        read_stac(b"hello world", tables)


def test_rejects_truncation(good):
    tables, data = good
    for cut in (3, 20, len(data) // 2, len(data) - 1):
        with pytest.raises(BitstreamError):
            read_stac(data[:cut], tables)


def test_rejects_oversized_frame(good):
    tables, data = good
    with pytest.raises(BitstreamError, match=r"larger than this edge accepts \(10000 pixels\)"):
        read_stac(data, tables, max_pixels=10_000)


def test_rejects_out_of_range_coefficients(default_tables):
    # a legal JPEG (DC category 11) whose DC no 8-bit image can have
    coeffs = np.zeros((3, 2, 2, 64), np.int16)
    coeffs[0, 0, 0, 0] = 2000
    levels = np.zeros((1, 1), np.uint8)
    data = write_stac(coeffs, levels, 16, 16, default_tables)
    with pytest.raises(BitstreamError, match="out of JPEG's 8-bit range"):
        read_stac(data, default_tables)


def test_rejects_quantizing_dqt(good):
    tables, data = good
    i = data.index(b"\xff\xdb")
    bad = data[:i + 5] + b"\x02" + data[i + 6:]
    with pytest.raises(BitstreamError, match="not all ones"):
        read_stac(bad, tables)


def test_decoder_holds_several_table_sets(good, default_tables):
    tables, data = good
    assert read_stac(data, [default_tables, tables]).tables is tables


def test_encoder_refuses_what_jpeg_cannot_code(default_tables, bikes_frames):
    with pytest.raises(ValueError, match="level 16 out of range for 16 tables"):
        StacCodec(default_tables).encode_levels(bikes_frames[0], np.full((12, 27), 16, np.uint8))
    with pytest.raises(ValueError, match="libjpeg"):
        # an AC value beyond 1023 has no baseline Huffman category: libjpeg refuses, nothing is written
        coeffs = np.zeros((3, 1, 1, 64), np.int16)
        coeffs[0, 0, 0, 5] = 2000
        _libjpeg.write(coeffs, 8, 8, np.ones((1, 64), np.uint16), b"")


def test_fuzz_only_bitstream_errors(good):
    """Truncated and mutated streams: decoding either succeeds or raises BitstreamError, never anything else."""
    tables, data = good
    rng = np.random.default_rng(2024)
    outcomes = {"ok": 0, "error": 0}
    for i in range(2400):
        buf = bytearray(data)
        kind = i % 4
        if kind == 0:
            buf = buf[:rng.integers(0, len(buf))]
        elif kind == 1:
            for _ in range(rng.integers(1, 4)):
                buf[rng.integers(0, len(buf))] = rng.integers(0, 256)
        elif kind == 2:  # hit the headers, where parsing is hardest
            for _ in range(rng.integers(1, 3)):
                buf[rng.integers(0, min(len(buf), 700))] ^= 1 << rng.integers(0, 8)
        else:
            at = rng.integers(0, len(buf))
            buf = buf[:at] + bytes(rng.integers(0, 256, rng.integers(1, 40), dtype=np.uint8)) + buf[at:]
        try:
            read_stac(bytes(buf), tables)
            outcomes["ok"] += 1
        except BitstreamError:
            outcomes["error"] += 1
    assert outcomes["error"] > 1000 and sum(outcomes.values()) == 2400
