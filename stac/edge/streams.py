"""Inter-coded keyframe streams: one H.264 decoder per device stream, and the rule that keeps them in step.

A device codes only its keyframes, as one H.264 stream in which each frame is predicted from the one before
(`stac.codec.H264Codec`, route "h264"). The edge can decode a P-frame only after every frame before it since
the stream's last IDR, so each request carries its ``Stream``: the device stream's ID (Triton's correlation
ID) and the frame's position (frames the device coded before it). A P-frame that follows a gap (a keyframe
lost, or given up by the device), comes late or twice, or belongs to a stream this edge does not hold
(restarted, or evicted as the least recently used) is refused with an error starting NEED_IDR; so is every
frame after a decode failure. The device answers any refusal by coding its next keyframe as an IDR, which
(re)starts the stream wherever it is: nothing waits, nothing is decoded against the wrong reference.
"""
from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..codec.h264 import H264Codec, is_idr, sps_size
from ..codec.transform import check_size

NEED_IDR = "need IDR"
MAX_STREAMS = 64  # decoders held at once (a 2048x1024 decoder holds ~20 MB of reference frames)
# A stream idle this long is released: its decoder's memory freed, its next P-frame refused (the device then sends an
# IDR). Triton's sequence batcher releases the stream's slot after the same time, but never tells the model: without
# this, streams that devices abandon held their decoders until 64 of them had taken 290 MB (`stac-bench soak`).
STREAM_IDLE_S = 60


class NeedIdr(ValueError):
    """This frame cannot be decoded against what the edge holds of its stream."""


@dataclass(frozen=True)
class Stream:
    """Where one keyframe sits in its device's stream."""
    id: int  # non-zero, unique per device stream (Triton's sequence correlation ID)
    position: int  # frames the device coded in this stream before this one
    start: bool  # the frame is an IDR: it (re)starts the stream


def new_stream_id() -> int:
    """A fresh device stream ID. Its top bit is set so every ID costs the same bytes on the wire (a 9-byte varint
    over gRPC, 19 digits over HTTP): byte counts of two runs of one clip must not differ with the draw."""
    return (1 << 62) | secrets.randbits(62)


class StreamDecoders:
    """The decoders of the device streams an edge serves, least recently used evicted past ``max_streams``, and any
    idle for ``idle_s``."""

    def __init__(self, max_streams: int = MAX_STREAMS, idle_s: float = STREAM_IDLE_S,
                 clock=time.monotonic):
        self.max_streams, self.idle_s, self.clock = max_streams, idle_s, clock
        # id -> (decoder, next position, last used), least recently used first
        self._held: OrderedDict[int, tuple[H264Codec, int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def decode(self, stream_id: int, position: int, data: bytes, max_pixels: int | None = None,
               max_side: int | None = None) -> np.ndarray:
        """One access unit of stream ``stream_id`` at ``position`` -> RGB uint8 [H', W', 3] (H', W' even). A unit
        whose parameter set declares more than ``max_pixels`` or ``max_side`` is refused before decoding (P-frames
        carry none: their size is their IDR's)."""
        now = self.clock()
        while self._held and now - next(iter(self._held.values()))[2] > self.idle_s:
            self._held.popitem(last=False)
        size = sps_size(data)
        if size is not None:
            check_size("H.264 frame", *size, max_pixels, max_side)
        if is_idr(data):
            decoder = H264Codec()
        elif stream_id not in self._held:
            raise NeedIdr(f"{NEED_IDR}: stream {stream_id} is not held here (never started, restarted or evicted); "
                          f"a P-frame needs its stream's previous frames")
        else:
            decoder, expected, _ = self._held[stream_id]
            if position != expected:
                raise NeedIdr(f"{NEED_IDR}: stream {stream_id} sent frame {position}, the next decodable is {expected}")
        try:
            image = decoder.decode(data)
        except ValueError:
            self._held.pop(stream_id, None)  # its reference frames can no longer be trusted
            raise
        self._held[stream_id] = (decoder, position + 1, now)
        self._held.move_to_end(stream_id)
        while len(self._held) > self.max_streams:
            self._held.popitem(last=False)
        return image

    def end(self, stream_id: int) -> None:
        """The device closed its stream."""
        self._held.pop(stream_id, None)
