"""When a server dies: devices replaying a route's recorded requests (``bench.capacity``) through a deployment of
several servers behind the proxy (``stac.edge.proxy``), and one server killed (SIGKILL) part way. For every device,
the time from the kill to the first answer to a request it made after the kill: the devices of the killed server
lose the answers in flight, back off as after any edge error, and come back on another server (an H.264 stream
restarting from an IDR); the others should not notice.
"""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stac.edge.proxy import Deployment, Limits
from stac.tables import TableSet

from .capacity import Trial, record, replay


@dataclass
class Failover:
    route: str
    devices: int
    servers: int
    back_s: list[float]  # per device: kill to its first answer to a request due after it (inf: none came)
    hit: int  # devices with an error after the kill (the killed server's, give or take the proxy's retry)
    failed: int  # requests of the measured window that came back as errors
    answered: int
    p95_ms: float | None  # of the answered, due to answer

    def row(self) -> dict:
        back = [b if np.isfinite(b) else None for b in self.back_s]  # None: never answered again
        return {"route": self.route, "devices": self.devices, "servers": self.servers, "hit": self.hit,
                "back_s_max": None if None in back else max(back), "back_s": back, "failed": self.failed,
                "answered": self.answered,
                "p95_ms": self.p95_ms}


def outcome(trial: Trial, killed_at: float, servers: int) -> Failover:
    """What ``trial`` saw of a kill at ``killed_at`` (time.perf_counter())."""
    back, hit = [], 0
    for k in range(trial.devices):
        mine = [(due, at, ok) for device, due, at, ok in trial.outcomes if device == k]
        answered = [at for due, at, ok in mine if ok and due >= killed_at]
        back.append(min(answered) - killed_at if answered else float("inf"))
        hit += any(not ok and at >= killed_at for due, at, ok in mine)
    return Failover(trial.route, trial.devices, servers, back, hit, trial.failed, len(trial.delays_ms), trial.p95_ms())


def failover(repo: str | Path, tables: TableSet, route: str, clip: str, devices: int, servers: int = 2,
             kill_after: float = 5.0, seconds: float = 15.0, max_frames: int | None = 150,
             limits: Limits = Limits()) -> Failover:
    """Start ``servers`` servers on ``repo`` behind the proxy, record ``route`` on ``clip`` through it, replay it from
    ``devices`` devices for ``seconds``, and kill the first server ``kill_after`` seconds in."""
    with Deployment(repo, servers, limits=limits) as deployment:
        url = f"grpc://{deployment.grpc_url}"
        recording = record(url, tables, clip, route, max_frames)
        killed = []

        def kill() -> None:
            killed.append(time.perf_counter())
            deployment.servers[0].process.send_signal(signal.SIGKILL)

        trial = replay(url, recording, devices, seconds, during=(kill_after, kill))
    return outcome(trial, killed[0], servers)


def format_failover(result: Failover) -> str:
    back = np.array(result.back_s)
    return (f"{result.route}: {result.devices} devices on {result.servers} servers, one killed: every device answered "
            f"again within {back.max():.2f} s of the kill (median {np.median(back):.2f} s); devices that saw an "
            f"error: {result.hit}; requests failed: {result.failed}, answered: {result.answered} (p95 "
            f"{'-' if result.p95_ms is None else f'{result.p95_ms:.0f}'} ms)")
