"""Keyframe round trips through an edge, at several concurrencies, against the same work in-process."""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

import numpy as np

from device_runtime.edge import Edge


@dataclass
class EdgeTiming:
    label: str
    devices: int
    median_ms: float
    p95_ms: float
    per_second: float


def hammer(make_edge, data: bytes, size: tuple[int, int], devices: int, requests: int, label: str) -> EdgeTiming:
    """``devices`` threads, each with its own edge client, each sending ``requests`` keyframes in turn."""
    latencies: list[float] = []
    lock = threading.Lock()
    edges: list[Edge] = [make_edge() for _ in range(devices)]
    edges[0].segment(data, "stac", size)  # warm-up

    def device(edge: Edge) -> None:
        for _ in range(requests):
            started = time.perf_counter()
            edge.segment(data, "stac", size)
            with lock:
                latencies.append((time.perf_counter() - started) * 1e3)

    threads = [threading.Thread(target=device, args=(e,)) for e in edges]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    for e in edges:
        e.close()
    return EdgeTiming(label, devices, statistics.median(latencies), float(np.percentile(latencies, 95)),
                      len(latencies) / wall)


def format_timings(remote: list[EdgeTiming], local: list[EdgeTiming]) -> str:
    lines = [f"{'devices':>7} {'edge':>28} {'median ms':>10} {'p95 ms':>8} {'keyframes/s':>12} {'vs in-process':>14}"]
    for r, l in zip(remote, local):
        for t in (r, l):
            ratio = f"{t.median_ms / l.median_ms:13.2f}x" if t is r else ""
            lines.append(f"{t.devices:7d} {t.label:>28} {t.median_ms:10.1f} {t.p95_ms:8.1f} {t.per_second:12.1f} {ratio}")
    return "\n".join(lines)
