"""Standard JPEG through OpenCV's libjpeg-turbo: one table per component for the whole frame."""
from __future__ import annotations

import cv2
import numpy as np

from .base import Codec
from .transform import check_frame, check_size

_SAMPLING = {"420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444}


# start-of-frame markers: SOF0..SOF15 but DHT (C4), JPG (C8) and DAC (CC)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a JPEG's frame header, read without decoding anything; ValueError if ``data`` is not a
    JPEG (other image formats included) or has no frame header before its scan."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no start-of-image marker)")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"corrupt JPEG: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker == 0xDA:
            break
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _SOF:
            if length < 8 or pos + 9 > len(data):
                raise ValueError("corrupt JPEG: truncated frame header")
            height, width = int.from_bytes(data[pos + 5:pos + 7], "big"), int.from_bytes(data[pos + 7:pos + 9], "big")
            if not height or not width:
                raise ValueError(f"JPEG frame header gives {width}x{height}")
            return height, width
        pos += 2 + length
    raise ValueError("corrupt JPEG: no frame header")


def decode_jpeg(data: bytes, max_pixels: int | None = None, max_side: int | None = None) -> np.ndarray:
    """Any baseline/progressive JPEG -> RGB uint8 [H, W, 3]; one larger than ``max_pixels`` or ``max_side`` is
    refused from its header, before any decoding."""
    check_size("image", *jpeg_size(data), max_pixels, max_side)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        bgr = None
    if bgr is None:
        raise ValueError("not a decodable JPEG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class JpegCodec(Codec):
    name = "jpeg"
    ext = ".jpg"
    route = "jpeg"
    options = {"q": int, "subsampling": str}

    def __init__(self, q: int = 90, subsampling: str = "420"):
        if not 1 <= q <= 100:
            raise ValueError(f"JPEG quality must be 1..100, got {q}")
        if subsampling not in _SAMPLING:
            raise ValueError(f"subsampling must be one of {', '.join(_SAMPLING)}, got {subsampling!r}")
        self.q, self.subsampling = q, subsampling
        self._params = [cv2.IMWRITE_JPEG_QUALITY, q, cv2.IMWRITE_JPEG_OPTIMIZE, 1,
                        cv2.IMWRITE_JPEG_SAMPLING_FACTOR, _SAMPLING[subsampling]]

    @property
    def spec(self) -> str:
        return f"jpeg:q={self.q},subsampling={self.subsampling}"

    def encode(self, frame: np.ndarray) -> bytes:
        check_frame(frame)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), self._params)
        if not ok:
            raise ValueError("OpenCV failed to encode the frame")
        return buf.tobytes()

    def decode(self, data: bytes) -> np.ndarray:
        return decode_jpeg(data)
