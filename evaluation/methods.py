"""Every compared method behind one interface: a sweep of settings, and `run` coding a clip at one of them.

Codec level (paper Fig. 5): each listed frame is coded and segmented at the edge on its own (H.264 as one
IPPP stream over them). System level (paper Table I): the real device loop (`Runtime`, synchronous) with
the PSNR gate (or a fixed interval) deciding which frames are offloaded, their keyframes coded frame by frame
(STAC, GRACE, JPEG) or as one inter-coded stream (H.264), or, for H.264 as the paper runs it, every frame
streamed and segmented. Real time: the same device loop over a link (`Context.link`, stac.link), each mask the
one the device shows at its frame's capture time, H.264 every frame included (the loop with a keyframe every
frame). The edge is the deployed one, in process: STAC bitstreams go through the STAC head (its MASK and
NEXT_LEVELS), every other stream is decoded and run through the SEGMENT graph; every answer is coded as the edge
codes it (stac.codec.mask) and counted.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import cv2
import numpy as np

from device_runtime.runtime import PAPER_GATE_DB, Runtime, RuntimeConfig
from stac.codec import StacCodec, make_codec
from stac.codec.mask import encode_mask
from stac.allocate import boundary_levels
from stac.edge.client import EdgeAnswer, LocalEdge
from stac.flow import Flow, compose, identity_map, processing_size, warp, warp_levels
from stac.tables import BLOCK, TableSet
from stac.video import resize

from .clips import Clip


@dataclass
class Setting:
    label: str  # what the results call it, equal across clips so they can be pooled
    spec: str  # codec spec (make_codec), given the context's table set
    scale: float | None = None  # STAC: the knob (RuntimeConfig.bound) at this multiple of B; None: no bound sent
    gate: float | None = None  # system level: this PSNR gate (dB) instead of the context's
    every: int | None = None  # system level: a keyframe every this many frames instead of the PSNR gate
    target: float | None = None  # system level: the gate follows this agreement of carried masks (stac.gate)


@dataclass
class Coded:
    """What one method sent for one clip at one setting, and the masks the user got."""
    bytes: int  # the keyframes' bytes (bitstreams with their headers and level maps)
    frames: int  # frames the rate is spread over: coded frames (codec level), all frames (system level)
    offloaded: int
    masks: dict[int, np.ndarray]  # scored frame index -> class ids [H, W]
    sizes: list[int] = field(default_factory=list)  # bytes of each offloaded frame, in order
    downlink: int = 0  # the answers' bytes (coded masks, and next levels where asked for)
    wire_up: int = 0  # device loop: everything that crossed the network each way (stac.edge.wire)
    wire_down: int = 0
    delays_ms: list[float] = field(default_factory=list)  # over a link: capture to answer available


# STAC at one level everywhere is swept through its knob, the loss bound of each request, over a set of the
# calibrated gradients whose levels run from B to SWEEP_SPAN x B: on the evaluation clips the calibrated set's
# coarsest level (11 B) still keeps mIoU 0.98. The paper's selection cannot be steered that way (its costs sit
# far below B / r_max, so nearly every region takes the set's coarsest level whatever the bound): it is swept
# the way the paper sets its rate, over sets calibrated around each bound (`Context.centred`).
SWEEP_SPAN = 64.0


# Real time: what the device and the edge take per keyframe, the same in every run (so runs are deterministic). The
# device's, from capture to the keyframe's bytes (flow, gate, encode): stac-runtime --link lte measured a median of
# 3.5 ms on carphone and 20.7 ms (H.264 route) / 17.9 ms (STAC) on megamind at 720x528 on the 2-core machine, so
# 10 ms stands for a laptop-class device at these sizes; the edge's, a GPU edge: on an H200 SEGMENT took
# 9.9 ms and the STAC head 21.8 ms at 2048x1024 (docs/edge.md), so 25 ms for decoding and segmenting a frame and
# 2.2 times that for the head.
DEVICE_MS = 10.0
EDGE_MS = {"stac": 55.0, "jpeg": 25.0, "h264": 25.0}


@dataclass
class Context:
    """The edge, the calibrated table set, and the device's settings shared by every method."""
    edge: LocalEdge
    tables: TableSet
    gate: float = PAPER_GATE_DB  # dB
    flow_width: int = RuntimeConfig.flow_width
    preset: str = RuntimeConfig.preset
    levels: int | None = None  # ablations: another number of levels
    region_blocks: int | None = None  # ablations: another region size
    link: str | None = None  # real time over this link (stac.link); None: every answer at once (--sync)
    device_ms: float = DEVICE_MS
    edge_ms: float | None = None  # one edge time for every route (None: EDGE_MS)
    max_in_flight: int = RuntimeConfig.max_in_flight
    _sweep: dict = field(default_factory=dict)

    def _rebuilt(self, bound: float, span: float, fraction: float) -> TableSet:
        """The calibrated gradients at ``bound`` with L levels (the ablation's, or the calibrated set's, and its
        region size) spanning a factor ``span`` of bounds, the bound's level ``fraction`` of the way up."""
        t = self.tables
        levels, region_blocks = self.levels or t.levels, self.region_blocks or t.region_blocks
        key = (bound, span, fraction, levels, region_blocks)
        if key not in self._sweep:
            ratio = span ** (1 / (levels - 1)) if levels > 1 else 1.0
            self._sweep[key] = TableSet.from_gradients(t.gradients, bound, t.num_coeffs, t.model, levels=levels,
                                                       ratio=ratio, start=round(fraction * (levels - 1)),
                                                       magnitudes=t.magnitudes, region_blocks=region_blocks)
        return self._sweep[key]

    def sweep_tables(self) -> TableSet:
        """The set STAC is swept over: L levels from B to SWEEP_SPAN B."""
        return self._rebuilt(self.tables.bound, SWEEP_SPAN, 0.0)

    def centred(self, scale: float) -> TableSet:
        """The calibrated set rebuilt at bound B x scale: same span of bounds around it, B's level as far up the
        range."""
        t = self.tables
        span = t.bounds[-1] / t.bounds[0] if t.levels > 1 else 2 ** 0.25
        return self._rebuilt(t.bound * scale, float(span), t.middle_level / max(t.levels - 1, 1))

    def operating_point(self, setting: "Setting", centred: bool) -> tuple[TableSet, float | None]:
        """(table set, bound each request asks for) of a setting: the knob at B x scale over the sweep set, or,
        ``centred``, the set calibrated around B x scale and its own B. No scale (a baseline codec): the sweep
        set, whose B is the calibrated one, and no bound sent."""
        if centred:
            return self.centred(1.0 if setting.scale is None else setting.scale), None
        tables = self.sweep_tables()
        return tables, None if setting.scale is None else tables.bound * setting.scale


