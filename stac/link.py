"""The network between a device and its edge, in virtual time: when each keyframe's answer reaches the device.

A keyframe captured at time t is ready to send once the device has coded it (``device_s`` later). Its request
waits for the uplink (first in, first out), crosses it at the uplink's rate as TCP segments, headers counted (or
one segment per delivery opportunity of a trace) and reaches the edge RTT/2 (plus jitter) after its last byte
left; the edge serves one request of the device at a time, each in ``edge_s``; the answer waits for the
downlink, crosses it, and reaches the device RTT/2 (plus jitter) later:

    available = capture + device + queue and upload + RTT/2 + edge queue and time + download + RTT/2

Nothing here reads a clock, so a run over a Link is as deterministic as the times it is given (the evaluation gives
fixed ones; ``stac-runtime --link`` measures its own encode and the real edge). Both directions deliver in order, as
TCP does: jitter delays a message, never lets it overtake the one before.

A link is spelled ``up=4M,down=20M,rtt=60ms`` (rates in bit/s with k, M or G, or ``inf``; times in ms, s or us),
with optional ``jitter=5ms`` (each crossing delayed by up to that much, uniformly, from a fixed seed),
``burst=3028`` (each direction's rate kept by a token bucket of that many bytes, as a kernel's shaper keeps it: a
message after an idle spell crosses its first bytes at once) and
``trace=FILE`` (the uplink follows a Mahimahi trace: one line per 1500-byte delivery opportunity, its time in ms,
the trace repeating; or a built-in trace named in TRACES, or ``step:HIGH/LOW``) or ``down-trace=FILE``; or one
of the named LINKS.

A rate is what the link carries at its own layer: a message of n bytes is n plus, per TCP segment of at most
SEGMENT bytes, HEADERS bytes of TCP/IPv4 headers and an Ethernet frame's (what a kernel's rate limiter counts:
measured through `tc tbf` on a veth, 0.955 of the rate reached the application, as 1448 / 1514 predicts).
"""
from __future__ import annotations

import bisect
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

MTU = 1500  # bytes one delivery opportunity of a Mahimahi trace carries: one IP packet
SEGMENT = 1448  # a TCP segment's payload in an MTU-sized packet (IPv4 20 + TCP 20 + timestamps 12 bytes of headers)
HEADERS = MTU - SEGMENT + 14  # what each segment adds on a rate-limited link: its headers and an Ethernet header
# Named links: the evaluation's three (the uplink and RTT of a constrained cellular link, of LTE, of Wi-Fi; the
# downlink a typical multiple of the uplink), and the ideal one every answer crosses at once.
LINKS = {"constrained": "up=1M,down=2M,rtt=150ms", "lte": "up=4M,down=20M,rtt=60ms",
         "wifi": "up=30M,down=30M,rtt=10ms", "ideal": "up=inf,down=inf,rtt=0ms"}
_RATE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*([kmg]?)(?:bit/s|bps|b/s)?$", re.IGNORECASE)
_TIME = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|us)$")
_SCALE = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
_SECONDS = {"ms": 1e-3, "s": 1.0, "us": 1e-6}


def _bursty(seconds: int = 20, window: float = 0.2, seed: int = 7) -> list[tuple[float, float]]:
    """A cellular-like uplink: the rate redrawn every ``window`` from 0.3-12 Mbps (log-uniform; a fixed seed), so
    it swings by 40x within a second and averages 2.9 Mbps."""
    draw = random.Random(seed)
    return [(window, math.exp(draw.uniform(math.log(0.3e6), math.log(12e6)))) for _ in range(round(seconds / window))]


def _step(high: float, low: float) -> list[tuple[float, float]]:
    return [(5.0, high), (5.0, low), (5.0, high)]


# Built-in traces (trace=NAME): a step down and back up (5 -> 1 -> 5 Mbps, 5 s each; step:HIGH/LOW between other
# rates), and a bursty link
TRACES = {"step": _step(5e6, 1e6), "bursty": _bursty()}


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


