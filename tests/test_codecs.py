import io

import numpy as np
import pytest
from PIL import Image

from stac.codec import CODECS, H264Codec, make_codec
from stac.codec.h264 import macroblocks, yuv420
from stac.video import psnr

SPECS = ["jpeg:q=90", "jpeg:q=75,subsampling=444", "grace", "stac", "stac:level=0", "h264:crf=23,preset=veryfast"]


@pytest.mark.parametrize("spec", SPECS)
def test_every_codec_round_trips_real_video(spec, bikes_frames, default_tables):
    codec = make_codec(spec, default_tables)
    codec.reset()
    for frame in bikes_frames[:4]:
        data = codec.encode(frame)
        assert isinstance(data, bytes) and 0 < len(data) < frame.nbytes / 3
        back = codec.decode(data)
        assert back.shape == frame.shape and back.dtype == np.uint8
        assert psnr(frame, back) > 35
    assert make_codec(codec.spec, default_tables).spec == codec.spec


def test_registry_has_the_four_codecs():
    assert {"jpeg", "grace", "stac", "h264"} <= set(CODECS)


def test_stac_levels_trade_bytes_for_quality(bikes_frames, default_tables):
    frame = bikes_frames[0]
    sizes, quality = [], []
    for level in (0, 8, 15):
        codec = make_codec(f"stac:level={level}", default_tables)
        data = codec.encode(frame)
        sizes.append(len(data))
        quality.append(psnr(frame, codec.decode(data)))
    assert sizes[0] > sizes[1] > sizes[2]
    assert quality[0] > quality[1] > quality[2]


def test_grace_is_a_standard_jpeg_with_its_table(bikes_frames, default_tables):
    codec = make_codec("grace", default_tables)
    im = Image.open(io.BytesIO(codec.encode(bikes_frames[0])))
    assert [layer[3] for layer in im.layer] == [0, 1, 2]  # one table per component
    for c in range(3):
        assert list(im.quantization[c]) == codec.table[c].tolist()


def test_h264_is_annex_b_with_i_then_p_frames(bikes_frames):
    codec = H264Codec(crf=28, preset="veryfast")
    sizes = []
    for frame in bikes_frames[:5]:
        data = codec.encode(frame)
        sizes.append(len(data))
        assert data[:4] == b"\x00\x00\x00\x01"  # raw Annex-B start code, no container
        codec.decode(data)
    assert sizes[0] > 2 * max(sizes[1:])  # the I-frame, then much smaller P-frames
    odd = np.ascontiguousarray(bikes_frames[0][:101, :99])
    codec.reset()
    assert codec.decode(codec.encode(odd)).shape == odd.shape


def test_h264_without_offsets_is_pyavs_libx264(carphone_frames):
    """The system libx264 behind `_libx264`, set as libavcodec sets it: the same bytes as PyAV's own libx264 (all
    but the first unit, whose SEI names x264's version)."""
    from fractions import Fraction

    import av

    reference = av.CodecContext.create("libx264", "w")
    reference.width, reference.height, reference.pix_fmt = 176, 144, "yuv420p"
    reference.time_base = Fraction(1, 30)
    reference.options = {"crf": "28", "preset": "medium", "tune": "zerolatency", "bf": "0", "g": "250"}
    codec = H264Codec(crf=28, preset="medium")
    for i, frame in enumerate(carphone_frames[:6]):
        vf = av.VideoFrame.from_ndarray(yuv420(frame), format="yuv420p")  # the same planes
        vf.pts = i
        expected = b"".join(bytes(p) for p in reference.encode(vf))
        if i:
            assert codec.encode(frame) == expected
        else:
            assert abs(len(codec.encode(frame)) - len(expected)) < 64


