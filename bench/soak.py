"""A long mixed run against a live edge, watching its memory: does the server's RSS level off, or keep growing?

Every fourth request is a valid keyframe: STAC, JPEG and H.264 in turn, at sizes from 176x144 to 2048x1024 (the
small ones most often, the largest one valid keyframe in 64). H.264 keyframes come as device streams of STREAM_UNITS
units at one size: an IDR that starts the stream, P-frames, then the stream's end; every fourth stream is abandoned
instead (a device that went away), left to the edge's idle timeout and its cap on held streams. The other requests are
mutants of small STAC and JPEG keyframes (bench.fuzz). The server's RSS, with its python stubs', is read at every
tenth of the run: a leak keeps growing to the end, a warm-up (buffers reaching the largest frames) levels off.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from stac.codec import make_codec
from stac.edge.client import TritonEdge
from stac.edge.streams import Stream
from stac.tables import TableSet
from stac.video import resize

from .fuzz import MUTATIONS, live, mutate, sample, send

SIZES = ((144, 176), (288, 352), (528, 720), (720, 1280), (1024, 2048))  # (H, W)
ROUTES = ("stac", "jpeg", "h264")
SPECS = {"stac": "stac", "jpeg": "jpeg:q=80", "h264": "h264:crf=30,preset=veryfast"}
STREAM_UNITS = 6
SAMPLES = 10  # RSS readings after the first: one per tenth of the run


def size_index(n: int) -> int:
    """The size of a route's ``n``-th valid keyframe: the largest every 64th, the others in the ruler sequence 0 1 0 2
    0 1 0 3 ... (capped below the largest): the smaller, the more often."""
    if n % 64 == 63:
        return len(SIZES) - 1
    return min(((n + 1) & -(n + 1)).bit_length() - 1, len(SIZES) - 2)


@dataclass
class Keyframes:
    """What the soak sends, coded once: per route and size the valid keyframe (H.264: one stream's units)."""
    frames: dict[tuple[str, int], list[bytes]]

    @classmethod
    def code(cls, frames: list[np.ndarray], tables: TableSet) -> "Keyframes":
        """``frames`` (at least STREAM_UNITS, any size) at every size of SIZES, coded on every route."""
        coded = {}
        for k, (h, w) in enumerate(SIZES):
            sized = [resize(f, (h, w)) for f in frames[:STREAM_UNITS]]
            for route in ROUTES:
                codec = make_codec(SPECS[route], tables)
                coded[(route, k)] = [codec.encode(f) for f in (sized if route == "h264" else sized[:1])]
        return cls(coded)


@dataclass
class SoakReport:
    requests: int
    rss: list[tuple[int, int]] = field(default_factory=list)  # (requests done, bytes), at every tenth of the run
    outcomes: Counter = field(default_factory=Counter)  # (what, outcome) -> count; what: "stac 720x528", "mutant"...
    examples: dict = field(default_factory=dict)  # outcome -> one error message
    seconds: float = 0.0

    def growth(self, after: float = 0.2) -> float | None:
        """RSS growth from the first reading at ``after`` of the run to the last, relative to that reading."""
        later = [rss for done, rss in self.rss if done >= after * self.requests]
        return (later[-1] - later[0]) / later[0] if len(later) >= 2 else None

    def failed(self) -> int:
        """Valid keyframes that got no answer, and requests after which the server was gone."""
        return sum(n for (what, outcome), n in self.outcomes.items()
                   if outcome == "crash" or (what != "mutant" and outcome != "success"))

    def to_json(self) -> dict:
        return {"requests": self.requests, "seconds": round(self.seconds, 1),
                "done": [done for done, _ in self.rss], "rss_mb": [round(rss / 2 ** 20, 1) for _, rss in self.rss],
                "growth_last_80pct": self.growth(),
                "outcomes": {f"{what}: {outcome}": n for (what, outcome), n in sorted(self.outcomes.items())}}


class _Streams:
    """The soak's H.264 device streams, one at a time: STREAM_UNITS units, then ended or (every fourth) abandoned."""

    def __init__(self, edge: TritonEdge, keyframes: Keyframes):
        self.edge, self.keyframes = edge, keyframes
        self.count, self.sent = 0, STREAM_UNITS  # no stream open yet

    def next(self) -> tuple[bytes, tuple[int, int], Stream]:
        if self.sent == STREAM_UNITS:
            self.count, self.sent = self.count + 1, 0
        k = size_index(self.count - 1)
        stream = Stream(id=self.count, position=self.sent, start=self.sent == 0)
        self.sent += 1
        return self.keyframes.frames[("h264", k)][stream.position], SIZES[k], stream

    def close(self) -> None:
        """After a stream's last unit: end it, unless it is one to abandon."""
        if self.sent == STREAM_UNITS and self.count % 4:
            self.edge.end(Stream(self.count, STREAM_UNITS, False))


def soak(url: str, keyframes: Keyframes, requests: int, seed: int = 0, timeout: float = 60.0,
         pid: int | None = None, tick: Callable[[], None] = lambda: None) -> SoakReport:
    """``requests`` requests to the edge at ``url`` (one client, one at a time), ``pid``'s RSS read at every tenth."""
    rng = np.random.default_rng(seed)
    edge = TritonEdge(url, timeout)
    streams = _Streams(edge, keyframes)
    report = SoakReport(requests)
    samples = {requests * q // SAMPLES for q in range(SAMPLES + 1)}
    valid = Counter()  # route -> valid keyframes sent
    started = time.perf_counter()
    for i in range(requests):
        if i in samples:
            sample(report, i, pid)
        if i % 4 == 0:
            route = ROUTES[(i // 4) % len(ROUTES)]
            if route == "h264":
                data, size, stream = streams.next()
            else:
                k = size_index(valid[route])
                (data,), size, stream = keyframes.frames[(route, k)], SIZES[k], None
            valid[route] += 1
            what = f"{route} {size[1]}x{size[0]}"
            outcome = send(edge, report.examples, data, route, size, stream=stream)
            if route == "h264":
                streams.close()
        else:  # mutants of the smallest STAC and JPEG keyframes, as bench.fuzz makes them
            route = ROUTES[i % 2]
            how = MUTATIONS[(i // 4) % len(MUTATIONS)]
            what = "mutant"
            outcome = send(edge, report.examples, mutate(keyframes.frames[(route, 0)][0], route, how, rng), route,
                           SIZES[0])
        if outcome != "hang" and not live(edge):
            outcome = "crash"
        report.outcomes[(what, outcome)] += 1
        tick()
    report.seconds = time.perf_counter() - started
    sample(report, requests, pid)
    edge.close()
    return report


def format_soak(report: SoakReport) -> str:
    lines = [f"{'keyframes':16} {'success':>8} {'error':>6} {'hang':>5} {'crash':>6}"]
    for what in sorted({w for w, _ in report.outcomes}, key=lambda w: (w == "mutant", w)):
        counts = [report.outcomes[(what, o)] for o in ("success", "error", "hang", "crash")]
        lines.append(f"{what:16} {counts[0]:8d} {counts[1]:6d} {counts[2]:5d} {counts[3]:6d}")
    lines.append(f"{report.requests} requests in {report.seconds:.0f} s")
    if report.rss:
        lines.append("server RSS, MB after " + ", ".join(f"{done}: {rss / 2 ** 20:.0f}" for done, rss in report.rss))
    if (growth := report.growth()) is not None:
        lines.append(f"growth over the last 80% of the run: {growth:+.1%}")
    for outcome, message in sorted(report.examples.items()):
        lines.append(f"e.g. {outcome}: {message[:160]}")
    return "\n".join(lines)
