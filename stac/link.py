"""The network between a device and its edge, in virtual time: when each keyframe's answer reaches the device.

A keyframe captured at time t is ready to send once the device has coded it (``device_s`` later). Its request
waits for the uplink (first in, first out), crosses it at the uplink's rate (or in a trace's delivery
opportunities) and reaches the edge RTT/2 (plus jitter) after its last byte left; the edge serves one request of
the device at a time, each in ``edge_s``; the answer waits for the downlink, crosses it, and reaches the device
RTT/2 (plus jitter) later:

    available = capture + device + queue and upload + RTT/2 + edge queue and time + download + RTT/2

Nothing here reads a clock, so a run over a Link is as deterministic as the times it is given (the evaluation gives
fixed ones; ``stac-runtime --link`` measures its own encode and the real edge). Both directions deliver in order, as
TCP does: jitter delays a message, never lets it overtake the one before.

A link is spelled ``up=4M,down=20M,rtt=60ms`` (rates in bit/s with k, M or G, or ``inf``; times in ms, s or us),
with optional ``jitter=5ms`` (each crossing delayed by up to that much, uniformly, from a fixed seed) and
``trace=FILE`` (the uplink follows a Mahimahi trace: one line per 1500-byte delivery opportunity, its time in ms,
the trace repeating) or ``down-trace=FILE``; or one of the named LINKS.
"""
from __future__ import annotations

import bisect
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

MTU = 1500  # bytes one delivery opportunity of a Mahimahi trace carries
# Named links: the evaluation's three (the uplink and RTT of a constrained cellular link, of LTE, of Wi-Fi; the
# downlink a typical multiple of the uplink), and the ideal one every answer crosses at once.
LINKS = {"constrained": "up=1M,down=2M,rtt=150ms", "lte": "up=4M,down=20M,rtt=60ms",
         "wifi": "up=30M,down=30M,rtt=10ms", "ideal": "up=inf,down=inf,rtt=0ms"}
_RATE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*([kmg]?)(?:bit/s|bps|b/s)?$", re.IGNORECASE)
_TIME = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|us)$")
_SCALE = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
_SECONDS = {"ms": 1e-3, "s": 1.0, "us": 1e-6}


class LinkError(ValueError):
    """A link spec or trace that cannot be used; the message names the part."""


def parse_rate(text: str, key: str) -> float:
    """'4M', '500k', '2.5Mbps', 'inf' -> bits per second."""
    if text.strip().lower() == "inf":
        return math.inf
    match = _RATE.match(text.strip())
    value = float(match.group(1)) * _SCALE[match.group(2).lower()] if match else 0.0
    if not value > 0:
        raise LinkError(f"{key}={text}: a rate is a positive number of bit/s with k, M or G (e.g. {key}=4M), or inf")
    return value


def parse_time(text: str, key: str) -> float:
    """'60ms', '0.5s', '800us' -> seconds."""
    match = _TIME.match(text.strip())
    if not match:
        raise LinkError(f"{key}={text}: a time is a number with a unit, ms, s or us (e.g. {key}=60ms)")
    return float(match.group(1)) * _SECONDS[match.group(2)]


