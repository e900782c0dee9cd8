"""The device loop (paper Algorithm 2): flow, propagation, PSNR gating, asynchronous keyframe offload.

Per frame: DIS flow to the previous frame at the processing size, composed into a map back to each
tracked keyframe; the newest answered keyframe's mask is warped to the frame at once; the newest sent
keyframe's pixels, warped, gate the next keyframe (PSNR < threshold, or a fixed interval). A keyframe is
coded with the level map of the newest answer, warped to its region grid (the middle level before any
answer), and sent to the edge beside the loop. When an answer arrives its keyframe's map has been
composed with every flow since, so its mask and next levels are carried to the current frame.

With an inter codec (route "h264") the keyframes form one stream, each predicted from the previous keyframe: the
edge must receive them in order, so several are in flight only where the edge's client keeps them in order (gRPC,
Edge.ordered; over a link the requests are made in order anyway), one at a time otherwise; after any failure,
refusal or timeout the next keyframe is an IDR (the edge may lack its predecessor); a refusal ("need IDR") makes
the very next frame that keyframe (stac.edge.streams).

Memory is bounded: at most ``max_in_flight`` keyframes wait for answers, plus the answered one; each
holds its pixels, map and mask at the processing size. Edge failures and timeouts are counted, never
raised: frames keep their propagated masks and offloading resumes after ``retry_after`` seconds.
"""
from __future__ import annotations

import heapq
import itertools
import queue
import statistics
import threading
import time
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from stac.allocate import boundary_levels, boundary_offsets
from stac.codec import make_codec
from stac.codec.h264 import is_idr
from stac.edge.client import Edge, EdgeAnswer, EdgeError, check_answer, exchange
from stac.edge.streams import Stream, new_stream_id
from stac.edge.wire import request_bytes
from stac.flow import Flow, compose, identity_map, processing_size, warp, warp_levels
from stac.gate import AccuracyGate, agreement
from stac.inference import check_bound
from stac.link import Link, Timeline
from stac.rate import AUTO_FINEST_CRF, AUTO_MAX_CREDIT, AutoRate, RateController, crf_step, step_crf
from stac.tables import BLOCK, TableSet
from stac.video import psnr, resize


# How a STAC keyframe's level map is chosen: one level everywhere (the gradient-shaped tables alone); the
# paper's per-region levels from the edge's answer (Algorithm 1 on the previous keyframe, carried by flow); or
# the device's own rate-aware map around the mask boundaries it holds (stac.allocate). Uniform is the default
# because it measured cheaper: on the calibration clips (bikes, bigbuckbunny;
# `stac-bench eval bikes bigbuckbunny --frames 20`) the paper's levels cost 10.6-18.0% more bits than one
# level everywhere at mIoU 0.95-0.98 (codec level) and 18.8% more at the system level; on the evaluation clips
# (`stac-bench eval --levels codec,system,ablation`) the paper's cost 5.6-8.8% more, the boundary map 14.5% less
# at mIoU 0.95 but 7-11% more at 0.97-0.98.
SELECTIONS = ("uniform", "paper", "boundary")


@dataclass(frozen=True)
class RouteDefaults:
    psnr: float  # dB
    selection: str


# What the device does with each kind of keyframe when RuntimeConfig leaves psnr or selection unset. STAC and
# frame-by-frame JPEG: the paper's 26 dB gate, and one level everywhere (above). The inter codec, the default route
# (RuntimeConfig.codec): chosen on the calibration clips (bikes, bigbuckbunny) for the masks a device shows in real
# time over the LTE-like link (`stac-bench eval bikes bigbuckbunny --levels realtime --link lte --max-in-flight 8
# --methods h264,stac-h264-boundary,stac-h264`, and a finer grid of gates 30-40 dB x CRF 37-43 run the same way):
# the cheapest setting within 0.01 of the best real-time mIoU streaming every frame reaches there (0.9212), gate 38
# dB at CRF 40 (H264Codec's default): mIoU 0.917 at 228 Kbps both ways; the boundary offsets, which there kept x264's
# own quantizers' real-time mIoU (-0.0015 and +0.0002, each +-0.004, over two grids) at 7-10% fewer bytes. (At an
# ideal link, `--sync`, the cheapest setting reaching mIoU 0.97 had been CRF 34 at the same gate; under a real delay
# the carried masks cap accuracy and the finer CRF buys nothing: real-time mIoU moves 0.002 between CRF 34 and 40.)
PAPER_GATE_DB = 26.0
ROUTE_DEFAULTS = {"stac": RouteDefaults(PAPER_GATE_DB, "uniform"), "jpeg": RouteDefaults(PAPER_GATE_DB, "uniform"),
                  "h264": RouteDefaults(38.0, "boundary")}


