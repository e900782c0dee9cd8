"""How many devices one edge holds: each route's real requests, recorded from a run of the device at that route's
default operating point, replayed by N simulated devices against a live edge, and the most devices whose p95 answer
delay stays within a deadline.

A recording is the requests one device made on a clip (``record``: the device runtime, answers taken at once, against
the edge itself), each with its time in the clip. A simulated device replays it open-loop, as a camera captures and
as the runtime offloads: each request is sent when due, without waiting for earlier answers, unless the device has
RuntimeConfig.max_in_flight requests unanswered or is backing off after an error (RuntimeConfig.retry_after), in
which case it is skipped, as the runtime skips that frame's offload. Its delay runs from due to answer: what a device
waits from capture. After a skipped or failed H.264 unit the device restarts its stream with that frame coded as an
IDR at record time, and its later P-frames decode against it: the edge's work is a real device's, the masks (not
measured here) drift. The devices' clips start spread evenly over one clip's length and loop; the first clip's
length is warm-up, not measured.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from device_runtime.run import run
from device_runtime.runtime import RuntimeConfig
from device_runtime.sources import Source
from stac.codec import make_codec
from stac.contract import SEGMENT_MODEL, STAC_HEAD
from stac.edge.client import Edge, EdgeError, TritonEdge
from stac.edge.streams import Stream, new_stream_id
from stac.tables import TableSet

from .edge_bench import runs
from .fuzz import server_cpu

# each route at its default operating point: the inter-codec route, STAC-coded (JPEG) keyframes, and H.264 as the
# paper runs it, every frame offloaded
ROUTES = {"default": {}, "stac-jpeg": {"codec": "stac"}, "h264-every-frame": {"codec": "h264", "every": 1}}
DEVICE = RuntimeConfig()  # what a simulated device does as a real one: max_in_flight, retry_after


@dataclass(frozen=True)
class Request:
    at: float  # seconds into the clip
    data: bytes
    kind: str
    size: tuple[int, int]
    kwargs: dict  # bound, levels, answer; stream (H.264) as recorded
    idr: bytes | None = None  # H.264: the frame coded alone, to restart a stream with


@dataclass
class Recording:
    route: str
    seconds: float  # the clip's length
    requests: list[Request]

    @property
    def kbps(self) -> float:
        return sum(len(r.data) for r in self.requests) * 8 / 1e3 / self.seconds


class _Recorder(Edge):
    """An edge that keeps every request a device makes, with the frame it was made at, and passes it on."""

    def __init__(self, edge: Edge):
        self.edge, self.frame, self.requests = edge, 0, []

    def segment(self, data, kind, size, bound=None, stream=None, levels=True, answer=None):
        self.requests.append((self.frame, Request(0.0, data, kind, tuple(size),
                                                  {"bound": bound, "stream": stream, "levels": levels,
                                                   "answer": answer})))
        return self.edge.segment(data, kind, size, bound, stream, levels, answer)

    def end(self, stream):
        self.edge.end(stream)

    def table_sets(self):
        return self.edge.table_sets()


def record(url: str, tables: TableSet, clip: str, route: str, max_frames: int | None = None) -> Recording:
    """The requests a device running ``route`` (ROUTES) at its defaults makes on ``clip``, answers taken at once."""
    source = Source(clip, max_frames)
    recorder = _Recorder(TritonEdge(url, 60.0))
    config = RuntimeConfig(sync=True, fps=source.fps, **ROUTES[route])

    def next_frame(result, live) -> None:
        recorder.frame += 1

    try:
        report = run(source, recorder, tables, config, on_frame=next_frame)
    finally:
        recorder.edge.close()
    if report["edge_errors"]:
        raise EdgeError(f"recording {route} on {clip}: {report['edge_errors']} edge errors")
    frames = list(source.frames())
    requests = [Request(frame / source.fps, r.data, r.kind, r.size, r.kwargs,
                        make_codec(config.codec, tables).encode(frames[frame]) if r.kind == "h264" else None)
                for frame, r in recorder.requests]
    return Recording(route, report["frames"] / source.fps, requests)


@dataclass
class Trial:
    route: str
    devices: int
    seconds: float
    delays_ms: list[float] = field(default_factory=list)  # answered requests, due to answer
    failed: int = 0  # answered with an error, or not at all within the timeout (refusals included)
    refusals_ms: list[float] = field(default_factory=list)  # of those, the ones a proxy refused: due to refusal
    skipped: int = 0  # not sent: the device had max_in_flight unanswered, or was backing off
    cpu_s: float | None = None  # the server's CPU time (it and its stubs) over the measured seconds
    # the graphs' requests and runs (the head's and the segment graph's) over the measured seconds: several requests
    # a run when batched
    graph_runs: tuple[int, int] = (0, 0)
    # every request due in the measured window that came back: (device, due, back, answered), time.perf_counter()
    outcomes: list[tuple[int, float, float, bool]] = field(default_factory=list)

    def p95_ms(self) -> float | None:
        return float(np.percentile(self.delays_ms, 95)) if self.delays_ms else None

    def holds(self, deadline_ms: float) -> bool:
        p95 = self.p95_ms()
        return p95 is not None and p95 <= deadline_ms and not (self.failed or self.skipped)

    def row(self, deadline_ms: float) -> dict:
        return {"route": self.route, "devices": self.devices, "p95_ms": self.p95_ms(), "deadline_ms": deadline_ms,
                "answered": len(self.delays_ms), "failed": self.failed, "skipped": self.skipped,
                "refused": len(self.refusals_ms),
                "refusal_p95_ms": float(np.percentile(self.refusals_ms, 95)) if self.refusals_ms else None,
                "edge_cpu_per_device": self.cpu_s / self.seconds / self.devices if self.cpu_s is not None else None,
                "batch": self.graph_runs[0] / self.graph_runs[1] if self.graph_runs[1] else None}


class _Device:
    """One simulated device: what it sends of the recording, and what becomes of it (counted in ``trial`` for
    requests due in the measured window)."""

    def __init__(self, k: int, url: str, trial: Trial, lock: threading.Lock, timeout: float):
        self.k, self.edge, self.trial, self.lock = k, TritonEdge(url, timeout, device=f"device-{k}"), trial, lock
        self.in_flight, self.backoff_until = 0, 0.0
        # the H.264 stream: one sequence ID for the device's life, as the runtime keeps (a new ID per restart would
        # leave each old one holding a sequence slot of the edge's until it idles out)
        self.stream_id = new_stream_id()
        self.stream: Stream | None = None  # its unit in progress; None: the next unit restarts it with an IDR
        self.idle = threading.Condition(lock)

    def offer(self, request: Request, due: float, measured: bool) -> None:
        with self.lock:
            if time.perf_counter() < self.backoff_until or self.in_flight >= DEVICE.max_in_flight:
                self.trial.skipped += measured
                self.stream = None
                return
            self.in_flight += 1
            data, kwargs = request.data, dict(request.kwargs)
            if request.kind == "h264":
                if self.stream is None or request.kwargs["stream"].start:
                    self.stream = Stream(self.stream_id, 0, True)
                    data = request.idr if not request.kwargs["stream"].start else data
                else:
                    self.stream = Stream(self.stream.id, self.stream.position + 1, False)
                kwargs["stream"] = self.stream
        self.edge.segment_async(lambda answer: self._done(answer, due, measured), data, request.kind,
                                request.size, **kwargs)

    def _done(self, answer, due: float, measured: bool) -> None:
        now = time.perf_counter()
        with self.lock:
            self.in_flight -= 1
            self.idle.notify_all()
            if measured:
                self.trial.outcomes.append((self.k, due, now, not isinstance(answer, Exception)))
            if isinstance(answer, Exception):
                self.stream = None
                self.backoff_until = now + DEVICE.retry_after
                self.trial.failed += measured
                if measured and isinstance(answer, EdgeError) and answer.refused:
                    self.trial.refusals_ms.append((now - due) * 1e3)
            elif measured:
                self.trial.delays_ms.append((now - due) * 1e3)

    def close(self, timeout: float) -> None:
        """Once every request sent is answered (or ``timeout`` passed)."""
        with self.lock:
            self.idle.wait_for(lambda: self.in_flight == 0, timeout)
        self.edge.close()


def replay(url: str, recording: Recording, devices: int, seconds: float, pid: int | None = None,
           timeout: float = 10.0, during: tuple[float, Callable[[], None]] | None = None) -> Trial:
    """``devices`` simulated devices replaying ``recording`` against the edge at ``url``: device k starts its clip
    k/devices of a clip's length late, so all run after one clip's length; the ``seconds`` after that are measured.
    ``during`` (s, action): ``action()`` runs ``s`` seconds into the measured window."""
    trial = Trial(recording.route, devices, seconds)
    lock = threading.Lock()
    clip = recording.seconds
    start = time.perf_counter() + 0.5
    measured = (start + clip, start + clip + seconds)

    def device(k: int) -> None:
        simulated = _Device(k, url, trial, lock, timeout)
        loop = 0
        try:
            while True:
                first = start + clip * k / devices + loop * clip  # this loop's clip starts here
                for request in recording.requests:
                    due = first + request.at
                    if due > measured[1]:
                        return
                    time.sleep(max(0.0, due - time.perf_counter()))
                    simulated.offer(request, due, due >= measured[0])
                loop += 1
        finally:
            simulated.close(timeout)

    threads = [threading.Thread(target=device, args=(k,)) for k in range(devices)]
    if during is not None:
        threads.append(threading.Timer(max(0.0, measured[0] + during[0] - time.perf_counter()), during[1]))
    for t in threads:
        t.start()
    time.sleep(max(0.0, measured[0] - time.perf_counter()))
    cpu, graph = server_cpu(pid), runs(url, STAC_HEAD, SEGMENT_MODEL)
    time.sleep(max(0.0, measured[1] - time.perf_counter()))
    after, graph_after = server_cpu(pid), runs(url, STAC_HEAD, SEGMENT_MODEL)
    for t in threads:
        t.join()
    trial.cpu_s = after - cpu if after is not None and cpu is not None else None
    trial.graph_runs = (graph_after[0] - graph[0], graph_after[1] - graph[1])
    return trial


def capacity(url: str, recording: Recording, deadline_ms: float, seconds: float, pid: int | None = None,
             most: int = 64, tick: Callable[[Trial], None] = lambda trial: None) -> tuple[int, list[Trial]]:
    """The most devices (up to ``most``) replaying ``recording`` whose p95 delay is within ``deadline_ms`` with
    nothing failed or skipped: doubling until one count fails, then bisecting; every trial made, in order."""
    trials = []

    def holds(n: int) -> bool:
        trial = replay(url, recording, n, seconds, pid)
        trials.append(trial)
        tick(trial)
        return trial.holds(deadline_ms)

    good, bad, n = 0, most + 1, 1
    while bad - good > 1:
        if holds(n):
            good = n
        else:
            bad = n
        n = min(2 * n, most) if bad > most else (good + bad) // 2
    return good, trials
