"""Frames per second of the device loop, against DIS ULTRAFAST alone on the same frames in the same run.

The loop is timed against an edge that costs this process no CPU: a first run, untimed, sends the loop's
keyframes to the real edge and records its answers (``record``); the timed run gets each answer back from that
recording (``RecordedEdge``). Both runs deliver every answer a fixed number of frames after its keyframe was
sent (``DelayedAnswers``, the edge's latency in frames), so they choose the same keyframes and code them to the
same bytes, also where that depends on answers (the level maps, the inter codec's stream): every gated
keyframe is encoded and answered, and the time is the device's alone.
"""
from __future__ import annotations

import hashlib
import math
import queue
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from device_runtime.runtime import Runtime, RuntimeConfig
from stac.allocate import boundary_levels, boundary_offsets
from stac.codec import StacCodec, make_codec
from stac.edge.client import Edge, EdgeAnswer, EdgeError
from stac.edge.streams import Stream
from stac.flow import Flow
from stac.metrics import confusion_matrix, miou
from stac.tables import TableSet


@dataclass
class DeviceTiming:
    label: str
    fps: float
    keyframes: int = 0
    offloaded: int = 0
    miou_vs_raw: float | None = None  # the loop's masks against the model on every raw frame


def dis_alone(frames: list[np.ndarray]) -> DeviceTiming:
    """DIS ULTRAFAST between consecutive full-resolution grey frames, nothing else."""
    flow = Flow("ultrafast")
    greys = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    started = time.perf_counter()
    for prev, cur in zip(greys, greys[1:]):
        flow(cur, prev)
    return DeviceTiming("DIS ultrafast alone, full resolution", (len(greys) - 1) / (time.perf_counter() - started))


def delay_frames(latency: float, fps: float) -> int:
    """An edge latency (seconds) in whole frames of a source at ``fps``."""
    return math.ceil(latency * fps - 1e-9)


class DelayedAnswers:
    """Stands in for the runtime's answer queue: an answer put while the runtime is at frame i comes out at frame
    i + ``delay``. With ``sync`` the runtime puts each answer at once, so the delay is exact and the same in every
    run."""

    def __init__(self, runtime: Runtime, delay: int):
        self.runtime, self.delay, self.waiting = runtime, delay, deque()

    def put(self, item) -> None:
        self.waiting.append((self.runtime.index, item))

    def get_nowait(self):
        if self.waiting and self.runtime.index - self.waiting[0][0] >= self.delay:
            return self.waiting.popleft()[1]
        raise queue.Empty


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class _Recording(Edge):
    """Passes keyframes to ``edge`` and keeps each answer under its keyframe's bytes."""

    def __init__(self, edge: Edge):
        self.edge, self.answers = edge, {}

    def segment(self, data: bytes, kind: str, size: tuple[int, int], bound: float | None = None,
                stream: Stream | None = None, levels: bool = True) -> EdgeAnswer:
        answer = self.edge.segment(data, kind, size, bound, stream, levels)
        self.answers[_digest(data)] = answer
        return answer

    def end(self, stream: Stream) -> None:
        self.edge.end(stream)

    def table_sets(self) -> list[str]:
        return self.edge.table_sets()


class RecordedEdge(Edge):
    """Answers each keyframe with what the real edge answered to the same bytes (``record``), at no cost: to
    this process, an edge on another machine. Bytes never recorded are an EdgeError, counted in ``misses``."""

    def __init__(self, answers: dict[bytes, EdgeAnswer], table_sets: list[str]):
        self.answers, self.held = answers, table_sets
        self.misses = 0

    @classmethod
    def record(cls, frames: list[np.ndarray], edge: Edge, tables: TableSet, config: RuntimeConfig,
               delay: int) -> "RecordedEdge":
        """Run the loop on ``frames`` as ``device_loop`` will, against ``edge``, keeping every answer."""
        recording = _Recording(edge)
        _loop(frames, recording, tables, config, delay)
        return cls(recording.answers, edge.table_sets())

    def segment(self, data: bytes, kind: str, size: tuple[int, int], bound: float | None = None,
                stream: Stream | None = None, levels: bool = True) -> EdgeAnswer:
        answer = self.answers.get(_digest(data))
        if answer is None:
            self.misses += 1
            raise EdgeError("keyframe not recorded")
        return answer

    def table_sets(self) -> list[str]:
        return self.held