@dataclass
class RuntimeConfig:
    psnr: float | None = None  # dB: below it the frame becomes a keyframe (the starting gate with ``target``)
    target: float | None = None  # steer the gate so carried masks agree this well (mIoU) with fresh answers
    every: int | None = None  # fixed keyframe interval instead of the PSNR gate
    sync: bool = False  # wait for every answer: same input, same bytes and masks
    # keyframes as one inter-coded stream (h264, the default route, ROUTE_DEFAULTS), or STAC-coded (stac, the paper's
    # design), or a baseline spec: jpeg:q=90, grace, h264:crf=28
    codec: str = "h264"
    # STAC keyframes: "uniform" (one level), "paper" (NEXT_LEVELS by flow), "boundary"; H.264 keyframes:
    # "uniform" (x264's own quantizers) or "boundary" (QP offsets per macroblock, stac.allocate.boundary_offsets)
    selection: str | None = None
    # (psnr and selection: None is the codec's route's default, ROUTE_DEFAULTS)
    bound: float | None = None  # STAC's loss bound (default: the table set's B): its level, and the edge's BOUND
    # steer STAC's bound, or the inter codec's CRF, to this uplink budget (stac.rate); "auto": to the rate the device
    # measures its way to the edge delivers, keeping answers within max_delay (stac.rate.AutoRate)
    kbps: float | str | None = None
    # ms, with kbps "auto": the capture-to-answer delay the budget and window keep answers under. On the calibration
    # clip bikes where the link binds (`stac-bench link bikes --trace step:1M/100k --fps 10 --max-frames 300 --kbps
    # auto --max-delay D`, one run each), 150 / 250 / 400 ms gave real-time mIoU 0.724 / 0.723 / 0.711, 84 / 83 / 87%
    # of the 100 Kbps stretches used, p95 there 219-325 / 324-397 / 496-719 ms: no difference in accuracy beyond a
    # run's noise, and 250 ms, the default chosen before (with a controller since mended), was kept
    max_delay: float = 250.0
    fps: float = 30.0  # the source's frame rate: the rate controller's clock
    flow_width: int = 512  # flow and propagation run at this width (or the frame's, if smaller)
    preset: str = "ultrafast"
    # keyframes awaiting answers at once: enough to pipeline a keyframe per frame over a link of 150 ms RTT at 30 fps;
    # on the calibration clips over the LTE-like link, 8 rather than 2 lifted every method's real-time mIoU by 0.003
    max_in_flight: int = 8
    timeout: float = 10.0  # seconds before an unanswered keyframe is given up
    retry_after: float = 1.0  # seconds without offloading after an edge failure
    # Real time over a modelled network (stac.link): frames are captured at fps, each answer reaches the device when
    # the link says, and every mask is the one the device shows at its frame's capture time. None: answers arrive
    # when the edge gives them (asynchronous), or at once (sync).
    link: str | None = None
    device_ms: float | None = None  # with a link: a keyframe's coding time on the device (None: measured)
    edge_ms: float | None = None  # with a link: the edge's time per keyframe (None: the edge's own, measured)

    def __post_init__(self):
        """What can be told wrong before any frame (the rest is checked by Runtime, which knows the codec)."""
        if self.link is not None:
            Link.parse(self.link)  # LinkError names the part
            if self.sync:
                raise ValueError("--sync answers every keyframe at once, --link when the link delivers it: give one")
        elif self.device_ms is not None or self.edge_ms is not None:
            raise ValueError("--device-ms and --edge-ms are times on a link: give --link too")
        for name, value in (("--device-ms", self.device_ms), ("--edge-ms", self.edge_ms)):
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value:g}")
        if isinstance(self.kbps, str) and self.kbps != "auto":  # a number's range is the rate controller's
            raise ValueError(f"--kbps must be a number of Kbps or auto, got {self.kbps!r}")
        if not self.max_delay > 0:
            raise ValueError(f"--max-delay must be positive, got {self.max_delay:g}")


