"""The link model against the kernel: the real stac-runtime (paced like a camera, asynchronous, as deployed) and the
real Triton edge talk through a link shaped by tc (bench.netns); each answer's measured delay is set beside what
stac.link predicts for the same run.

The prediction is given what the run itself did, as `stac-runtime --link` would be: each keyframe's capture time,
coding time, bytes each way and handling of its answer (the runtime's report, ``exchanges``), the edge's own time
per request (Triton's trace: from the request's last byte read, or the previous answer's first byte sent if it came
later, to its own answer's first byte sent: the time it was being served, since the model queues requests at the
edge itself), the link's rate (or trace) and its round trip as the stack measures it (``ping``: gRPC health calls
through the shaped link, before the run). What it is not given is when anything arrived.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stac.contract import ROUTE_MODELS
from stac.link import Link, Pipe, Trace, on_wire
from stac.metrics import confusion_matrix, miou

from .netns import BURST, ShapedLink

TRACE_WINDOW = 0.1  # seconds: a trace is followed by tc as the mean rate of each window this long


def ping(url: str, count: int = 20) -> list[float]:
    """Milliseconds of ``count`` gRPC health calls to the edge at ``url`` (after one to open the connection)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url.removeprefix("grpc://"))
    try:
        client.is_server_live()
        times = []
        for _ in range(count):
            started = time.perf_counter()
            client.is_server_live()
            times.append((time.perf_counter() - started) * 1e3)
        return times
    finally:
        client.close()


def edge_spans(trace_prefix: Path, since: float, until: float) -> list[tuple[float, float]]:
    """From Triton's trace files: each keyframe request's (last byte read, first answer byte sent), monotonic
    seconds, read within [since, until], in order."""
    spans = []
    for path in trace_prefix.parent.glob(trace_prefix.name + ".*"):
        events: dict[int, dict] = {}
        for item in json.loads(path.read_text() or "[]"):
            entry = events.setdefault(item["id"], {})
            entry.update({k: v for k, v in item.items() if k in ("model_name", "parent_id")})
            for stamp in item.get("timestamps", ()):
                entry[stamp["name"]] = stamp["ns"] / 1e9
        for entry in events.values():
            if (entry.get("model_name") in ROUTE_MODELS.values() and "parent_id" not in entry
                    and "GRPC_SEND_START" in entry and since <= entry.get("GRPC_WAITREAD_END", -1) <= until):
                spans.append((entry["GRPC_WAITREAD_END"], entry["GRPC_SEND_START"]))
    return sorted(spans)


def _in_order(exchanges: list[dict]) -> list[dict]:
    return sorted(exchanges, key=lambda e: e["handed_s"])


@dataclass
class Legs:
    """Per answer (ms), measured and predicted: capture to answer in hand, and its two network legs (the request
    handed to the client until the edge read its last byte; the edge's first answer byte until the answer's
    message was in the client's hands), which say where a disagreement comes from."""
    measured: list[float] = field(default_factory=list)
    predicted: list[float] = field(default_factory=list)
    up_measured: list[float] = field(default_factory=list)
    up_predicted: list[float] = field(default_factory=list)
    down_measured: list[float] = field(default_factory=list)
    down_predicted: list[float] = field(default_factory=list)


def predict(link: Link, exchanges: list[dict], spans: list[tuple[float, float]], start: float) -> Legs:
    """The model's times for each answer, beside the measured ones, in the order sent; ``start``: the monotonic
    time the link's trace (if any) began. The device's own times are given as measured: capture to the request
    handed to the edge's client (coding, and the client's thread), and the answer's message in hand to the answer
    decoded and checked."""
    sent = _in_order(exchanges)
    if len(sent) != len(spans):
        raise RuntimeError(f"the edge traced {len(spans)} keyframe requests, the device got {len(sent)} answers")
    legs = Legs()
    previous = -float("inf")  # when the edge began answering the request before: till then this one waited there
    for e, (read, answered) in zip(sent, spans):
        service = answered - max(read, previous)  # the model queues requests at the edge itself
        previous = answered
        t = link.exchange(e["capture_s"] - start, e["handed_s"] - e["capture_s"], e["up_bytes"], service,
                          e["down_bytes"])
        if e["ok"]:  # an error's time is not an answer's delay, though it took the link's time
            handling = e["available_s"] - e["received_s"]  # the device's own, once the message is in
            for name, measured, predicted in (("", e["available_s"] - e["capture_s"], t.delay + handling),
                                              ("up_", read - e["handed_s"], t.at_edge - t.sent),
                                              ("down_", e["received_s"] - answered, t.available - t.served)):
                getattr(legs, name + "measured").append(measured * 1e3)
                getattr(legs, name + "predicted").append(predicted * 1e3)
    return legs


