import cv2
import numpy as np
import pytest

from stac.codec.transform import dct_quantize, dequantize_idct, pad_to_blocks, rgb_to_ycbcr
from stac.tables import blocks_for
from stac.video import psnr


def reference_dct(planes: np.ndarray) -> np.ndarray:
    """Per-block OpenCV DCT (an independent implementation) -> [3, Hb, Wb, 64]."""
    c, h, w = planes.shape
    out = np.zeros((c, h // 8, w // 8, 64))
    for k in range(c):
        for i in range(h // 8):
            for j in range(w // 8):
                block = planes[k, i * 8:i * 8 + 8, j * 8:j * 8 + 8].astype(np.float64) - 128
                out[k, i, j] = cv2.dct(block).ravel()
    return out


def test_dct_matches_opencv_per_block(carphone_frames):
    frame = carphone_frames[0][:40, :56]
    ref = reference_dct(rgb_to_ycbcr(frame))
    rng = np.random.default_rng(0)
    steps = rng.integers(1, 30, (4, 3, 64)).astype(np.float32)
    levels = rng.integers(0, 4, (5, 7)).astype(np.uint8)
    got = dct_quantize(frame, levels, steps)
    per_block = np.moveaxis(steps[levels], 2, 0)
    want = np.sign(ref / per_block) * np.floor(np.abs(ref / per_block) + 0.5)
    # float32 vs float64 can only differ where ref / step sits on a rounding tie
    diff = np.abs(got - want)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_step_one_round_trip_is_near_lossless(bikes_frames):
    frame = bikes_frames[0]
    hb, wb = blocks_for(*frame.shape[:2])
    ones = np.ones((1, 3, 64), np.float32)
    zeros = np.zeros((hb, wb), np.uint8)
    back = dequantize_idct(dct_quantize(frame, zeros, ones), zeros, ones, *frame.shape[:2])
    assert back.shape == frame.shape
    # only the 8-bit YCbCr rounding of JPEG itself is lost
    assert psnr(frame, back) > 40
    y, cb, cr = rgb_to_ycbcr(frame)
    assert psnr(frame, cv2.cvtColor(np.stack([y, cr, cb], axis=-1), cv2.COLOR_YCrCb2RGB)) > 40


@pytest.mark.parametrize("shape", [(1, 1), (7, 9), (17, 31), (144, 176)])
def test_any_frame_size(shape, carphone_frames):
    frame = np.ascontiguousarray(carphone_frames[1][:shape[0], :shape[1]])
    hb, wb = blocks_for(*shape)
    levels = np.zeros((hb, wb), np.uint8)
    steps = np.full((1, 3, 64), 2, np.float32)
    coeffs = dct_quantize(frame, levels, steps)
    assert coeffs.shape == (3, hb, wb, 64)
    back = dequantize_idct(coeffs, levels, steps, *shape)
    assert back.shape == frame.shape
    assert pad_to_blocks(frame).shape[:2] == (hb * 8, wb * 8)


def test_rejects_bad_input(bikes_frames):
    frame = bikes_frames[0]
    hb, wb = blocks_for(*frame.shape[:2])
    levels = np.zeros((hb, wb), np.uint8)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        dct_quantize(frame, levels, np.full((1, 3, 64), 0.5, np.float32))
    with pytest.raises(ValueError, match="RGB uint8"):
        dct_quantize(frame.astype(np.float32), levels, np.ones((1, 3, 64), np.float32))
    with pytest.raises(ValueError, match="does not match the block grid"):
        dct_quantize(frame, levels[:-1], np.ones((1, 3, 64), np.float32))
    with pytest.raises(ValueError, match="out of range"):
        dct_quantize(frame, levels + 1, np.ones((1, 3, 64), np.float32))


def test_one_resize_policy_for_frames():
    from stac.video import resize

    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    assert resize(image, (40, 60)) is image  # sizes are (h, w), as numpy's shapes
    np.testing.assert_array_equal(resize(image, (20, 30)), cv2.resize(image, (30, 20), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(resize(image, (80, 120)), cv2.resize(image, (120, 80),
                                                                        interpolation=cv2.INTER_CUBIC))