@dataclass
class FrameResult:
    index: int
    mask: np.ndarray  # uint8 [H, W]
    keyframe: bool  # the gate fired
    offloaded: bool  # and the frame was sent
    sent_bytes: int
    psnr: float  # of the propagated keyframe against this frame (inf for keyframes without reference)
    answered: bool  # the mask comes from an edge answer (directly or propagated)
    levels: np.ndarray | None  # the level map the mask's keyframe was, or this keyframe is, coded with


@dataclass
class _Keyframe:
    index: int
    pixels: np.ndarray  # RGB at the processing size
    map: np.ndarray  # current frame -> this keyframe, processing size
    sent_at: float  # when it was captured (Runtime.now over a link, else the machine's monotonic clock)
    levels: np.ndarray | None = None  # the level map it was coded with
    mask: np.ndarray | None = None  # answer, processing size
    full_mask: np.ndarray | None = None  # answer at full size, while the map is still the identity
    next_levels: np.ndarray | None = None
    request: int = 0  # the bytes its request put on the network
    coded_ms: float = 0.0  # capture to coded bytes, on the device
    handed: float = 0.0  # when its request was handed to the edge's client (Keyframe.sent_at's clock)
    state: str = "pending"  # or "superseded" (a newer answer came first) or "abandoned" (timed out)


@dataclass
class RuntimeStats:
    frames: int = 0
    keyframes: int = 0
    offloaded: int = 0
    uplink_bytes: int = 0  # the keyframes' bytes
    downlink_bytes: int = 0  # the answers' bytes (coded masks, and next levels when asked for)
    wire_up_bytes: int = 0  # what crossed the network each way: the messages around them (stac.edge.wire)
    wire_down_bytes: int = 0
    answers: int = 0
    superseded: int = 0
    edge_errors: int = 0
    refusals: int = 0  # edge errors that were a proxy's refusal (every server busy or down)
    timeouts: int = 0
    skipped_offloads: int = 0
    idrs: int = 0  # inter codec: keyframes sent as IDRs (the first, and after every failure or refusal)
    idr_requests: int = 0  # inter codec: keyframes the edge refused for want of their predecessor
    bad_frames: int = 0
    frames_without_answer: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # the edge's own time per answered keyframe
    delays_ms: list[float] = field(default_factory=list)  # capture to answer available, per answer
    coding_ms: list[float] = field(default_factory=list)  # the device's own time from a keyframe's capture to its bytes
    agreements: list[float] = field(default_factory=list)  # mIoU of the carried mask vs each fresh answer
    # every answer or error that came back: its keyframe, capture (s, Keyframe.sent_at's clock), coding time, when
    # its request was handed to the edge's client, the bytes each way (wire), when the answer's message reached the
    # client and when the answer was in hand, decoded and checked (same clock), and whether it was an answer: what
    # a link model is checked against (stac-bench link)
    exchanges: list[dict] = field(default_factory=list)
    # --kbps auto: per answer, seconds since the first frame, the delivery rate estimated and the budget chosen
    rates: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        lat = self.latencies_ms
        delays = [float(d) for d in np.percentile(self.delays_ms, (50, 95, 99))] if self.delays_ms else [None] * 3
        return {"frames": self.frames, "keyframes": self.keyframes, "offloaded": self.offloaded,
                "uplink_bytes": self.uplink_bytes, "downlink_bytes": self.downlink_bytes,
                "wire_up_bytes": self.wire_up_bytes, "wire_down_bytes": self.wire_down_bytes,
                "delay_p50_ms": delays[0], "delay_p95_ms": delays[1], "delay_p99_ms": delays[2],
                "answers": self.answers,
                "superseded_answers": self.superseded, "edge_errors": self.edge_errors,
                "edge_refusals": self.refusals, "edge_timeouts": self.timeouts,
                "skipped_offloads": self.skipped_offloads,
                "idrs": self.idrs, "idr_requests": self.idr_requests,
                "bad_frames": self.bad_frames, "frames_without_answer": self.frames_without_answer,
                "edge_latency_ms_median": statistics.median(lat) if lat else None,
                "coding_ms_median": statistics.median(self.coding_ms) if self.coding_ms else None,
                "carried_agreement_mean": statistics.fmean(self.agreements) if self.agreements else None}


