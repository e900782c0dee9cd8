"""H.264: CRF rate control, no B-frames, an I-frame then P-frames; encoded by the system libx264 (the
`_libx264` extension, which also takes a quantizer offset per macroblock), decoded by PyAV's libavcodec.

Tuned for live uplink (x264's zerolatency: no lookahead, no frame-thread delay), so every frame's bytes
exist as soon as the frame is encoded, as a device offloading in real time needs. The bytes counted are
the raw Annex-B stream (SPS/PPS inline, no container).

With no offsets the bytes equal PyAV's libx264 at the same options (checked frame by frame; only x264's
version string in the first frame's SEI differs).

The same codec carries STAC's keyframes as one inter-coded stream (route "h264"): only the frames the device
offloads are encoded, each predicted from the previous one; `request_idr()` makes the next one an IDR (SPS, PPS
and an I slice that needs nothing before it), as the edge asks after a lost or refused keyframe.
"""
from __future__ import annotations

import av
import cv2
import numpy as np

from . import _libx264
from .base import Codec
from .transform import check_frame, pad_to_multiple


FPS = 30  # the stream's nominal rate; CRF rate control sees the same one whatever the source's
# `--codec h264` as STAC's keyframe stream: chosen with its gate on the calibration clips for real-time accuracy
# (device_runtime.runtime.ROUTE_DEFAULTS); comparisons always name their CRF
DEFAULT_CRF = 40
# x264's preset as a device runs it: at 2048x1024 a P-frame takes 8 ms with superfast against 41 ms with medium on the
# 2-core machine (a 30 fps loop has 33 ms a frame for everything), and on the calibration clips over the LTE-like link
# the boundary-shaped keyframe stream kept the same real-time mIoU (-0.001 averaged over gates 34/38 x CRF 37/40/43)
# at 1% fewer bytes; ultrafast cost 12% more bytes. The ideal-link comparisons (paper Table I) name medium.
DEFAULT_PRESET = "superfast"
MACROBLOCK = 16  # px: the unit a QP offset applies to


class H264Codec(Codec):
    name = "h264"
    ext = ".h264"
    route = "h264"
    options = {"crf": int, "preset": str, "keyint": int}

    def __init__(self, crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET, keyint: int = 250):
        if not 0 <= crf <= 51:
            raise ValueError(f"H.264 CRF must be 0..51, got {crf}")
        self.crf, self.preset, self.keyint = crf, preset, keyint
        self.reset()

    @property
    def spec(self) -> str:
        return f"h264:crf={self.crf},preset={self.preset},keyint={self.keyint}"

    def reset(self) -> None:
        self._encoder = self._decoder = None
        self._crf: float = self.crf  # the CRF now: the spec's until set_crf
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

    def set_crf(self, crf: float) -> None:
        """The CRF of the frames coded from now on in this stream (fractional allowed): a rate controller's knob.
        The spec keeps the CRF the codec was made with."""
        if not 0 <= crf <= 51:
            raise ValueError(f"H.264 CRF must be 0..51, got {crf}")
        self._crf = crf
        if self._encoder is not None:
            self._encoder.set_crf(crf)

    def encode(self, frame: np.ndarray) -> bytes:
        return self.encode_offsets(frame, None)

    def encode_offsets(self, frame: np.ndarray, offsets: np.ndarray | None) -> bytes:
        """One frame, RGB uint8 [H, W, 3], with a QP offset per 16x16 macroblock (float [ceil(H/16), ceil(W/16)],
        added to x264's own choice; None: none) -> its access unit."""
        check_frame(frame)
        h, w = frame.shape[:2]
        if self._encoder is None:
            self._encoder = _libx264.Encoder(w + w % 2, h + h % 2, self._crf, self.preset, self.keyint, FPS)
            self._size = (h, w)  # 4:2:0 needs even sizes: odd ones are padded and cropped after decoding
        elif self._size != (h, w):
            raise ValueError(f"frame size changed from {self._size} to {(h, w)} within one stream; reset() first")
        if offsets is not None:
            offsets = np.ascontiguousarray(offsets, np.float32)
            if offsets.shape != macroblocks(h, w):
                raise ValueError(f"QP offsets {offsets.shape} for {macroblocks(h, w)} macroblocks")
        data = self._encoder.encode(yuv420(frame), offsets, self._idr)
        self._idr = False
        self._pts += 1
        return data

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


def yuv420(frame: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> I420 planes uint8 [3H/2, W] (H, W: even), BT.601 limited range as libswscale makes
    them (luma equal to within 1, chroma within 4 levels, 20 times faster at 2048x1024)."""
    return cv2.cvtColor(np.ascontiguousarray(pad_to_multiple(frame, 2)), cv2.COLOR_RGB2YUV_I420)


def macroblocks(height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of 16x16 macroblocks covering a frame."""
    return -(-height // MACROBLOCK), -(-width // MACROBLOCK)


def is_idr(data: bytes) -> bool:
    """Whether an Annex-B access unit holds an IDR slice (NAL unit type 5): where a new decoder can start."""
    start = data.find(b"\x00\x00\x01")
    while 0 <= start < len(data) - 3:
        if data[start + 3] & 0x1F == 5:
            return True
        start = data.find(b"\x00\x00\x01", start + 3)
    return False


class _Bits:
    """An RBSP read bit by bit (emulation-prevention bytes removed), with Exp-Golomb codes."""

    def __init__(self, nal: bytes):
        self.data = nal.replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0

    def bit(self) -> int:
        if self.pos >= len(self.data) * 8:
            raise ValueError("H.264 parameter set ends early")
        b = (self.data[self.pos // 8] >> (7 - self.pos % 8)) & 1
        self.pos += 1
        return b

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = value << 1 | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while not self.bit():
            zeros += 1
            if zeros > 31:
                raise ValueError("corrupt Exp-Golomb code in an H.264 parameter set")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


def sps_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) in pixels, rounded up to macroblocks, from the first sequence parameter set (NAL type 7) of an
    Annex-B access unit, read without decoding anything; None when the unit carries none (a P-frame)."""
    start = data.find(b"\x00\x00\x01")
    while 0 <= start < len(data) - 3:
        end = data.find(b"\x00\x00\x01", start + 3)
        if data[start + 3] & 0x1F == 7:
            r = _Bits(data[start + 4:end if end > 0 else len(data)])
            profile = r.bits(8)
            r.bits(16)  # constraint flags, level
            r.ue()  # seq_parameter_set_id
            if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
                chroma = r.ue()
                if chroma == 3:  # 4:4:4: separate_colour_plane_flag
                    r.bit()
                r.ue(), r.ue(), r.bit()  # bit depths, transform bypass
                if r.bit():  # scaling matrices
                    for i in range(12 if chroma == 3 else 8):
                        if r.bit():
                            last, following = 8, 8
                            for _ in range(16 if i < 6 else 64):
                                if following:
                                    following = (last + r.se()) % 256
                                last = following or last
            r.ue()  # log2_max_frame_num_minus4
            poc_type = r.ue()
            if poc_type == 0:
                r.ue()
            elif poc_type == 1:
                r.bit(), r.se(), r.se()
                for _ in range(r.ue()):
                    r.se()
            r.ue(), r.bit()  # max_num_ref_frames, gaps
            width_mbs, height_units = r.ue() + 1, r.ue() + 1
            frame_mbs_only = r.bit()
            return height_units * (2 - frame_mbs_only) * 16, width_mbs * 16
        start = end
    return None