@dataclass
class Measurement:
    """One run of the runtime over the shaped link."""
    label: str  # the rate or trace
    source: str
    kbps: str | None  # the runtime's --kbps
    rtt_ms: float
    legs: Legs
    up_bytes_link: int  # what left the device's end of the veth, every header included
    up_bytes_model: int  # what the model put on the uplink
    report: dict = field(repr=False, default_factory=dict)
    rate_mbps: float | None = None
    masks: list[np.ndarray] = field(repr=False, default_factory=list)  # the mask shown at each frame
    start: float = 0.0  # time.monotonic() when the runtime was started (and a trace began)

    def row(self) -> dict:
        legs = self.legs
        m, p = np.percentile(legs.measured, (50, 95)), np.percentile(legs.predicted, (50, 95))
        r = self.report
        return {"source": self.source, "size": f"{r['width']}x{r['height']}", "link": self.label,
                "rate_mbps": self.rate_mbps, "kbps": self.kbps, "answers": len(legs.measured), "rtt_ms": self.rtt_ms,
                "measured_p50_ms": float(m[0]), "predicted_p50_ms": float(p[0]),
                "measured_p95_ms": float(m[1]), "predicted_p95_ms": float(p[1]),
                "p50_error": float(p[0] / m[0] - 1), "p95_error": float(p[1] / m[1] - 1),
                **{f"{leg}_p50_ms": float(np.median(getattr(legs, leg))) for leg in (
                    "up_measured", "up_predicted", "down_measured", "down_predicted")},
                "up_bytes_link": self.up_bytes_link, "up_bytes_model": self.up_bytes_model,
                "up_kbps": r.get("up_kbps"), "keyframes_offloaded": r.get("offloaded"),
                "edge_errors": r.get("edge_errors"), "idr_requests": r.get("idr_requests"),
                "budget_kbps_median": r.get("budget_kbps_median"), "rates": r.get("rates")}


def measure(shaped: ShapedLink, url: str, trace_prefix: Path, source: str, runtime_args: list[str],
            up: float | Trace, down: float, label: str, log: Path, kbps: str | None = None) -> Measurement:
    """Run stac-runtime on ``source`` in the device's namespace over the shaped link (uplink ``up`` bit/s, inf for
    none, or a trace; downlink ``down``) against the edge at ``url``; the masks it showed come back too."""
    bin_dir = Path(sys.executable).parent
    shaped.set_rate(up_bps=up.stretches(TRACE_WINDOW)[0][1] if isinstance(up, Trace) else up, down_bps=down)
    rtt = statistics.median(ping_through(shaped, url))
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        before = shaped.sent_bytes()
        start = time.monotonic()
        if isinstance(up, Trace):
            shaped.follow(up.stretches(TRACE_WINDOW), start)
        with open(log, "ab") as out:
            done = subprocess.run(shaped.prefix + [str(bin_dir / "stac-runtime"), "run", source, "--edge", url,
                                                   "--pace", "--report", str(report_path), "--out", tmp,
                                                   "--masks-only", *runtime_args,
                                                   *(["--kbps", kbps] if kbps else [])],
                                  stdout=out, stderr=subprocess.STDOUT)
        shaped.stop_following()
        after = shaped.sent_bytes()
        if done.returncode:
            raise RuntimeError(f"stac-runtime exited with {done.returncode} (log: {log})")
        report = json.loads(report_path.read_text())
        masks = [cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in sorted(Path(tmp, "masks").glob("*.png"))]
    time.sleep(0.5)  # the edge writes each request's trace as it ends
    exchanges = report["exchanges"]
    spans = edge_spans(trace_prefix, start, time.monotonic())
    model = Link(Pipe(up.mean_bps, up) if isinstance(up, Trace) else Pipe(up, burst=BURST), Pipe(down, burst=BURST),
                 rtt / 1e3)
    return Measurement(label, source, kbps, rtt, predict(model, exchanges, spans, start), after[0] - before[0],
                       sum(on_wire(e["up_bytes"]) for e in exchanges), report,
                       None if isinstance(up, Trace) else up / 1e6, masks, start)