def _answer_bytes(answer: EdgeAnswer | Exception) -> int:
    """What came back over the network: the answer's message, or an error's."""
    return answer.wire if isinstance(answer, EdgeAnswer) else len(str(answer).encode())


class Runtime:
    def __init__(self, edge: Edge, tables: TableSet, frame_size: tuple[int, int], config: RuntimeConfig):
        self.edge, self.tables = edge, tables
        self.height, self.width = frame_size
        for name, value in (("--every", config.every), ("--timeout", config.timeout)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value:g}")
        if config.retry_after < 0 or config.max_in_flight < 1:
            raise ValueError("retry_after must be >= 0 and max_in_flight >= 1")
        self.proc_size = processing_size(self.height, self.width, config.flow_width)  # (h, w)
        self.grid = identity_map(*self.proc_size)
        self.flow = Flow(config.preset)
        self.codec = make_codec(config.codec, tables)
        self.kind = self.codec.route
        if self.kind is None:
            raise ValueError(f"codec {config.codec!r} cannot be offloaded by the device loop")
        defaults = ROUTE_DEFAULTS[self.kind]
        self.config = config = replace(config, psnr=defaults.psnr if config.psnr is None else config.psnr,
                                       selection=config.selection or defaults.selection)
        if config.selection not in SELECTIONS:
            raise ValueError(f"unknown selection {config.selection!r} (known: {', '.join(SELECTIONS)})")
        # an inter stream's identity at the edge (its sequence correlation ID), and whether its next unit must be
        # an IDR; asynchronous offload pipelines its units only through an edge client that keeps them in order
        self.stream_id = new_stream_id()
        self.need_idr = False
        self.force_keyframe = False
        self.link = Link.parse(config.link) if config.link else None
        self.pipelined = self.kind == "h264" and not self.link and not config.sync and edge.ordered
        self.max_in_flight = 1 if self.kind == "h264" and not self.link and not self.pipelined \
            else config.max_in_flight
        shapeable = {"uniform": ("stac", "jpeg", "h264"), "paper": ("stac",), "boundary": ("stac", "h264")}
        if self.kind not in shapeable[config.selection]:
            raise ValueError(f"--selection {config.selection} shapes keyframes of codec "
                             f"{' or '.join(shapeable[config.selection])} only")
        if config.bound is not None and self.kind != "stac":
            raise ValueError("--bound steers STAC keyframes only (codec stac)")
        if config.kbps is not None and self.kind not in ("stac", "h264"):
            raise ValueError("--kbps steers STAC or H.264 keyframes only (codec stac or h264)")
        if config.kbps is not None and config.bound is not None:
            raise ValueError("--kbps steers the bound itself: give --kbps or --bound, not both")
        if config.bound is not None:
            try:
                check_bound(config.bound)  # the edge refuses what this refuses
            except ValueError as e:
                raise ValueError(f"--bound: {e}") from None
        self.auto = AutoRate(config.max_delay / 1e3) if config.kbps == "auto" else None
        budget = self.auto.kbps if self.auto else config.kbps
        self.rate = None if budget is None else RateController.for_crf(budget, config.fps, self.codec.crf) \
            if self.kind == "h264" else RateController.for_bound(budget, config.fps, tables)
        if self.auto:
            self.rate.max_credit = AUTO_MAX_CREDIT
            self.rate.no_finer_than(crf_step(AUTO_FINEST_CRF) if self.kind == "h264" else tables.bound)
        self.first_capture: float | None = None
        self.last_request = 0  # bytes of the newest request sent
        if config.target is not None and config.every:
            raise ValueError("--target steers the PSNR gate: give --target or --every, not both")
        self.gate = AccuracyGate(config.target, config.psnr) if config.target is not None else None
        self.regions = tables.regions(self.height, self.width)
        self.region_px = tables.region_blocks * BLOCK
        self.next_levels = self.kind == "stac" and config.selection == "paper"  # only the paper's levels need them
        # An answer that arrives within its own frame is shown at full size; any later one is carried by flow at the
        # processing size, so that is the size it is asked for (fewer bytes to send, code and decode)
        instant = config.sync or (self.link is not None and self.link.ideal and config.device_ms == 0
                                  and config.edge_ms == 0)
        self.answer_size = None if instant else self.proc_size
        self.stats = RuntimeStats()
        self.answered: _Keyframe | None = None
        self.pending: list[_Keyframe] = []
        self.answers: queue.Queue = queue.Queue()
        # over a link, the answers on their way: a heap of (when it arrives, order asked, keyframe, answer, timeline)
        self.arrivals: list[tuple[float, int, _Keyframe, EdgeAnswer | Exception, Timeline]] = []
        self._order = itertools.count()
        self.captured = 0.0  # the machine's clock when the current frame came in
        self.threads: list[threading.Thread] = []
        self.prev_grey: np.ndarray | None = None
        self.last_mask = np.zeros((self.height, self.width), np.uint8)
        self.backoff_until = 0.0
        self.index = 0

    # -- edge side ---------------------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds on the clock the loop runs by: over a link, the current frame's capture time (video time);
        otherwise the machine's."""
        return (self.index - 1) / self.config.fps if self.link else time.monotonic()

    def _call(self, key: _Keyframe, data: bytes, bound: float | None,
              stream: Stream | None) -> tuple[EdgeAnswer | Exception, float]:
        """The edge's answer to one keyframe (or why there is none), and when it was in hand (time.monotonic); when
        the request was handed to the edge goes to ``key.handed``."""
        key.handed = time.monotonic()
        try:
            answer: EdgeAnswer | Exception = self.edge.segment(data, self.kind, (self.height, self.width), bound,
                                                               stream, self.next_levels, self.answer_size)
        except Exception as e:  # an edge is never allowed to stop the loop
            answer = e
        return self._checked(answer), time.monotonic()

    def _checked(self, answer: EdgeAnswer | Exception) -> EdgeAnswer | Exception:
        """The answer if the device can use it, else why not (the edge's error, or check_answer's)."""
        if isinstance(answer, EdgeAnswer):
            try:
                check_answer(answer, self.answer_size or (self.height, self.width),
                             self.regions if self.next_levels else None, self.tables.levels)
            except Exception as e:
                return e
        return answer

    def _received(self, key: _Keyframe, answer: EdgeAnswer | Exception, arrived: float) -> None:
        """From an asking thread: the answer is in hand; the loop applies it at its next frame."""
        self.answers.put((key, answer, (arrived - key.handed) * 1e3, arrived))

    def _ask(self, key: _Keyframe, data: bytes, bound: float | None, stream: Stream | None) -> None:
        self._received(key, *self._call(key, data, bound, stream))

    def _ask_in_order(self, key: _Keyframe, data: bytes, bound: float | None, stream: Stream | None) -> None:
        """Ask without waiting, behind the requests already made (Edge.segment_async)."""
        def done(answer: EdgeAnswer | Exception) -> None:
            arrived = time.monotonic()
            self._received(key, self._checked(answer), arrived)

        key.handed = time.monotonic()
        self.edge.segment_async(done, data, self.kind, (self.height, self.width), bound, stream, self.next_levels,
                                self.answer_size)

    def _ask_over_link(self, key: _Keyframe, data: bytes, bound: float | None, stream: Stream | None,
                       request: int, coded_s: float) -> None:
        """Ask now, and hold the answer back until the link delivers it (stac.link); ``request``: the bytes the
        request puts on the uplink; ``coded_s``: how long after its capture the device had the keyframe coded."""
        answer, arrived = self._call(key, data, bound, stream)
        config = self.config
        edge_s = arrived - key.handed if config.edge_ms is None else config.edge_ms / 1e3
        device_s = coded_s if config.device_ms is None else config.device_ms / 1e3
        timeline = self.link.exchange(key.sent_at, device_s, request, edge_s, _answer_bytes(answer))
        key.handed = timeline.sent
        heapq.heappush(self.arrivals, (timeline.available, next(self._order), key, answer, timeline))

    def _apply(self, key: _Keyframe, answer, latency_ms: float, arrived: float) -> None:
        """An answer (or error) for ``key`` reached the device at ``arrived`` (the clock of key.sent_at)."""
        delay_ms = (arrived - key.sent_at) * 1e3
        ok = isinstance(answer, EdgeAnswer)
        received = answer.received if ok and answer.received else arrived  # its message in hand (a remote edge's)
        self.stats.exchanges.append({"frame": key.index, "capture_s": key.sent_at, "coded_ms": key.coded_ms,
                                     "handed_s": key.handed, "up_bytes": key.request,
                                     "down_bytes": _answer_bytes(answer), "available_s": arrived,
                                     "received_s": received, "ok": ok})
        if ok:  # the answer crossed the network, whatever becomes of it here
            self.stats.downlink_bytes += answer.payload
            self.stats.wire_down_bytes += answer.wire
        if key.state == "abandoned":
            return  # already counted as a timeout
        if key in self.pending:
            self.pending.remove(key)
        if isinstance(answer, Exception):
            self.need_idr = True
            if isinstance(answer, EdgeError) and answer.need_idr:
                self.stats.idr_requests += 1
                self.force_keyframe = True
            else:  # a refusal too: the edge is overloaded, and a device that came straight back would add to it
                self.stats.edge_errors += 1
                self.stats.refusals += isinstance(answer, EdgeError) and answer.refused
                self.backoff_until = self.now() + self.config.retry_after
            return
        self.stats.answers += 1
        if self.auto:
            self.auto.answered(key.sent_at, key.handed, received, arrived, key.request)
            self.rate.set_kbps(self.auto.kbps)
            self.stats.rates.append({"t": arrived - self.first_capture, "budget_kbps": self.auto.kbps,
                                     "estimate_kbps": self.auto.delivery.estimate * 8 / 1e3})
        self.stats.latencies_ms.append(latency_ms)
        self.stats.delays_ms.append(delay_ms)
        if key.state == "superseded" or (self.answered is not None and key.index < self.answered.index):
            self.stats.superseded += 1  # a newer keyframe's answer came first
            return
        within = key.index == self.index - 1 and self.answer_size is None  # answered within its frame, at full size
        key.full_mask = answer.mask if within else None
        key.mask = cv2.resize(answer.mask, self.proc_size[::-1], interpolation=cv2.INTER_NEAREST)
        key.next_levels = answer.next_levels
        if self.answered is not None:  # how well the device carried the previous answer to this keyframe
            measured = agreement(warp(self.answered.mask, self.answered.map, nearest=True),
                                 warp(key.mask, key.map, nearest=True))
            self.stats.agreements.append(measured)
            if self.gate is not None:
                self.gate.update(measured)
        self.answered = key
        for older in [k for k in self.pending if k.index < key.index]:
            older.state = "superseded"
            self.pending.remove(older)

    def _arrive(self, until: float) -> None:
        """Over a link: apply every answer that has reached the device by ``until`` (video time)."""
        while self.arrivals and self.arrivals[0][0] <= until + 1e-9:
            _, _, key, answer, timeline = heapq.heappop(self.arrivals)
            self._apply(key, answer, (timeline.served - timeline.at_edge) * 1e3, timeline.available)

    def _collect(self) -> None:
        now = self.now()
        self._arrive(now)
        while True:
            try:
                key, answer, latency_ms, arrived = self.answers.get_nowait()
            except queue.Empty:
                break
            self._apply(key, answer, latency_ms, arrived)
        for key in [k for k in self.pending if now - k.sent_at > self.config.timeout]:
            key.state = "abandoned"
            self.pending.remove(key)
            self.stats.timeouts += 1
            self.stats.edge_errors += 1
            self.need_idr = True
            self.backoff_until = now + self.config.retry_after

    def _can_offload(self) -> bool:
        self.threads = [t for t in self.threads if t.is_alive()]
        # threads of given-up requests still count: a hanging edge cannot make us start unbounded threads; over a
        # link a keyframe is skipped, as a live sender drops a frame, while the uplink still holds more than a
        # frame interval of earlier ones: no queue grows without bound
        now = self.now()
        return (now >= self.backoff_until and len(self.pending) < self.max_in_flight
                and len(self.threads) < self.max_in_flight + 2
                and (self.link is None or self.link.up.backlog(now) <= 1 / self.config.fps)
                and (self.auto is None
                     or self.auto.may_send(sum(k.request for k in self.pending), self.last_request)))

    # -- frame side --------------------------------------------------------------------------------------

    def _bound(self, index: int) -> float | None:
        """The loss bound asked of STAC keyframe ``index``; None leaves the edge at its table set's B."""
        return self.rate.knob(index, self._most()) if self.rate and self.kind == "stac" else self.config.bound

    def _most(self) -> float | None:
        """--kbps auto: the most bytes a keyframe may take and still be answered within the delay target."""
        return self.auto.most() if self.auto else None

    def _next_levels(self, bound: float | None, frame: np.ndarray) -> np.ndarray:
        a = self.answered
        level = self.tables.level_for(bound) if bound is not None else self.tables.middle_level
        if self.config.selection == "boundary" and a is not None:
            return boundary_levels(frame, self._carried_mask(), self.tables, level)
        if (self.config.selection != "paper" or a is None or a.next_levels is None
                or a.next_levels.shape != self.regions):
            return np.full(self.regions, level, np.uint8)
        return warp_levels(a.next_levels, a.map, (self.height, self.width), self.region_px)

    def process(self, frame: np.ndarray | None) -> FrameResult:
        """One frame (RGB uint8 [H, W, 3], or None for a frame that could not be read) -> its mask."""
        index, self.index = self.index, self.index + 1
        self.captured = time.monotonic()
        if self.first_capture is None:
            self.first_capture = self.now() if self.link else self.captured
        self.stats.frames += 1
        self._collect()
        if frame is None or frame.shape != (self.height, self.width, 3):
            self.stats.bad_frames += 1
            return FrameResult(index, self.last_mask, False, False, 0, float("nan"), self.answered is not None,
                               None)
        small = resize(frame, self.proc_size)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        tracked = self.pending + ([self.answered] if self.answered else [])
        if self.prev_grey is not None:
            flow = self.flow(grey, self.prev_grey)
            for key in tracked:
                key.map = compose(key.map, flow, self.grid)
                key.full_mask = None
        self.prev_grey = grey

        reference = max(tracked, key=lambda k: k.index, default=None)
        quality = float("inf") if reference is None else psnr(warp(reference.pixels, reference.map), small)
        if reference is None or self.force_keyframe:
            keyframe = True
        elif self.config.every:
            keyframe = index - reference.index >= self.config.every
        else:
            keyframe = quality < self.gate_db

        offloaded, sent, levels = False, 0, None
        if keyframe:
            self.stats.keyframes += 1
            if self._can_offload():
                offloaded, sent, levels = True, *self._offload(index, frame, small)
                self.force_keyframe = False
            else:
                self.stats.skipped_offloads += 1
        if self.config.sync or self.link:  # what came back within this frame's time
            self._collect()
        mask, answered = self._mask()
        self.last_mask = mask
        return FrameResult(index, mask, keyframe, offloaded, sent, quality, answered,
                           levels if levels is not None else (self.answered.levels if self.answered else None))

    def _offload(self, index: int, frame: np.ndarray, small: np.ndarray) -> tuple[int, np.ndarray | None]:
        bound = self._bound(index)
        levels = self._next_levels(bound, frame) if self.kind == "stac" else None
        if self.rate and self.kind == "h264":
            step = self.rate.knob(index, self._most())
            self.codec.set_crf(step_crf(step))
        data, stream = self._encode(frame, levels)
        if self.rate:  # the knob it really coded at: the step, or the map's bound (a level's, its geometric mean)
            self.rate.update(index, len(data), step if self.kind == "h264"
                             else float(np.exp(np.log(self.tables.bounds[levels]).mean())))
        key = _Keyframe(index, small, self.grid.copy(), self.now() if self.link else self.captured, levels)
        self.pending.append(key)
        self.stats.offloaded += 1
        self.stats.uplink_bytes += len(data)
        request = request_bytes(exchange(data, self.kind, bound, stream, self.next_levels, (self.height, self.width),
                                         self.answer_size))
        self.stats.wire_up_bytes += request
        coded_s = time.monotonic() - self.captured
        key.request, key.coded_ms = request, coded_s * 1e3
        self.last_request = request
        self.stats.coding_ms.append(key.coded_ms)
        if self.link:
            self._ask_over_link(key, data, bound, stream, request, coded_s)
        elif self.config.sync:
            self._ask(key, data, bound, stream)
        elif self.pipelined:
            self._ask_in_order(key, data, bound, stream)
        else:
            thread = threading.Thread(target=self._ask, args=(key, data, bound, stream), daemon=True)
            self.threads.append(thread)
            thread.start()
        return len(data), levels

    def _encode(self, frame: np.ndarray, levels: np.ndarray | None) -> tuple[bytes, Stream | None]:
        """The keyframe's bytes and, on an inter codec, its place in the stream (an IDR when one is owed)."""
        if levels is not None:
            return self.codec.encode_levels(frame, levels), None
        if self.kind != "h264":
            return self.codec.encode(frame), None
        if self.need_idr:
            self.codec.request_idr()
            self.need_idr = False
        position = self.codec.position
        offsets = boundary_offsets(self._carried_mask()) \
            if self.config.selection == "boundary" and self.answered is not None else None
        data = self.codec.encode_offsets(frame, offsets)
        stream = Stream(self.stream_id, position, is_idr(data))
        self.stats.idrs += stream.start
        return data, stream

    def _carried_mask(self) -> np.ndarray:
        """The newest answer's mask carried to the current frame [H, W] (there must be an answer)."""
        a = self.answered
        if a.full_mask is not None:
            return a.full_mask
        small = warp(a.mask, a.map, nearest=True)
        return cv2.resize(small, (self.width, self.height), interpolation=cv2.INTER_NEAREST)

    def _mask(self) -> tuple[np.ndarray, bool]:
        if self.answered is None:
            self.stats.frames_without_answer += 1
            return np.zeros((self.height, self.width), np.uint8), False
        return self._carried_mask(), True

    @property
    def gate_db(self) -> float:
        """The PSNR gate now: fixed, or following the accuracy target."""
        return self.gate.db if self.gate is not None else self.config.psnr

    def close(self, wait: float = 5.0) -> None:
        """Wait (bounded) for answers still in flight, so the last keyframes count; end the inter codec's stream."""
        deadline = time.monotonic() + wait
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._collect()
        while self.pipelined and self.pending and time.monotonic() < deadline:
            time.sleep(0.005)
            self._collect()
        self._arrive(float("inf"))  # over a link: what arrives after the last frame crossed the network too
        if self.kind == "h264" and self.codec.position and not any(t.is_alive() for t in self.threads) \
                and not (self.pipelined and self.pending):
            try:  # END: the edge may release the stream's decoder now rather than when it goes idle
                self.edge.end(Stream(self.stream_id, self.codec.position, False))
            except Exception:  # the edge releases an idle stream by itself
                pass