def _loop(frames: list[np.ndarray], edge: Edge, tables: TableSet, config: RuntimeConfig,
          delay: int) -> tuple[Runtime, list[np.ndarray], float]:
    """The runtime, its masks and the seconds it spent on ``frames``, answers ``delay`` frames after sending."""
    runtime = Runtime(edge, tables, frames[0].shape[:2], replace(config, sync=True))
    runtime.answers = DelayedAnswers(runtime, delay)
    started = time.perf_counter()
    masks = [runtime.process(frame).mask for frame in frames]
    seconds = time.perf_counter() - started
    runtime.close()
    return runtime, masks, seconds


def device_loop(frames: list[np.ndarray], edge: Edge, tables: TableSet, config: RuntimeConfig, delay: int,
                reference: list[np.ndarray] | None = None) -> DeviceTiming:
    """The loop over ``frames`` as fast as it runs, each answer ``delay`` frames after its keyframe; ``reference``
    (the model's mask of each raw frame) adds the masks' mIoU against it, scored outside the clock."""
    runtime, masks, seconds = _loop(frames, edge, tables, config, delay)
    what = f"{config.codec} {runtime.config.selection}"
    score = None if reference is None else \
        miou(sum(confusion_matrix(m, r, 256) for m, r in zip(masks, reference)))
    return DeviceTiming(f"loop, {what}, flow at {runtime.proc_size[1]}x{runtime.proc_size[0]}",
                        len(frames) / seconds, runtime.stats.keyframes, runtime.stats.offloaded, score)


def keyframe_costs(frames: list[np.ndarray], edge: Edge, tables: TableSet,
                   inter: Sequence[str] = ()) -> dict[str, float]:
    """Median milliseconds per keyframe on the device: its STAC encode, choosing a `--selection boundary` map
    (around the edge's mask of the first frame), and for ``inter`` codecs the boundary offsets (around the same mask)
    and each codec's P-frame with them (the frames coded as one stream after its IDR, as keyframes are)."""
    codec = StacCodec(tables)
    mask = edge.segment(codec.encode(frames[0]), "stac", frames[0].shape[:2]).mask
    level = tables.middle_level
    costs: dict[str, list[float]] = {"STAC encode": [], "boundary map": []}
    streams = {spec: make_codec(spec, tables) for spec in inter}
    for stream in streams.values():
        stream.encode(frames[0])  # the IDR, not timed
    for frame in frames[1:]:
        started = time.perf_counter()
        levels = boundary_levels(frame, mask, tables, level)
        costs["boundary map"].append(time.perf_counter() - started)
        started = time.perf_counter()
        codec.encode_levels(frame, levels)
        costs["STAC encode"].append(time.perf_counter() - started)
        if streams:
            started = time.perf_counter()
            offsets = boundary_offsets(mask)
            costs.setdefault("boundary offsets", []).append(time.perf_counter() - started)
        for spec, stream in streams.items():
            started = time.perf_counter()
            stream.encode_offsets(frame, offsets)
            costs.setdefault(f"{spec} P-frame", []).append(time.perf_counter() - started)
    return {name: float(np.median(v)) * 1e3 for name, v in costs.items()}


def format_timings(timings: list[DeviceTiming], baseline: DeviceTiming) -> str:
    lines = [f"{'':44} {'fps':>7} {'vs DIS':>7} {'keyframes':>9} {'offloaded':>9} {'mIoU vs raw':>11}"]
    for t in [baseline, *timings]:
        score = "" if t.miou_vs_raw is None else f"{t.miou_vs_raw:.4f}"
        lines.append(f"{t.label:44} {t.fps:7.1f} {t.fps / baseline.fps:6.2f}x {t.keyframes:9d} {t.offloaded:9d} "
                     f"{score:>11}")
    return "\n".join(lines)