def segments(trace: Trace, seconds: float) -> list[tuple[float, float, float]]:
    """(start, end, bit/s) of each stretch of one rate over ``seconds`` (Trace.stretches, repeating, as tc follows
    it)."""
    out: list[list[float]] = []
    t = 0.0
    while t < seconds - 1e-9:
        for length, bps in trace.stretches(TRACE_WINDOW):
            if out and bps == out[-1][2]:  # the period's last stretch runs into the next period's first
                out[-1][1] = t + length
            else:
                out.append([t, t + length, bps])
            t += length
    return [(a, min(b, seconds), bps) for a, b, bps in out if a < seconds]


def over_trace(m: Measurement, trace: Trace, reference: list[np.ndarray], classes: int,
               max_delay_ms: float) -> dict:
    """Per stretch of one rate while frames came (the trace began when the runtime was started): the uplink used
    (the model's wire bytes of requests handed then) against the rate, the real-time mIoU of the masks shown against
    ``reference`` (the model's on every raw frame), p95 delay; and recovery_s: the longest any step of the rate took
    until the p95 delay of every later second of answers in its stretch was under ``max_delay_ms`` (inf: the
    stretch ended over it)."""
    fps, exchanges = m.report["fps"], m.report["exchanges"]
    first = min(e["capture_s"] for e in exchanges) - m.start  # frame 0 (always a keyframe), on the trace's clock
    captured = first + np.arange(len(m.masks)) / fps  # each frame, paced
    rows, recovery = [], []
    for a, b, bps in segments(trace, captured[-1] + 1 / fps):
        if b <= first:
            continue  # the runtime was starting
        key, a = a, max(a, first)
        handed = [e for e in exchanges if a <= e["handed_s"] - m.start < b]
        delays = [(e["available_s"] - e["capture_s"]) * 1e3 for e in exchanges
                  if e["ok"] and a <= e["capture_s"] - m.start < b]
        frames = np.flatnonzero((captured >= a) & (captured < b))
        if not len(frames):
            continue  # a stretch shorter than a frame interval
        rows.append({"trace_s": key, "start_s": a, "end_s": b, "rate_mbps": bps / 1e6,
                     "up_kbps": sum(on_wire(e["up_bytes"]) for e in handed) * 8 / 1e3 / (b - a),
                     "p95_ms": float(np.percentile(delays, 95)) if delays else None,
                     "realtime_miou": miou(sum(confusion_matrix(m.masks[i], reference[i], classes)
                                               for i in frames))})
        rows[-1]["utilization"] = rows[-1]["up_kbps"] * 1e3 / bps
        if len(rows) > 1:  # a step: until when a second of answers (sliding) is over the target
            last_over = None
            for t in np.arange(a, b - 1.0 + 1e-9, 0.1):
                window = [(e["available_s"] - e["capture_s"]) * 1e3 for e in exchanges
                          if e["ok"] and t <= e["capture_s"] - m.start < t + 1.0]
                if window and np.percentile(window, 95) > max_delay_ms:
                    last_over = t
            # back under for good after the last second over it; still over at the stretch's end: never
            recovery.append(0.0 if last_over is None else float("inf") if last_over + 1.0 > b - 0.1 - 1e-9
                            else last_over + 1.0 - a)
    whole = sum(confusion_matrix(mask, ref, classes) for mask, ref in zip(m.masks, reference))
    return {"segments": rows, "recovery_s": max(recovery, default=0.0), "max_delay_ms": max_delay_ms,
            "realtime_miou": miou(whole)}