def on_wire(nbytes: int) -> int:
    """What a message of ``nbytes`` sent over TCP weighs on a rate-limited link, headers included."""
    return nbytes + max(1, math.ceil(nbytes / SEGMENT)) * HEADERS


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

    @classmethod
    def from_rates(cls, spans: list[tuple[float, float]], name: str) -> "Trace":
        """Opportunities at a rate held for each (seconds, bit/s) span in turn: as many per millisecond as the
        rate delivers packets (a fraction carried to the next)."""
        times, owed, start = [], 0.0, 0
        for seconds, bps in spans:
            for ms in range(start + 1, start + round(seconds * 1e3) + 1):
                owed += bps / 1e3 / (MTU * 8)
                times += [ms] * int(owed)
                owed -= int(owed)
            start += round(seconds * 1e3)
        trace = cls(times, name)
        trace.period = start / 1e3  # the spans' length, even if the last millisecond carries nothing
        return trace

    @classmethod
    def named(cls, spec: str) -> "Trace":
        """A built-in trace (TRACES) by name, or ``step:HIGH/LOW`` (the step between those rates), else a Mahimahi
        trace file."""
        if spec in TRACES:
            return cls.from_rates(TRACES[spec], spec)
        if step := re.fullmatch(r"step:([^/]+)/(.+)", spec):
            return cls.from_rates(_step(parse_rate(step[1], "trace"), parse_rate(step[2], "trace")), spec)
        return cls.load(spec)

    @property
    def mean_bps(self) -> float:
        return len(self.times) * MTU * 8 / self.period

    def stretches(self, window: float = 0.1, tolerance: float = 0.15) -> list[tuple[float, float]]:
        """One period as (seconds, bit/s) stretches of one rate: ``window`` spans merged while each is within
        ``tolerance`` of the stretch's mean, or a packet (a steady rate's spans differ by one, which at a few
        hundred Kbps is more than the tolerance), at the stretch's mean."""
        merged: list[list[float]] = []  # [seconds, bits]
        for seconds, bps in self.spans(window):
            mean = merged[-1][1] / merged[-1][0] if merged else 0.0
            if merged and abs(bps - mean) * seconds <= max(tolerance * mean * seconds, MTU * 8) + 1e-6:
                merged[-1][0] += seconds
                merged[-1][1] += bps * seconds
            else:
                merged.append([seconds, bps * seconds])
        return [(seconds, bits / seconds) for seconds, bits in merged]

    def spans(self, window: float) -> list[tuple[float, float]]:
        """One period as (seconds, bit/s) spans of ``window`` seconds each (the last may be shorter), each at the
        rate the trace delivers within it: what a kernel's rate limiter can follow."""
        edges = [i * window for i in range(math.ceil(self.period / window - 1e-9))] + [self.period]
        return [(b - a, (bisect.bisect_right(self.times, b + 1e-12) - bisect.bisect_right(self.times, a + 1e-12))
                 * MTU * 8 / (b - a)) for a, b in zip(edges, edges[1:])]

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
    burst: int = 0  # bytes a shaper's token bucket lets through at once after an idle spell (0: none)
    free_at: float = 0.0  # when the last message's last byte left
    tokens: float | None = None  # the bucket's bytes at free_at (None: full)
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
            packets = max(1, math.ceil(nbytes / SEGMENT))
            self.next_opportunity = first + packets
            self.free_at = max(start, self.trace.time(first + packets - 1))
        elif math.isfinite(self.bps):
            wire = on_wire(nbytes)
            tokens = self.burst if self.tokens is None else min(
                self.burst, self.tokens + (start - self.free_at) * self.bps / 8)
            self.free_at = start + max(0.0, wire - tokens) * 8 / self.bps
            self.tokens = max(0.0, tokens - wire)
        else:
            self.free_at = start
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
            if not eq or key not in ("up", "down", "rtt", "jitter", "burst", "trace", "down-trace"):
                raise LinkError(f"bad link item {item!r}: expected up=RATE, down=RATE, rtt=TIME, jitter=TIME, "
                                f"burst=BYTES, trace=FILE or down-trace=FILE (or a named link: {', '.join(LINKS)})")
            if key in values:
                raise LinkError(f"link item {key} given twice")
            values[key] = value.strip()
        up_trace = Trace.named(values["trace"]) if "trace" in values else None
        down_trace = Trace.named(values["down-trace"]) if "down-trace" in values else None
        for key, trace in (("up", up_trace), ("down", down_trace)):
            if key not in values and trace is None:
                raise LinkError(f"link {spec!r} gives no {key}link rate ({key}=RATE"
                                f"{', or trace=FILE' if key == 'up' else ', or down-trace=FILE'})")
        if "rtt" not in values:
            raise LinkError(f"link {spec!r} gives no round-trip time (rtt=TIME, e.g. rtt=60ms)")
        up = up_trace.mean_bps if up_trace and "up" not in values else parse_rate(values["up"], "up")
        down = down_trace.mean_bps if down_trace and "down" not in values else parse_rate(values["down"], "down")
        burst = values.get("burst", "0")
        if not burst.isdigit():
            raise LinkError(f"burst={burst}: a token bucket's size is a whole number of bytes (e.g. burst=3028)")
        return cls(Pipe(up, up_trace, int(burst)), Pipe(down, down_trace, int(burst)),
                   parse_time(values["rtt"], "rtt"), parse_time(values.get("jitter", "0ms"), "jitter"), spec.strip())

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
