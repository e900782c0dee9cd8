"""Frames per second of the device loop, against DIS ULTRAFAST alone on the same frames in the same run.

The loop is timed against an edge that costs this process no CPU: a first run, untimed, sends the loop's
keyframes to the real edge and records its answers (``record``); the timed run gets each answer back from that
recording (``RecordedEdge``). Both runs run over a link (stac.link) that delivers every answer a fixed time after
its keyframe's capture (the edge's latency, no coding time counted), so they choose the same keyframes and code them
to the same bytes, also where that depends on answers (the level maps, the inter codec's stream): every keyframe the
loop sends is encoded and answered, the link's bookkeeping is done as in any run over a link, and the time is the
device's alone.
"""
from __future__ import annotations

import hashlib
import time
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

INSTANT = "ideal"  # a network that adds nothing: every answer comes the edge's latency after its capture


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


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class _Recording(Edge):
    """Passes keyframes to ``edge`` and keeps each answer under its keyframe's bytes."""

    def __init__(self, edge: Edge):
        self.edge, self.answers = edge, {}

    def segment(self, data: bytes, kind: str, size: tuple[int, int], bound: float | None = None,
                stream: Stream | None = None, levels: bool = True,
                answer: tuple[int, int] | None = None) -> EdgeAnswer:
        result = self.edge.segment(data, kind, size, bound, stream, levels, answer)
        self.answers[_digest(data)] = result
        return result

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
               latency_ms: float) -> "RecordedEdge":
        """Run the loop on ``frames`` as ``device_loop`` will, against ``edge``, keeping every answer."""
        recording = _Recording(edge)
        _loop(frames, recording, tables, config, latency_ms)
        return cls(recording.answers, edge.table_sets())

    def segment(self, data: bytes, kind: str, size: tuple[int, int], bound: float | None = None,
                stream: Stream | None = None, levels: bool = True,
                answer: tuple[int, int] | None = None) -> EdgeAnswer:
        answer = self.answers.get(_digest(data))
        if answer is None:
            self.misses += 1
            raise EdgeError("keyframe not recorded")
        return answer

    def table_sets(self) -> list[str]:
        return self.held


def _loop(frames: list[np.ndarray], edge: Edge, tables: TableSet, config: RuntimeConfig,
          latency_ms: float) -> tuple[Runtime, list[np.ndarray], float]:
    """The runtime, its masks and the seconds it spent on ``frames``, each answer ``latency_ms`` after its capture."""
    runtime = Runtime(edge, tables, frames[0].shape[:2],
                      replace(config, sync=False, link=INSTANT, device_ms=0.0, edge_ms=latency_ms))
    started = time.perf_counter()
    masks = [runtime.process(frame).mask for frame in frames]
    seconds = time.perf_counter() - started
    runtime.close()
    return runtime, masks, seconds


def device_loop(frames: list[np.ndarray], edge: Edge, tables: TableSet, config: RuntimeConfig, latency_ms: float,
                reference: list[np.ndarray] | None = None) -> DeviceTiming:
    """The loop over ``frames`` as fast as it runs, each answer ``latency_ms`` after its keyframe's capture;
    ``reference`` (the model's mask of each raw frame) adds the masks' mIoU against it, scored outside the clock."""
    runtime, masks, seconds = _loop(frames, edge, tables, config, latency_ms)
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