class Method(ABC):
    name: str

    def __init__(self, name: str, settings: list[Setting]):
        self.name, self.settings = name, settings

    @abstractmethod
    def run(self, ctx: Context, clip: Clip, indices: list[int], scored: set[int], setting: Setting) -> Coded:
        """Code ``indices`` of the clip (all frames at the system level); masks for ``scored``."""


class Plain(Method):
    """A baseline codec (JPEG, GRACE, H.264): every listed frame encoded, decoded and segmented at the edge."""

    def run(self, ctx, clip, indices, scored, setting):
        codec = make_codec(setting.spec, ctx.sweep_tables())
        codec.reset()
        sizes, masks, down = [], {}, 0
        for i in indices:
            data = codec.encode(clip.frames[i])
            sizes.append(len(data))
            mask = ctx.edge.segment_session.run(codec.decode(data))
            down += len(encode_mask(mask))
            if i in scored:
                masks[i] = mask
        return Coded(sum(sizes), len(indices), len(indices), masks, sizes, down)


class Stac(Method):
    """STAC bitstreams answered by the STAC head at the setting's operating point (``Context.operating_point``);
    subclasses choose each frame's level map (at one level everywhere: the level of the bound)."""

    centred = False  # swept over sets calibrated around each bound instead of the knob
    closed_loop = False  # the next frame's levels come from the answer's NEXT_LEVELS (which it then carries)

    def run(self, ctx, clip, indices, scored, setting):
        h, w = clip.frames[0].shape[:2]
        tables, bound = ctx.operating_point(setting, self.centred)
        codec = StacCodec(tables, None if bound is None else tables.level_for(bound))
        edge = ctx.edge.with_tables(tables)
        sizes, masks, previous, down = [], {}, None, 0
        for i in indices:
            frame = clip.frames[i]
            levels = self.levels(ctx, codec, edge, clip, i, previous, bound)
            data = codec.encode_levels(frame, levels)
            answer = edge.segment(data, "stac", (h, w), bound, levels=self.closed_loop)
            sizes.append(len(data))
            down += answer.payload
            if i in scored:
                masks[i] = answer.mask
            previous = (i, answer)
        return Coded(sum(sizes), len(indices), len(indices), masks, sizes, down)

    def levels(self, ctx: Context, codec: StacCodec, edge: LocalEdge, clip: Clip, index: int,
               previous: tuple[int, EdgeAnswer] | None, bound: float | None) -> np.ndarray:
        """The level map [Rh, Rw] of frame ``index``; ``previous``: the last coded frame and the edge's answer."""
        return codec.uniform_levels(*clip.frames[index].shape[:2])


class StacUniform(Stac):
    """One level everywhere (`--selection uniform`, as shipped): the gradient-shaped tables without spatial
    adaptation."""


