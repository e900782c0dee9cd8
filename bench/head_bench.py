"""Time the STAC head against the SEGMENT graph of the same model, on the same real frame, same run; and each graph
on a batch of that frame against one frame at a time (what Triton's dynamic batcher gathers from several devices)."""
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
from stac.codec.transform import pad_to_multiple
from stac.contract import IMAGE
from stac.inference import HeadSession, SegmentSession
from stac.tables import TableSet
from stac.video import resize


@dataclass
class HeadTiming:
    size: tuple[int, int]  # (H, W)
    head_ms: float  # median
    segment_ms: float
    runs: int
    batch: int = 1  # frames per run below
    head_batch_ms: float | None = None  # per frame, in a run of ``batch`` frames
    segment_batch_ms: float | None = None
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
              tables: TableSet, runs: int, batch: int = 1) -> HeadTiming:
    """frame RGB uint8 resized to size (H, W), STAC-coded at the middle level, then both graphs timed: one frame a
    run, and (``batch`` > 1) ``batch`` copies a run."""
    image = resize(frame, size)
    codec = make_codec("stac", tables)
    data = codec.encode(image)
    decoded, pixels = read_stac(data, tables), codec.decode(data)
    timing = HeadTiming(size, _median_ms(lambda: head.run(decoded, tables), runs),
                        _median_ms(lambda: segment.run(pixels), runs), runs, batch)
    if head.session.get_session_options().enable_profiling:  # the runs of one frame only
        timing.head_ops = _op_ms(head.session.end_profiling(), runs + 1)
        timing.segment_ops = _op_ms(segment.session.end_profiling(), runs + 1)
    if batch > 1:
        feed = {name: np.concatenate([value] * batch) for name, value in head.feed(decoded, tables).items()}
        images = np.stack([pad_to_multiple(pixels, segment.size_multiple)] * batch)
        timing.head_batch_ms = _median_ms(lambda: head.session.run(None, feed), runs) / batch
        timing.segment_batch_ms = _median_ms(lambda: segment.session.run(None, {IMAGE.name: images}), runs) / batch
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
    batched = [t for t in timings if t.head_batch_ms is not None]
    lines = [f"batched: ms per frame in runs of {batched[0].batch} frames, and its ratio to one frame a run (below 1: "
             f"batching pays)"] if batched else []
    lines.append(f"{'size (HxW)':>12} {'head ms':>9} {'segment ms':>11} {'head/segment':>13}"
                 + (f" {'head batched':>13} {'ratio':>6} {'segment batched':>16} {'ratio':>6}" if batched else ""))
    for t in timings:
        line = f"{t.size[0]:>5}x{t.size[1]:<6} {t.head_ms:9.1f} {t.segment_ms:11.1f} {t.ratio:12.2f}x"
        if t.head_batch_ms is not None:
            line += (f" {t.head_batch_ms:13.1f} {t.head_batch_ms / t.head_ms:6.2f} {t.segment_batch_ms:16.1f} "
                     f"{t.segment_batch_ms / t.segment_ms:6.2f}")
        lines.append(line)
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
