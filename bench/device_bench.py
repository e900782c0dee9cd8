"""Frames per second of the device loop, against DIS ULTRAFAST alone on the same frames in the same run."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from device_runtime.edge import Edge
from device_runtime.runtime import Runtime, RuntimeConfig
from stac.allocate import boundary_levels, boundary_offsets
from stac.codec import StacCodec, make_codec
from stac.flow import Flow
from stac.tables import TableSet


@dataclass
class DeviceTiming:
    label: str
    fps: float
    keyframes: int = 0
    offloaded: int = 0


def dis_alone(frames: list[np.ndarray]) -> DeviceTiming:
    """DIS ULTRAFAST between consecutive full-resolution grey frames, nothing else."""
    flow = Flow("ultrafast")
    greys = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    started = time.perf_counter()
    for prev, cur in zip(greys, greys[1:]):
        flow(cur, prev)
    return DeviceTiming("DIS ultrafast alone, full resolution", (len(greys) - 1) / (time.perf_counter() - started))


def device_loop(frames: list[np.ndarray], edge: Edge, tables: TableSet, config: RuntimeConfig) -> DeviceTiming:
    runtime = Runtime(edge, tables, frames[0].shape[:2], config)
    started = time.perf_counter()
    for frame in frames:
        runtime.process(frame)
    fps = len(frames) / (time.perf_counter() - started)
    runtime.close()
    what = runtime.config.selection if config.codec == "stac" else config.codec
    return DeviceTiming(f"loop, {what}, flow at {runtime.proc_size[0]}x{runtime.proc_size[1]}", fps,
                        runtime.stats.keyframes, runtime.stats.offloaded)


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
    lines = [f"{'':44} {'fps':>7} {'vs DIS':>7} {'keyframes':>9} {'offloaded':>9}"]
    for t in [baseline, *timings]:
        lines.append(f"{t.label:44} {t.fps:7.1f} {t.fps / baseline.fps:6.2f}x {t.keyframes:9d} {t.offloaded:9d}")
    return "\n".join(lines)
