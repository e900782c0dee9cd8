"""Keyframe round trips through an edge: at several concurrencies against the same work in-process (`hammer`), and
under load from many devices with keyframes of mixed sizes (`load`)."""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

import numpy as np

from stac.edge.client import Edge


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

    wall = _run_devices(edges, lambda k, edge: device(edge))
    return EdgeTiming(label, devices, statistics.median(latencies), float(np.percentile(latencies, 95)),
                      len(latencies) / wall)


def _run_devices(edges: list[Edge], device) -> float:
    """Run ``device(k, edge)`` for every edge in its own thread; the wall seconds until all are done (the edges
    are closed after)."""
    threads = [threading.Thread(target=device, args=(k, e)) for k, e in enumerate(edges)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    for e in edges:
        e.close()
    return wall


def format_timings(remote: list[EdgeTiming], local: list[EdgeTiming]) -> str:
    lines = [f"{'devices':>7} {'edge':>28} {'median ms':>10} {'p95 ms':>8} {'keyframes/s':>12} {'vs in-process':>14}"]
    for r, l in zip(remote, local):
        for t in (r, l):
            ratio = f"{t.median_ms / l.median_ms:13.2f}x" if t is r else ""
            lines.append(f"{t.devices:7d} {t.label:>28} {t.median_ms:10.1f} {t.p95_ms:8.1f} {t.per_second:12.1f} "
                         f"{ratio}")
    return "\n".join(lines)


def _statistics(url: str) -> list[dict]:
    """Triton's statistics of every model, since the server started."""
    from stac.edge.client import TritonEdge

    edge = TritonEdge(url)
    try:
        stats = edge.client.get_inference_statistics(**({"as_json": True} if edge.scheme == "grpc" else {}))
    finally:
        edge.close()
    return stats.get("model_stats", [])


def model_times(url: str) -> dict[str, float]:
    """The server's own milliseconds per request in each model that served any (Triton's statistics: input, compute
    and output, averaged since the server started): where an answer's time goes, decoding, the graphs, coding it."""
    times = {}
    for model in _statistics(url):
        phases = [model.get("inference_stats", {}).get(k, {}) for k in ("compute_input", "compute_infer",
                                                                       "compute_output")]
        count = int(phases[1].get("count", 0))
        if count:
            times[model["name"]] = sum(int(p.get("ns", 0)) for p in phases) / count / 1e6
    return times


def runs(url: str, *models: str) -> tuple[int, int]:
    """(requests, executions) of ``models`` together since the server started: more requests than executions when
    Triton's dynamic batcher ran several at once."""
    found = {stats["name"]: stats for stats in _statistics(url)}
    if missing := [model for model in models if model not in found]:
        raise ValueError(f"the edge has no model {missing[0]!r}")
    return (sum(int(found[model].get("inference_count", 0)) for model in models),
            sum(int(found[model].get("execution_count", 0)) for model in models))


@dataclass
class LoadResult:
    devices: int
    requests: int
    errors: int
    per_second: float
    percentiles_ms: dict[str, dict[int, float]]  # keyframe size label -> {50, 95, 99} -> ms
    rss_mb: float | None = None  # the server's memory (it and its stubs) once every answer was in


def load(make_edge, keyframes: dict[str, tuple[bytes, tuple[int, int]]], devices: int, requests: int
         ) -> LoadResult:
    """``devices`` threads, each its own client, each sending ``requests`` STAC keyframes cycling over
    ``keyframes`` (label -> (bytes, frame size)), so small and large keyframes meet in the edge's queues."""
    latencies: dict[str, list[float]] = {label: [] for label in keyframes}
    errors = [0]
    lock = threading.Lock()
    edges: list[Edge] = [make_edge() for _ in range(devices)]
    labels = list(keyframes)

    def device(k: int, edge: Edge) -> None:
        for i in range(requests):
            label = labels[(i + k) % len(labels)]
            data, size = keyframes[label]
            started = time.perf_counter()
            try:
                edge.segment(data, "stac", size)
            except Exception:  # counted: under load an edge may time out or refuse
                with lock:
                    errors[0] += 1
                continue
            with lock:
                latencies[label].append((time.perf_counter() - started) * 1e3)

    wall = _run_devices(edges, device)
    done = sum(len(v) for v in latencies.values())
    return LoadResult(devices, devices * requests, errors[0], done / wall,
                      {label: {q: float(np.percentile(v, q)) for q in (50, 95, 99)} if v else {}
                       for label, v in latencies.items()})


def format_load(results: list[LoadResult]) -> str:
    labels = list(results[0].percentiles_ms)
    head = " ".join(f"{label + ' p50/p95/p99 ms':>30}" for label in labels)
    lines = [f"{'devices':>7} {'requests':>8} {'errors':>6} {'keyframes/s':>11} {head} {'server MB':>9}"]
    for r in results:
        cells = " ".join(f"{'/'.join(f'{r.percentiles_ms[label][q]:.0f}' for q in (50, 95, 99)):>30}"
                         if r.percentiles_ms[label] else f"{'-':>30}" for label in labels)
        rss = "-" if r.rss_mb is None else f"{r.rss_mb:.0f}"
        lines.append(f"{r.devices:7d} {r.requests:8d} {r.errors:6d} {r.per_second:11.1f} {cells} {rss:>9}")
    return "\n".join(lines)
