"""The coded answers: class-id masks coded losslessly (stac.codec.mask)."""
import zlib

import numpy as np
import pytest

import cv2

from stac.codec import make_codec
from stac.codec.mask import HEADER, MaskError, decode_mask, encode_mask, fit
from stac.edge.client import LocalEdge
from stac.edge.streams import Stream
from stac.tables import TableSet
from stac.inference import SegmentSession


@pytest.fixture(scope="module")
def masks(exported, bikes_frames, carphone_frames):
    """The selfie model's masks of real frames (two classes)."""
    session = SegmentSession(exported("selfie") / "segment.onnx")
    return [session.run(frame) for frame in bikes_frames[:3] + carphone_frames[:2]]


def test_real_masks_round_trip_at_a_fraction_of_zlib(masks):
    for mask in masks:
        data = encode_mask(mask)
        np.testing.assert_array_equal(decode_mask(data), mask)
        packed = len(zlib.compress(np.packbits(mask).tobytes(), 9))  # the obvious alternative
        assert len(data) < packed and len(data) * 50 < mask.size


@pytest.mark.parametrize("shape, classes", [((1, 1), 2), ((3, 200), 2), ((37, 53), 19), ((64, 48), 256),
                                            ((5, 5), 1)])
def test_any_mask_round_trips(shape, classes):
    rng = np.random.default_rng(sum(shape) + classes)
    noise = rng.integers(0, classes, shape, dtype=np.uint8)
    blocks = np.kron(rng.integers(0, classes, (4, 4)), np.ones((8, 8), np.int64)).astype(np.uint8)
    for mask in (noise, blocks, np.zeros(shape, np.uint8), np.full(shape, classes - 1, np.uint8)):
        np.testing.assert_array_equal(decode_mask(encode_mask(mask)), mask)


def test_bad_codings_are_errors_that_say_what_is_wrong(masks):
    data = encode_mask(masks[0])
    h, w = masks[0].shape
    for bad, message in ((data[:-1], "truncated"), (data + b"\0", "after its end"), (data[:3], "header"),
                         (b"X" + data[1:], "not a coded mask"), (data[:1] + b"\x09" + data[2:], "not a coded mask"),
                         (HEADER.pack(b"M", 1, 0, w, 1) + data[HEADER.size:], "declares"),
                         (HEADER.pack(b"M", 1, h, w, 9) + data[HEADER.size:], "planes")):
        with pytest.raises(MaskError, match=message):
            decode_mask(bad)
    with pytest.raises(MaskError, match="larger than"):
        decode_mask(data, max_pixels=h * w - 1)
    rng = np.random.default_rng(0)
    data = encode_mask(masks[-1])
    for _ in range(200):  # garbled codings: an error, or some mask of the declared size, never a crash
        garbled = bytearray(data)
        garbled[rng.integers(HEADER.size, len(data))] ^= 1 << int(rng.integers(8))
        try:
            assert decode_mask(bytes(garbled)).shape == masks[-1].shape
        except MaskError:
            pass


def test_what_cannot_be_coded_is_refused():
    for bad in (np.zeros((4, 4), np.int32), np.zeros((4, 4, 3), np.uint8), np.zeros((0, 4), np.uint8),
                np.zeros((70000, 1), np.uint8)):
        with pytest.raises(ValueError):
            encode_mask(bad)


def test_an_answer_at_the_size_the_device_uses_it(exported, carphone_frames, masks):
    """The edge crops its padded mask to the frame and scales it as the device would (nearest): the same mask the
    device made of a full-size answer, at a fraction of the bytes."""
    mask = masks[0]
    padded = np.pad(mask, ((0, 5), (0, 11)), mode="edge")
    small = fit(padded, mask.shape, (68, 160))
    np.testing.assert_array_equal(small, cv2.resize(mask, (160, 68), interpolation=cv2.INTER_NEAREST))
    assert fit(padded, mask.shape, mask.shape).shape == mask.shape
    for frame, size in (((300, 640), (68, 160)), (mask.shape, (300, 160)), ((272, 700), (68, 160))):
        with pytest.raises(ValueError, match="ANSWER_SIZE"):
            fit(padded if size != (300, 160) else mask, frame, size)
    edge = LocalEdge(exported("selfie"), TableSet.default())
    data = make_codec("h264:crf=28").encode(carphone_frames[1])  # 41% of it the person
    full = edge.segment(data, "h264", (144, 176), stream=Stream(7, 0, True))
    small = edge.segment(data, "h264", (144, 176), stream=Stream(7, 0, True), answer=(72, 88))
    np.testing.assert_array_equal(small.mask, cv2.resize(full.mask, (88, 72), interpolation=cv2.INTER_NEAREST))
    assert small.payload < full.payload
