"""Time the STAC head against the SEGMENT graph of the same model, on the same real frame, same run."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import cv2
import numpy as np

from stac.codec import make_codec
from stac.codec.bitstream import read_stac
from stac.inference import HeadSession, SegmentSession
from stac.tables import TableSet


@dataclass
class HeadTiming:
    size: tuple[int, int]  # (H, W)
    head_ms: float  # median
    segment_ms: float
    runs: int

    @property
    def ratio(self) -> float:
        return self.head_ms / self.segment_ms


def _median_ms(fn, runs: int) -> float:
    fn()  # warm-up: first runs allocate and pick kernels
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def time_head(head: HeadSession, segment: SegmentSession, frame: np.ndarray, size: tuple[int, int],
              tables: TableSet, runs: int) -> HeadTiming:
    """frame RGB uint8 resized to size (H, W), STAC-coded at the middle level, then both graphs timed."""
    h, w = size
    image = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    codec = make_codec("stac", tables)
    data = codec.encode(image)
    decoded, pixels = read_stac(data, tables), codec.decode(data)
    return HeadTiming(size, _median_ms(lambda: head.run(decoded, tables), runs),
                      _median_ms(lambda: segment.run(pixels), runs), runs)


def format_timings(timings: list[HeadTiming]) -> str:
    lines = [f"{'size (HxW)':>12} {'head ms':>9} {'segment ms':>11} {'head/segment':>13}"]
    for t in timings:
        lines.append(f"{t.size[0]:>5}x{t.size[1]:<6} {t.head_ms:9.1f} {t.segment_ms:11.1f} {t.ratio:12.2f}x")
    return "\n".join(lines)