def test_h264_offsets_move_bits_between_macroblocks(carphone_frames):
    rows, cols = macroblocks(144, 176)
    assert (rows, cols) == (9, 11) and macroblocks(145, 161) == (10, 11)
    sizes, quality = {}, {}
    for name, offsets in (("none", None), ("coarse", np.full((rows, cols), 6.0)),
                          ("fine", np.full((rows, cols), -6.0))):
        codec = H264Codec(crf=28)
        data = [codec.encode_offsets(f, offsets) for f in carphone_frames[:4]]
        sizes[name] = sum(map(len, data))
        quality[name] = psnr(carphone_frames[3], _decode_all(data)[-1])
    assert sizes["fine"] > sizes["none"] > sizes["coarse"]
    assert quality["fine"] > quality["none"] > quality["coarse"]
    # the left half finer, the right half coarser: the left half decodes closer to the frame
    split = np.full((rows, cols), 8.0, np.float32)
    split[:, :cols // 2] = -8.0
    back = _decode_all([H264Codec(crf=28).encode_offsets(carphone_frames[0], split)])[0]
    assert psnr(carphone_frames[0][:, :80], back[:, :80]) > psnr(carphone_frames[0][:, 96:], back[:, 96:]) + 3


def _decode_all(data: list[bytes]) -> list[np.ndarray]:
    decoder = H264Codec()
    return [decoder.decode(d) for d in data]


@pytest.mark.parametrize("offsets, message", [
    (np.zeros((9, 10), np.float32), r"QP offsets \(9, 10\) for \(9, 11\) macroblocks"),
    (np.zeros((9, 11, 1), np.float32), "QP offsets"),
])
def test_h264_offsets_must_cover_the_macroblocks(offsets, message, carphone_frames):
    with pytest.raises(ValueError, match=message):
        H264Codec().encode_offsets(carphone_frames[0], offsets)


def test_h264_names_a_bad_preset(carphone_frames):
    with pytest.raises(ValueError, match="unknown x264 preset"):
        make_codec("h264:preset=warp").encode(carphone_frames[0])


@pytest.mark.parametrize("spec, message", [
    ("webp", "unknown codec 'webp'"),
    ("jpeg:quality=9", "bad option 'quality=9'"),
    ("jpeg:q=abc", "must be int"),
    ("jpeg:q=101", "1..100"),
    ("stac:level=16", "level must be 0..15"),
    ("h264:crf=60", "0..51"),
])
def test_bad_specs_name_the_problem(spec, message, default_tables):
    with pytest.raises(ValueError, match=message):
        make_codec(spec, default_tables)


def test_jpeg_size_is_read_from_the_header_alone(carphone_frames):
    from stac.codec.jpeg import decode_jpeg, jpeg_size

    data = make_codec("jpeg:q=80").encode(carphone_frames[0])
    assert jpeg_size(data) == (144, 176)
    png = io.BytesIO()
    Image.fromarray(carphone_frames[0]).save(png, format="PNG")
    for bad, message in ((b"", "not a JPEG"), (png.getvalue(), "not a JPEG"), (data[:20], "no frame header"),
                         (b"\xff\xd8" + bytes(8), "no marker at byte 2")):
        with pytest.raises(ValueError, match=message):
            decode_jpeg(bad)
    # a header claiming 30000x30000 over a few KB of data: refused before any decoding
    from bench.fuzz import bomb, claim

    huge = bomb(data, "jpeg", 30000)
    assert jpeg_size(huge) == (30000, 30000)
    with pytest.raises(ValueError, match="30000x30000 is larger than this edge accepts"):
        decode_jpeg(huge, max_pixels=4096 * 4096)
    assert decode_jpeg(data, max_pixels=176 * 144).shape == (144, 176, 3)
    strip = claim(data, "jpeg", 144, 16560)  # a bit flip found by fuzzing: fewer pixels than 2048x2048, far wider
    with pytest.raises(ValueError, match=r"16560x144 is larger than this edge accepts \(4194304 pixels, 2048 on a"):
        decode_jpeg(strip, max_pixels=2048 * 2048, max_side=2048)
    assert decode_jpeg(data, max_side=176).shape == (144, 176, 3)


def test_bad_frames_name_the_problem(default_tables):
    for spec in SPECS:
        with pytest.raises(ValueError, match="RGB uint8"):
            make_codec(spec, default_tables).encode(np.zeros((16, 16), np.uint8))
