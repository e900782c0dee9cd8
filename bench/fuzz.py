"""Hostile keyframes against a live edge: mutations of valid STAC and JPEG keyframes, each sent once, each outcome
counted, and the server's memory before and after.

Outcomes: ``error`` (an error response: what bad input must get), ``success`` (the mutant still decoded: bit flips
in entropy-coded data often do), ``hang`` (no answer within the timeout), ``crash`` (the server stopped answering
its health check after the request). After every ``error`` the same client sends the valid keyframe again: a
request that fails must not break the next one, and a failure there counts as a crash.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stac.edge.client import EdgeError, TritonEdge

MUTATIONS = ("bit flips", "truncation", "header edit", "bomb", "random bytes")


def mutate(data: bytes, kind: str, how: str, rng: np.random.Generator) -> bytes:
    """One mutant of a valid keyframe ``data`` (route ``kind``: "stac" or "jpeg")."""
    if how == "bit flips":
        out = bytearray(data)
        for position in rng.integers(0, len(out) * 8, rng.integers(1, 9)):
            out[position // 8] ^= 1 << (position % 8)
        return bytes(out)
    if how == "truncation":
        return data[:rng.integers(0, len(data))]
    if how == "header edit":  # the markers, sizes and tables all live in the first bytes
        out = bytearray(data)
        for position in rng.integers(0, min(len(out), 160), rng.integers(1, 5)):
            out[position] = rng.integers(0, 256)
        return bytes(out)
    if how == "bomb":  # a huge frame size over the same few KB
        side = int(rng.choice([4097, 30000, 65500]))
        return bomb(data, kind, side)
    return rng.bytes(int(rng.integers(0, 4096)))


def bomb(data: bytes, kind: str, side: int) -> bytes:
    """``data`` with its frame header claiming side x side pixels."""
    return claim(data, kind, side, side)


def claim(data: bytes, kind: str, height: int, width: int) -> bytes:
    """``data`` with its frame header claiming ``height`` x ``width`` (STAC: the APP11 header, docs/bitstream.md)."""
    out = bytearray(data)
    at = data.index(b"\xff\xc0") + 5 if kind == "jpeg" else 22
    out[at:at + 4] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(out)


@dataclass
class FuzzReport:
    outcomes: Counter = field(default_factory=Counter)  # (kind, mutation, outcome) -> count
    # (requests done, bytes) of the server and its python stubs, at 0, 25, 50, 75 and 100% of the requests: a leak
    # keeps growing through the second half, a warm-up (onnxruntime's arenas reaching the largest frames) does not
    rss: list[tuple[int, int]] = field(default_factory=list)
    seconds: float = 0.0
    examples: dict = field(default_factory=dict)  # outcome -> one error message

    def total(self, outcome: str) -> int:
        return sum(n for (_, _, o), n in self.outcomes.items() if o == outcome)


def fuzz(url: str, keyframes: dict[str, tuple[bytes, tuple[int, int]]], requests: int, seed: int = 0,
         timeout: float = 10.0, pid: int | None = None, tick: Callable[[], None] = lambda: None) -> FuzzReport:
    """``requests`` mutants, alternating over ``keyframes`` (route -> (valid keyframe, frame size)) and MUTATIONS."""
    rng = np.random.default_rng(seed)
    edge = TritonEdge(url, timeout)
    report = FuzzReport()
    samples = {requests * q // 4 for q in range(5)}
    started = time.perf_counter()
    kinds = sorted(keyframes)
    for i in range(requests):
        if i in samples:
            sample(report, i, pid)
        kind, how = kinds[i % len(kinds)], MUTATIONS[(i // len(kinds)) % len(MUTATIONS)]
        data, size = keyframes[kind]
        outcome = send(edge, report.examples, mutate(data, kind, how, rng), kind, size)
        if outcome == "error":
            try:
                edge.segment(data, kind, size)
            except EdgeError as e:
                outcome = "crash"
                report.examples.setdefault("crash", f"a valid keyframe after the error failed: {e}")
        if outcome != "hang" and not live(edge):
            outcome = "crash"
        report.outcomes[(kind, how, outcome)] += 1
        tick()
    report.seconds = time.perf_counter() - started
    sample(report, requests, pid)
    edge.close()
    return report


def sample(report, done: int, pid: int | None) -> None:
    """Append (``done``, RSS of ``pid``) to ``report.rss``, where the RSS can be read."""
    rss = server_rss(pid)
    if rss is not None:
        report.rss.append((done, rss))


def send(edge: TritonEdge, examples: dict, *args, **kwargs) -> str:
    """edge.segment(*args, **kwargs)'s outcome: success, error or hang (the first message of each kept in
    ``examples``)."""
    try:
        edge.segment(*args, **kwargs)
        return "success"
    except EdgeError as e:
        message = str(e)
        outcome = "hang" if "Deadline" in message or "timed out" in message.lower() else "error"
        examples.setdefault(outcome, message)
        return outcome


def live(edge: TritonEdge) -> bool:
    try:
        return bool(edge.client.is_server_live())
    except Exception:  # connection refused: the server is gone
        return False


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (tritonserver and its python stubs), from /proc (OSError if it is gone)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").iterdir():
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except FileNotFoundError:  # a thread that ended meanwhile (gRPC's come and go under load)
                pass
    return found


def server_rss(pid: int | None) -> int | None:
    """Resident memory (bytes) of process ``pid`` and all its descendants, from /proc; None without a pid or where
    /proc cannot tell."""
    if pid is None:
        return None
    total = 0
    try:
        for p in process_tree(pid):
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
    except (OSError, StopIteration, ValueError):
        return None if total == 0 else total
    return total


def server_cpu(pid: int | None) -> float | None:
    """User and system CPU seconds so far of process ``pid`` and all its descendants; None as server_rss."""
    if pid is None:
        return None
    try:
        ticks = sum(sum(int(v) for v in Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[11:13])
                    for p in process_tree(pid))
    except (OSError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def format_report(report: FuzzReport) -> str:
    lines = [f"{'route':6} {'mutation':13} {'error':>6} {'success':>8} {'hang':>5} {'crash':>6}"]
    for kind in sorted({k for k, _, _ in report.outcomes}):
        for how in MUTATIONS:
            counts = [report.outcomes[(kind, how, o)] for o in ("error", "success", "hang", "crash")]
            if any(counts):
                lines.append(f"{kind:6} {how:13} {counts[0]:6d} {counts[1]:8d} {counts[2]:5d} {counts[3]:6d}")
    done = sum(report.outcomes.values())
    lines.append(f"{done} requests in {report.seconds:.1f} s: {report.total('error')} errors, "
                 f"{report.total('success')} successes, {report.total('hang')} hangs, {report.total('crash')} crashes")
    if len(report.rss) >= 2:
        mb = [rss / 2**20 for _, rss in report.rss]
        middle = report.rss[-1][0] // 2
        half = next(m for (n, _), m in zip(report.rss, mb) if n >= middle)
        counts, sizes = ", ".join(str(n) for n, _ in report.rss), ", ".join(f"{m:.0f}" for m in mb)
        lines.append(f"server RSS, MB after {counts} requests: {sizes} ({mb[-1] - mb[0]:+.0f} MB; "
                     f"second half {mb[-1] - half:+.0f})")
    for outcome, message in sorted(report.examples.items()):
        lines.append(f"e.g. {outcome}: {message[:160]}")
    return "\n".join(lines)
