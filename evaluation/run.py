"""Sweeps of every method on every source, pooled, compared at equal accuracy (evaluate.py runs the levels)."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from device_runtime.runtime import ROUTE_DEFAULTS, SELECTIONS
from stac.tables import DEFAULT_LEVELS

from .bootstrap import FrameSamples, intervals
from .clips import Source
from .frontier import common_accuracy, curves, rate_at, saving
from .methods import (SWEEP_SPAN, Coded, Context, Gated, Method, Plain, Setting, StacBoundary,
                      StacBoundaryOracle, StacClosedLoop, StacOracle, StacUniform)
from .scoring import Scorer, accuracy

EVAL_SOURCES = ("carphone", "megamind", "vtest")  # disjoint from calibration's (bikes, bigbuckbunny)
LEVELS = ("codec", "system")  # the default run; "realtime" adds the device loop over links, "ablation" Fig. 6-8
SWEPT = ("codec", "system", "realtime")  # the levels whose methods are swept
TARGETS = (0.95, 0.97, 0.98)
COMMON_MARGIN = 0.005
# Sweeps, the same for every clip; every method gets 13-16 settings a similar step apart (a factor 1.3-1.4 in
# B, ~3 in CRF). STAC goes through its knob, the bound of each request, at the L levels of the sweep set
# (methods.SWEEP_SPAN): from the calibrated B, near the top of the accuracy range on most content
# (calibration asks for 0.98 of raw accuracy), up to 64 B.
GRACE_SCALES = tuple(2 ** (k / 2) for k in range(-6, 7))  # 1/8 .. 8: zeroing makes GRACE coarser at one B
JPEG_QUALITIES = (5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 95)
H264_CRFS = tuple(range(13, 50, 3))
# The ideal-link levels (codec, system: paper Table I) code H.264 with x264's medium preset, as before there was a
# real-time device to fit; the real-time level with the preset a device runs (H264Codec's default), every H.264
# method alike.
IDEAL_PRESET = "medium"
# System level: the PSNR gate decides how many keyframes there are, so STAC (on JPEG and on H.264) is swept over
# gates too, from the paper's 26 dB to 38 dB, where every frame of vtest, 95% of carphone's and 55% of
# megamind's are keyframes (the propagation ceiling lifts with them); "h264-keyframes" are fixed schedules,
# every 2nd .. 8th frame. The other gated rows (the paper's and the boundary selection, GRACE, JPEG) keep the
# paper's gate.
GATES = (26.0, 30.0, 34.0, 38.0)
KEYFRAME_INTERVALS = (2, 4, 8)
# Real time: each run is the device loop over a link, so every method gets a sweep of the size the codec level gives
# (13-30 settings): H.264 every frame all its CRFs, each keyframe route REALTIME_GATES x every other knob value
REALTIME_GATES = (26.0, 32.0, 38.0)
REALTIME_CRFS = H264_CRFS[1::2]  # 16 .. 46
# "stac-h264-target": the gate follows an accuracy target instead (RuntimeConfig.target, from the paper's 26 dB)
AGREEMENT_TARGETS = (0.8, 0.85, 0.9, 0.95)
# Savings are computed for each subject present: STAC as shipped (JPEG keyframes) and STAC on the inter codec,
# with x264's own quantizers and with the device's offsets around mask boundaries.
SUBJECTS = ("stac", "stac-h264", "stac-h264-boundary")


def stac_settings(levels: int = DEFAULT_LEVELS, gates: Sequence[float | None] = (None,), every: int = 1) -> list[Setting]:
    """The bounds of the sweep set's levels (B x SWEEP_SPAN^(l / (L - 1))), as multiples of B (every ``every``-th); at
    the system level each at every one of ``gates`` (None: the context's)."""
    scales = [SWEEP_SPAN ** (k / (levels - 1)) for k in range(levels)][::every] if levels > 1 else [1.0]
    return [Setting(_gated(f"scale={s:.3g}", gate), "stac", s, gate=gate) for gate in gates for s in scales]


def _gated(label: str, gate: float | None = None, every: int | None = None, target: float | None = None) -> str:
    return (f"gate={gate:g}," if gate is not None else "") + (f"every={every}," if every else "") + (
        f"target={target:g}," if target is not None else "") + label


def grace_settings() -> list[Setting]:
    return [Setting(f"scale={s:.3g}", f"grace:scale={s:.6g}") for s in GRACE_SCALES]


def jpeg_settings(subsamplings: Sequence[str] = ("420", "444")) -> list[Setting]:
    return [Setting(f"q={q},subsampling={ss}", f"jpeg:q={q},subsampling={ss}") for ss in subsamplings
            for q in JPEG_QUALITIES]


def h264_settings(gates: Sequence[float | None] = (None,), intervals: Sequence[int | None] = (None,),
                  targets: Sequence[float | None] = (None,), crfs: Sequence[int] = H264_CRFS,
                  preset: str | None = IDEAL_PRESET) -> list[Setting]:
    """Every CRF; at the system level at each gate, fixed keyframe interval or accuracy target (None: every frame,
    or the context's gate); ``preset`` x264's (None: the codec's default)."""
    suffix = f",preset={preset}" if preset else ""
    return [Setting(_gated(f"crf={c}", gate, every, target), f"h264:crf={c}{suffix}", gate=gate, every=every,
                    target=target) for gate in gates for every in intervals for target in targets for c in crfs]


def stac_name(selection: str) -> str:
    """`stac` is STAC as shipped (RuntimeConfig's default selection), the savings' subject; the other
    selection is `stac-<selection>`."""
    return "stac" if selection == ROUTE_DEFAULTS["stac"].selection else f"stac-{selection}"


def methods(level: str, ctx: Context, only: Sequence[str] | None = None) -> list[Method]:
    """The compared methods of a level (those named in ``only``, if given); savings are computed for SUBJECTS."""
    return [m for m in _methods(level, ctx) if only is None or m.name in only]


def method_names(levels: Sequence[str], ctx: Context) -> set[str]:
    return {m.name for level in levels if level in SWEPT for m in _methods(level, ctx)}


def _methods(level: str, ctx: Context) -> list[Method]:
    if level == "codec":
        return [Plain("jpeg", jpeg_settings()), Plain("grace", grace_settings()),
                StacUniform(stac_name("uniform"), stac_settings()),
                StacClosedLoop(stac_name("paper"), stac_settings()),
                StacBoundary(stac_name("boundary"), stac_settings()),
                StacOracle("stac-oracle", stac_settings()),
                StacBoundaryOracle("stac-boundary-oracle", stac_settings()),
                Plain("h264", h264_settings())]
    if level == "system":
        shipped = ROUTE_DEFAULTS["stac"].selection
        return [Gated(stac_name(shipped), stac_settings(gates=GATES), shipped),
                Gated("stac-h264", h264_settings(gates=GATES), "uniform"),
                Gated("stac-h264-boundary", h264_settings(gates=GATES), "boundary"),
                Gated("stac-h264-target", h264_settings(targets=AGREEMENT_TARGETS), "uniform"),
                *(Gated(stac_name(s), stac_settings(), s) for s in SELECTIONS if s != shipped),
                Gated("grace", grace_settings()), Gated("jpeg", jpeg_settings(("420",))),
                Gated("h264-keyframes", h264_settings(intervals=KEYFRAME_INTERVALS), "uniform"),
                Plain("h264", h264_settings())]
    if level == "realtime":  # every method through the device loop over the link; H.264 every frame as its loop
        shipped = ROUTE_DEFAULTS["stac"].selection
        inter = h264_settings(gates=REALTIME_GATES, crfs=REALTIME_CRFS, preset=None)
        return [Gated(stac_name(shipped), stac_settings(gates=REALTIME_GATES, every=2), shipped),
                Gated("stac-h264", inter, "uniform"), Gated("stac-h264-boundary", inter, "boundary"),
                Gated("grace", grace_settings()), Gated("jpeg", jpeg_settings(("420",))),
                Gated("h264-keyframes", h264_settings(intervals=KEYFRAME_INTERVALS[:2], crfs=REALTIME_CRFS,
                                                      preset=None), "uniform"),
                Gated("h264", h264_settings(intervals=(1,), preset=None), "uniform")]
    raise ValueError(f"unknown level {level!r} (known: {', '.join(SWEPT)})")


@dataclass
class Tally:
    """A method's totals at one setting over the clips of a source (or of all sources)."""
    bytes: int = 0
    frames: int = 0
    seconds: float = 0.0  # video time the frames span
    offloaded: int = 0
    downlink: int = 0
    wire_up: int = 0
    wire_down: int = 0
    delays_ms: list[float] = field(default_factory=list)
    confusion: np.ndarray | None = None

    def add(self, coded: Coded, fps: float, confusion: np.ndarray) -> None:
        self.bytes += coded.bytes
        self.frames += coded.frames
        self.seconds += coded.frames / fps
        self.offloaded += coded.offloaded
        self.downlink += coded.downlink
        self.wire_up += coded.wire_up
        self.wire_down += coded.wire_down
        self.delays_ms += coded.delays_ms
        self.confusion = confusion.copy() if self.confusion is None else self.confusion + confusion

    def point(self, level: str, method: str, setting: str, source: str, link: str | None = None) -> dict:
        """kbps: the keyframes' bytes (the uplink's payload), downlink_kbps: the answers'; at the system and real-time
        levels also everything each way (up_kbps, down_kbps, their messages included) and total_kbps, both ways;
        over a link the answers' delays and what the device showed at capture time (realtime_miou)."""
        kbps = 8 / 1e3 / self.seconds
        point = {"level": level, "method": method, "setting": setting, "source": source,
                 "bytes": self.bytes, "frames": self.frames, "bytes_per_frame": self.bytes / self.frames,
                 "kbps": self.bytes * kbps, "downlink_kbps": self.downlink * kbps,
                 "offloaded_fps": self.offloaded / self.seconds, **accuracy(self.confusion)}
        if self.wire_up:
            point.update(up_kbps=self.wire_up * kbps, down_kbps=self.wire_down * kbps,
                         total_kbps=(self.wire_up + self.wire_down) * kbps, edge_fps=self.offloaded / self.seconds)
        if link is not None:
            p50, p95, p99 = (float(v) for v in np.percentile(self.delays_ms, (50, 95, 99))) if self.delays_ms \
                else (None, None, None)
            point.update(link=link, realtime_miou=point["miou"], delay_p50_ms=p50, delay_p95_ms=p95, delay_p99_ms=p99)
        return point


def main_source(names: Sequence[str]) -> str:
    """What the headline is about: the pooled results of several sources, else the one source."""
    return "pooled" if len(names) > 1 else names[0]


@dataclass
class Evaluation:
    model: str
    sources: list[str]
    reference: str  # "labels" or "raw" (the model's masks on raw frames)
    points: list[dict] = field(default_factory=list)
    savings: list[dict] = field(default_factory=list)
    timing: list[dict] = field(default_factory=list)  # seconds per source and level
    ablations: dict = field(default_factory=dict)
    realtime: list[dict] = field(default_factory=list)  # the real-time comparison per link (realtime.py)
    stability: dict[str, dict[str, float]] = field(default_factory=dict)  # source -> the model's own flicker
    # codec level: source -> (method, setting) -> each clip's frames, for the bootstrap (not written out)
    samples: dict[str, dict[tuple[str, str], list[FrameSamples]]] = field(default_factory=dict)

    @property
    def main_source(self) -> str:
        return main_source(self.sources)

    def to_json(self) -> dict:
        return {"model": self.model, "sources": self.sources, "reference": self.reference, "points": self.points,
                "savings": self.savings, "realtime": self.realtime, "stability": self.stability,
                "timing": self.timing, "ablations": self.ablations}


def check_levels(levels: Sequence[str]) -> None:
    unknown = set(levels) - {*SWEPT, "ablation"}
    if unknown or not levels:
        raise ValueError(f"unknown level {', '.join(sorted(unknown)) or '(none)'} (known: codec, system, realtime, "
                         f"ablation)")


def sweep(level: str, method_list: Sequence[Method], ctx: Context, scorer: Scorer, sources: Sequence[Source],
          step: int, tick: Callable[[], None] = lambda: None,
          samples: dict[str, dict[tuple[str, str], list[FrameSamples]]] | None = None) -> tuple[list[dict], list[dict]]:
    """Every method at every setting on every clip -> (points per source and pooled over all sources,
    seconds per source). The codec level codes every ``step``-th frame, the system level all of them.
    ``samples`` (codec level) collects each scored frame's bytes and confusion, per source and pooled, for the
    bootstrap."""
    points, timing = [], []
    pooled: dict[tuple[str, str], Tally] = {}
    headline = main_source([s.name for s in sources])
    link = ctx.link if level == "realtime" else None
    for source in sources:
        started = time.perf_counter()
        for method in method_list:
            for setting in method.settings:
                tally = Tally()
                for clip in source.clips:
                    indices = list(range(len(clip.frames))) if level != "codec" else clip.sample(step)
                    scored = clip.scored(indices)
                    coded = method.run(ctx, clip, indices, set(scored), setting)
                    per_frame = np.stack([scorer.confusion(clip, {i: coded.masks[i]}) for i in scored])
                    confusion = per_frame.sum(axis=0)
                    if samples is not None:
                        frames = FrameSamples(clip.fps, np.array([coded.sizes[indices.index(i)] for i in scored]),
                                              per_frame)
                        for name in {source.name, headline}:
                            samples.setdefault(name, {}).setdefault((method.name, setting.label), []).append(frames)
                    tally.add(coded, clip.fps, confusion)
                    pooled.setdefault((method.name, setting.label), Tally()).add(coded, clip.fps, confusion)
                    tick()
                points.append(tally.point(level, method.name, setting.label, source.name, link))
        timing.append({"level": level, "source": source.name, "seconds": time.perf_counter() - started,
                       **({"link": link} if link else {})})
    if headline == "pooled":
        points += [tally.point(level, method, setting, "pooled", link) for (method, setting), tally in pooled.items()]
    return points, timing


def compare(evaluation: Evaluation, targets: Sequence[float], rate_key: str = "kbps") -> None:
    """Savings of each subject (SUBJECTS) against every other method at each level, source and accuracy target.
    When some method never reaches the lowest target (the PSNR-gated ones are capped by propagation), the
    methods are also compared COMMON_MARGIN below the highest accuracy every method reaches, so each level has a
    like-for-like row; at the cap itself +-0.002 of noise in mIoU would decide the rates. Codec-level savings
    of `stac` get a frame-bootstrap interval (`bootstrap.py`)."""
    for level, source in dict.fromkeys((p["level"], p["source"]) for p in evaluation.points
                                       if p["level"] != "realtime"):  # compared by realtime.py
        groups = curves((p for p in evaluation.points if p["level"] == level and p["source"] == source), rate_key)
        common = common_accuracy(groups, COMMON_MARGIN)
        compared = sorted({*targets, common} if common < min(targets) else set(targets))
        for subject in (m for m in SUBJECTS if m in groups):
            spread = intervals(evaluation.samples[source], compared) \
                if level == "codec" and subject == "stac" and evaluation.samples else {}
            for target in compared:
                mine = rate_at(groups[subject], target)
                for method, points in groups.items():
                    if method == subject:
                        continue
                    other = rate_at(points, target)
                    interval = spread.get((method, target), {})
                    evaluation.savings.append({
                        "level": level, "source": source, "target": target, "subject": subject, "method": method,
                        "rate_subject": mine.rate, "rate_other": other.rate, "status_subject": mine.status,
                        "status_other": other.status, "saving": saving(mine.rate, other.rate),
                        "saving_low": interval.get("low"), "saving_high": interval.get("high"),
                        "reached": interval.get("reached")})