def ping_through(shaped: ShapedLink, url: str, count: int = 20) -> list[float]:
    """``ping`` run in the device's namespace (its sockets must be made there)."""
    done = subprocess.run(shaped.prefix + [str(Path(sys.executable).parent / "stac-bench"), "ping", url,
                                           "--count", str(count), "--json", "-"], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"stac-bench ping through the shaped link failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)["ms"]


def format_rows(rows: list[dict]) -> str:
    head = (f"{'source':>10} {'size':>9} {'link':>10} {'answers':>7} {'rtt':>5} {'p50 meas':>8} {'pred':>6} "
            f"{'err':>6} {'p95 meas':>8} {'pred':>6} {'err':>6} {'up leg':>6} {'pred':>5} {'down leg':>8} {'pred':>5} "
            f"{'up KB link':>10} {'model':>7}")
    lines = [head]
    for r in rows:
        lines.append(f"{r['source']:>10} {r['size']:>9} {r['link']:>10} {r['answers']:>7} {r['rtt_ms']:>5.1f} "
                     f"{r['measured_p50_ms']:>8.1f} {r['predicted_p50_ms']:>6.1f} {r['p50_error']:>+6.1%} "
                     f"{r['measured_p95_ms']:>8.1f} {r['predicted_p95_ms']:>6.1f} {r['p95_error']:>+6.1%} "
                     f"{r['up_measured_p50_ms']:>6.1f} {r['up_predicted_p50_ms']:>5.1f} "
                     f"{r['down_measured_p50_ms']:>8.1f} {r['down_predicted_p50_ms']:>5.1f} "
                     f"{r['up_bytes_link'] / 1e3:>10.1f} {r['up_bytes_model'] / 1e3:>7.1f}")
    return "\n".join(lines)


def compare_over_trace(rows: list[dict], demand_kbps: float | None) -> None:
    """For each --kbps auto row (with ``segments``): ``utilization``, the uplink used against the link's rate over
    the stretches where the video needs more than the link carries (``demand_kbps``: what it sends unshaped), and
    ``miou_gap``, the most any stretch's real-time mIoU falls short of the best fixed --kbps row's there."""
    fixed = [r for r in rows if r["kbps"] not in (None, "auto")]
    for row in (r for r in rows if r["kbps"] == "auto"):
        binding = [s for s in row["segments"] if demand_kbps is None or s["rate_mbps"] * 1e3 < demand_kbps]
        seconds = [s["end_s"] - s["start_s"] for s in binding]
        row["demand_kbps"] = demand_kbps
        row["utilization"] = (sum(s["up_kbps"] * t for s, t in zip(binding, seconds))
                              / sum(s["rate_mbps"] * 1e3 * t for s, t in zip(binding, seconds))) if binding else None
        gaps = []
        for segment in row["segments"]:
            best = [s["realtime_miou"] for r in fixed for s in r["segments"] if s["trace_s"] == segment["trace_s"]]
            segment["best_fixed_miou"] = max(best, default=None)
            if best:
                gaps.append(max(best) - segment["realtime_miou"])
        row["miou_gap"] = max(gaps, default=None)


def format_trace_rows(rows: list[dict], most: int = 8) -> str:
    """A line per run; its stretches too, unless the trace has more than ``most`` (then --json has them)."""
    lines = [f"{'source':>10} {'kbps':>6} {'mIoU':>6} {'recovery s':>10} {'util':>5} {'mIoU gap':>8}  per stretch: "
             f"rate Mbps, used Kbps, p95 ms, real-time mIoU (best fixed)"]
    for r in rows:
        stretches = "(--json)" if len(r["segments"]) > most else "; ".join(
            f"{s['rate_mbps']:g} {s['up_kbps']:.0f} {s['p95_ms'] or float('nan'):.0f} {s['realtime_miou']:.3f}"
            + (f" ({s['best_fixed_miou']:.3f})" if s.get("best_fixed_miou") is not None else "")
            for s in r["segments"])
        util = f"{r['utilization']:.0%}" if r.get("utilization") is not None else "-"
        gap = f"{r['miou_gap']:+.3f}" if r.get("miou_gap") is not None else "-"
        lines.append(f"{r['source']:>10} {r['kbps'] or '-':>6} {r['realtime_miou']:>6.3f} {r['recovery_s']:>10.1f} "
                     f"{util:>5} {gap:>8}  {stretches}")
    return "\n".join(lines)

