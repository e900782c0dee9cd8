"""Standard JPEG through OpenCV's libjpeg-turbo: one table per component for the whole frame."""
from __future__ import annotations

import cv2
import numpy as np

from .base import Codec
from .transform import check_frame

_SAMPLING = {"420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444}


def decode_jpeg(data: bytes) -> np.ndarray:
    """Any baseline/progressive JPEG -> RGB uint8 [H, W, 3]."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
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
