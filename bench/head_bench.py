"""Time the STAC head against the SEGMENT graph of the same model, on the same real frame, same run."""
from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stac.codec import make_codec
from stac.codec.bitstream import read_stac
from stac.inference import HeadSession, SegmentSession
from stac.tables import TableSet
from stac.video import resize


@dataclass
class HeadTiming:
    size: tuple[int, int]  # (H, W)
    head_ms: float  # median
    segment_ms: float
    runs: int
    # with profiling sessions: milliseconds per run by ONNX operator type, as onnxruntime's profiler saw them
    head_ops: dict[str, float] = field(default_factory=dict)
    segment_ops: dict[str, float] = field(default_factory=dict)

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
    image = resize(frame, size)
    codec = make_codec("stac", tables)
    data = codec.encode(image)
    decoded, pixels = read_stac(data, tables), codec.decode(data)
    timing = HeadTiming(size, _median_ms(lambda: head.run(decoded, tables), runs),
                        _median_ms(lambda: segment.run(pixels), runs), runs)
    if head.session.get_session_options().enable_profiling:
        timing.head_ops = _op_ms(head.session.end_profiling(), runs + 1)
        timing.segment_ops = _op_ms(segment.session.end_profiling(), runs + 1)
    return timing


def _op_ms(trace: str, runs: int) -> dict[str, float]:
    """onnxruntime's profile (a Chrome trace) -> ms per run by operator type, largest first."""
    total: Counter = Counter()
    for event in json.loads(Path(trace).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            total[event["args"]["op_name"]] += event["dur"] / 1e3 / runs
    Path(trace).unlink()
    return dict(total.most_common())


def format_timings(timings: list[HeadTiming]) -> str:
    lines = [f"{'size (HxW)':>12} {'head ms':>9} {'segment ms':>11} {'head/segment':>13}"]
    for t in timings:
        lines.append(f"{t.size[0]:>5}x{t.size[1]:<6} {t.head_ms:9.1f} {t.segment_ms:11.1f} {t.ratio:12.2f}x")
    for t in (t for t in timings if t.head_ops):
        lines.append(f"where the time goes at {t.size[0]}x{t.size[1]} (ms per run, profiled: "
                     f"head {sum(t.head_ops.values()):.1f}, segment {sum(t.segment_ops.values()):.1f}; "
                     f"operators with 1% of either)")
        lines.append(f"{'operator':>20} {'head':>7} {'segment':>8}")
        head_total, segment_total = sum(t.head_ops.values()), sum(t.segment_ops.values())
        for op, ms in t.head_ops.items():  # those with 1% of either graph's time
            if ms >= 0.01 * head_total or t.segment_ops.get(op, 0.0) >= 0.01 * segment_total:
                lines.append(f"{op:>20} {ms:7.1f} {t.segment_ops.get(op, 0.0):8.1f}")
    return "\n".join(lines)