class Trace:
    """A Mahimahi trace: delivery opportunities (ms), each carrying MTU bytes, repeating every period."""

    def __init__(self, opportunities_ms: list[int], name: str = "trace"):
        if not opportunities_ms:
            raise LinkError(f"{name}: a trace needs at least one delivery opportunity")
        if any(b < a for a, b in zip(opportunities_ms, opportunities_ms[1:])) or opportunities_ms[0] < 0:
            raise LinkError(f"{name}: delivery opportunities must be non-negative and in order")
        self.times = [t / 1e3 for t in opportunities_ms]
        self.period = max(self.times[-1], 1e-3)  # Mahimahi repeats the trace after its last opportunity
        self.name = name

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        path = Path(path)
        try:
            lines = path.read_text().split()
        except OSError as e:
            raise LinkError(f"trace {path}: {e.strerror or e}") from None
        try:
            return cls([int(line) for line in lines], str(path))
        except ValueError:
            raise LinkError(f"trace {path}: each line must be a whole number of milliseconds") from None

    @property
    def mean_bps(self) -> float:
        return len(self.times) * MTU * 8 / self.period

    def time(self, index: int) -> float:
        """When opportunity ``index`` (counting through every repetition) comes."""
        cycle, i = divmod(index, len(self.times))
        return cycle * self.period + self.times[i]

    def first_at(self, t: float) -> int:
        """The index of the first opportunity at or after ``t``."""
        cycle = max(0, int(t // self.period))
        i = bisect.bisect_left(self.times, t - cycle * self.period - 1e-12)
        return cycle * len(self.times) + i


@dataclass
class Pipe:
    """One direction of the link: a first-in-first-out queue drained at ``bps`` or by ``trace``."""
    bps: float
    trace: Trace | None = None
    free_at: float = 0.0  # when the last message's last byte left
    next_opportunity: int = 0  # trace: the first opportunity no message has used
    arrived_at: float = 0.0  # when the last message reached the other end (in-order delivery)

    def backlog(self, t: float) -> float:
        """Seconds a message given at ``t`` would wait before its first byte leaves."""
        return max(0.0, self.free_at - t)

    def send(self, t: float, nbytes: int) -> float:
        """A message of ``nbytes`` given to the pipe at ``t``: when its last byte has left."""
        start = max(t, self.free_at)
        if self.trace is not None:
            first = max(self.next_opportunity, self.trace.first_at(start))
            packets = max(1, math.ceil(nbytes / MTU))
            self.next_opportunity = first + packets
            self.free_at = max(start, self.trace.time(first + packets - 1))
        else:
            self.free_at = start + (nbytes * 8 / self.bps if math.isfinite(self.bps) else 0.0)
        return self.free_at

    def deliver(self, left: float, delay: float) -> float:
        """A message whose last byte left at ``left`` arrives ``delay`` later, never before the one sent before it."""
        self.arrived_at = max(self.arrived_at, left + delay)
        return self.arrived_at


@dataclass
class Timeline:
    """One keyframe's way through the link (seconds of video time)."""
    capture: float
    sent: float  # coded, given to the uplink
    at_edge: float  # its last byte reached the edge
    served: float  # the edge finished it
    available: float  # the answer's last byte reached the device

    @property
    def delay(self) -> float:
        """Capture to mask available."""
        return self.available - self.capture


@dataclass
class Link:
    up: Pipe
    down: Pipe
    rtt: float  # seconds
    jitter: float = 0.0  # seconds: each crossing delayed by up to this much, uniformly
    spec: str = ""
    edge_free_at: float = 0.0
    _random: random.Random = field(default_factory=lambda: random.Random(0), repr=False)

    @classmethod
    def parse(cls, spec: str) -> "Link":
        """A spec (``up=4M,down=20M,rtt=60ms[,jitter=5ms][,trace=FILE][,down-trace=FILE]``) or a name in LINKS."""
        text = LINKS.get(spec.strip(), spec)
        values: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or key not in ("up", "down", "rtt", "jitter", "trace", "down-trace"):
                raise LinkError(f"bad link item {item!r}: expected up=RATE, down=RATE, rtt=TIME, jitter=TIME, "
                                f"trace=FILE or down-trace=FILE (or a named link: {', '.join(LINKS)})")
            if key in values:
                raise LinkError(f"link item {key} given twice")
            values[key] = value.strip()
        up_trace = Trace.load(values["trace"]) if "trace" in values else None
        down_trace = Trace.load(values["down-trace"]) if "down-trace" in values else None
        for key, trace in (("up", up_trace), ("down", down_trace)):
            if key not in values and trace is None:
                raise LinkError(f"link {spec!r} gives no {key}link rate ({key}=RATE"
                                f"{', or trace=FILE' if key == 'up' else ', or down-trace=FILE'})")
        if "rtt" not in values:
            raise LinkError(f"link {spec!r} gives no round-trip time (rtt=TIME, e.g. rtt=60ms)")
        up = up_trace.mean_bps if up_trace and "up" not in values else parse_rate(values["up"], "up")
        down = down_trace.mean_bps if down_trace and "down" not in values else parse_rate(values["down"], "down")
        return cls(Pipe(up, up_trace), Pipe(down, down_trace), parse_time(values["rtt"], "rtt"),
                   parse_time(values.get("jitter", "0ms"), "jitter"), spec.strip())

    @property
    def ideal(self) -> bool:
        """Every answer crosses at once: the link adds nothing (an evaluation's --sync)."""
        return (self.rtt == 0 and self.jitter == 0 and math.isinf(self.up.bps) and math.isinf(self.down.bps)
                and self.up.trace is None and self.down.trace is None)

    def _one_way(self) -> float:
        return self.rtt / 2 + (self._random.uniform(0, self.jitter) if self.jitter else 0.0)

    def exchange(self, capture: float, device_s: float, up_bytes: int, edge_s: float, down_bytes: int) -> Timeline:
        """A request of ``up_bytes`` coded ``device_s`` after ``capture``, served in ``edge_s``, answered with
        ``down_bytes``: its timeline. Requests must be given in the order the device sends them."""
        sent = capture + device_s
        at_edge = self.up.deliver(self.up.send(sent, up_bytes), self._one_way())
        served = self.edge_free_at = max(at_edge, self.edge_free_at) + edge_s
        available = self.down.deliver(self.down.send(served, down_bytes), self._one_way())
        return Timeline(capture, sent, at_edge, served, available)