class StacClosedLoop(Stac):
    """The paper's closed loop (`--selection paper`): frame k coded with the level map the head returned for
    the previous coded frame, carried to frame k by DIS flow; the first frame at one level (Algorithm 2)."""

    centred = True
    closed_loop = True

    def levels(self, ctx, codec, edge, clip, index, previous, bound):
        if previous is None:
            return codec.uniform_levels(*clip.frames[index].shape[:2])
        prev_index, answer = previous
        frame = clip.frames[index]
        return warp_levels(answer.next_levels, flow_map(clip.frames[prev_index], frame, ctx), frame.shape[:2],
                           codec.tables.region_blocks * BLOCK)


class StacOracle(Stac):
    """Levels from the head on the same frame (coded once at one level to ask): an upper bound of
    what the head's levels can give, since no deployed device has them. Only the final coding is counted."""

    centred = True

    def levels(self, ctx, codec, edge, clip, index, previous, bound):
        frame = clip.frames[index]
        probe = codec.encode_levels(frame, codec.uniform_levels(*frame.shape[:2]))
        return edge.segment(probe, "stac", frame.shape[:2], bound).next_levels


class StacBoundary(Stac):
    """The device's rate-aware map around mask boundaries (`--selection boundary`, stac.allocate): frame k's mask
    is the edge's mask of the previous coded frame carried to frame k by DIS flow; the first frame at one level."""

    def levels(self, ctx, codec, edge, clip, index, previous, bound):
        frame = clip.frames[index]
        if previous is None:
            return codec.uniform_levels(*frame.shape[:2])
        prev_index, answer = previous
        h, w = frame.shape[:2]
        carried = warp(cv2.resize(answer.mask, processing_size(h, w, ctx.flow_width)[::-1],
                                  interpolation=cv2.INTER_NEAREST),
                       flow_map(clip.frames[prev_index], frame, ctx), nearest=True)
        return boundary_levels(frame, cv2.resize(carried, (w, h), interpolation=cv2.INTER_NEAREST), codec.tables,
                               codec.level)


class StacBoundaryOracle(Stac):
    """`stac-boundary` with the edge's mask of the same frame (coded once at one level to ask; only the final
    coding counted): what the allocation gives when the mask it relies on is not carried from an older frame.
    The gap to `stac-boundary` is what closing the loop could win."""

    def levels(self, ctx, codec, edge, clip, index, previous, bound):
        frame = clip.frames[index]
        probe = codec.encode_levels(frame, codec.uniform_levels(*frame.shape[:2]))
        return boundary_levels(frame, edge.segment(probe, "stac", frame.shape[:2], bound).mask, codec.tables,
                               codec.level)


def flow_map(previous: np.ndarray, frame: np.ndarray, ctx: Context) -> np.ndarray:
    """``frame``'s pixels -> their positions in ``previous`` at the processing size, by DIS flow as the runtime
    computes it."""
    h, w = frame.shape[:2]
    size = processing_size(h, w, ctx.flow_width)
    grey = [cv2.cvtColor(resize(f, size), cv2.COLOR_RGB2GRAY) for f in (frame, previous)]
    grid = identity_map(*size)
    return compose(grid, Flow(ctx.preset)(*grey), grid)


class Gated(Method):
    """The device loop (paper Algorithm 2) with the PSNR gate (the setting's, else the context's; following the
    setting's accuracy target if it has one) or the setting's fixed interval, answers waited for (--sync); STAC
    and H.264 keyframes shaped by ``selection`` (RuntimeConfig.selection; None: the codec's default)."""

    def __init__(self, name: str, settings: list[Setting], selection: str | None = None):
        super().__init__(name, settings)
        self.selection = selection

    def run(self, ctx, clip, indices, scored, setting):
        tables, bound = ctx.operating_point(setting, self.selection == "paper")
        route = make_codec(setting.spec, tables).route
        timing = dict(link=ctx.link, device_ms=ctx.device_ms, edge_ms=ctx.edge_ms if ctx.edge_ms is not None
                      else EDGE_MS[route]) if ctx.link else dict(sync=True)
        config = RuntimeConfig(psnr=setting.gate or ctx.gate, every=setting.every, target=setting.target,
                               codec=setting.spec, selection=self.selection, bound=bound, flow_width=ctx.flow_width,
                               preset=ctx.preset, fps=clip.fps, max_in_flight=ctx.max_in_flight, **timing)
        runtime = Runtime(ctx.edge.with_tables(tables), tables, clip.frames[0].shape[:2], config)
        sizes, masks = [], {}
        for i in indices:
            result = runtime.process(clip.frames[i])
            if result.offloaded:
                sizes.append(result.sent_bytes)
            if i in scored:
                masks[i] = result.mask
        runtime.close()
        stats = runtime.stats
        if stats.edge_errors:
            raise RuntimeError(f"{self.name} {setting.label} on {clip.name}: {stats.edge_errors} edge errors")
        return Coded(stats.uplink_bytes, len(indices), stats.offloaded, masks, sizes, stats.downlink_bytes,
                     stats.wire_up_bytes, stats.wire_down_bytes, stats.delays_ms if ctx.link else [])
