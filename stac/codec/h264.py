"""H.264 through PyAV's libx264: CRF rate control, no B-frames, an I-frame then P-frames.

Tuned for live uplink (x264's zerolatency: no lookahead, no frame-thread delay), so every frame's bytes
exist as soon as the frame is encoded, as a device offloading in real time needs. The bytes counted are
the raw Annex-B stream (SPS/PPS inline, no container).

The same codec carries STAC's keyframes as one inter-coded stream (route "h264"): only the frames the device
offloads are encoded, each predicted from the previous one; `request_idr()` makes the next one an IDR (SPS, PPS
and an I slice that needs nothing before it), as the edge asks after a lost or refused keyframe.
"""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from .base import Codec
from .transform import check_frame, pad_to_multiple


class H264Codec(Codec):
    name = "h264"
    ext = ".h264"
    route = "h264"
    options = {"crf": int, "preset": str, "keyint": int}

    def __init__(self, crf: int = 23, preset: str = "medium", keyint: int = 250):
        if not 0 <= crf <= 51:
            raise ValueError(f"H.264 CRF must be 0..51, got {crf}")
        self.crf, self.preset, self.keyint = crf, preset, keyint
        self.reset()

    @property
    def spec(self) -> str:
        return f"h264:crf={self.crf},preset={self.preset},keyint={self.keyint}"

    def reset(self) -> None:
        self._encoder = self._decoder = None
        self._size = None
        self._pts = 0
        self._idr = False

    @property
    def position(self) -> int:
        """Frames encoded so far in this stream: the next frame's position (the edge checks it comes in order)."""
        return self._pts

    def request_idr(self) -> None:
        """Code the next frame as an IDR: decodable by a decoder that has seen nothing of this stream."""
        self._idr = True

    def _open(self, height: int, width: int) -> None:
        enc = av.CodecContext.create("libx264", "w")
        enc.width, enc.height = width + width % 2, height + height % 2  # 4:2:0 needs even sizes
        enc.pix_fmt = "yuv420p"
        enc.time_base = Fraction(1, 30)
        enc.options = {"crf": str(self.crf), "preset": self.preset, "tune": "zerolatency", "bf": "0",
                       "g": str(self.keyint), "forced-idr": "1"}
        self._encoder, self._size = enc, (height, width)

    def encode(self, frame: np.ndarray) -> bytes:
        check_frame(frame)
        h, w = frame.shape[:2]
        if self._encoder is None:
            self._open(h, w)
        elif self._size != (h, w):
            raise ValueError(f"frame size changed from {self._size} to {(h, w)} within one stream; reset() first")
        padded = pad_to_multiple(frame, 2)
        vf = av.VideoFrame.from_ndarray(padded, format="rgb24").reformat(format="yuv420p")
        vf.pts = self._pts
        if self._idr:
            vf.pict_type = av.video.frame.PictureType.I
            self._idr = False
        self._pts += 1
        packets = self._encoder.encode(vf)
        if len(packets) != 1:
            raise RuntimeError(f"libx264 returned {len(packets)} packets for one frame (expected zero latency)")
        return bytes(packets[0])

    def decode(self, data: bytes) -> np.ndarray:
        if self._decoder is None:
            self._decoder = av.CodecContext.create("h264", "r")
        try:
            frames = self._decoder.decode(av.Packet(data))
        except av.error.FFmpegError as e:
            raise ValueError(f"H.264 decode failed: {e}") from None
        if len(frames) != 1:
            raise ValueError(f"H.264 packet decoded to {len(frames)} frames, expected 1")
        rgb = frames[0].to_ndarray(format="rgb24")
        if self._size is not None:
            rgb = rgb[:self._size[0], :self._size[1]]
        return rgb


def is_idr(data: bytes) -> bool:
    """Whether an Annex-B access unit holds an IDR slice (NAL unit type 5): where a new decoder can start."""
    start = data.find(b"\x00\x00\x01")
    while 0 <= start < len(data) - 3:
        if data[start + 3] & 0x1F == 5:
            return True
        start = data.find(b"\x00\x00\x01", start + 3)
    return False
