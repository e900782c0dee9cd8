"""Every compared method behind one interface: a sweep of settings, and `run` coding a clip at one of them.

Codec level (paper Fig. 5): each listed frame is coded and segmented at the edge on its own (H.264 as one
IPPP stream over them). System level (paper Table I): the real device loop (`Runtime`, synchronous) with
the PSNR gate deciding which frames are offloaded, or, for H.264 as the paper runs it, every frame
streamed and segmented. The edge is the deployed one, in process: STAC bitstreams go through the
STAC head (its MASK and NEXT_LEVELS), every other stream is decoded and run through the SEGMENT graph.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import cv2
import numpy as np

from device_runtime.edge import LocalEdge
from device_runtime.runtime import Runtime, RuntimeConfig
from stac.codec import StacCodec, make_codec
from stac.flow import Flow, compose, identity_map, processing_size, warp_levels
from stac.tables import BLOCK, TableSet

from .clips import Clip


@dataclass
class Setting:
    label: str  # what the results call it, equal across clips so they can be pooled
    spec: str  # codec spec (make_codec), coded with the table set scaled by ``scale``
    scale: float = 1.0  # loss bound B x scale


@dataclass
class Coded:
    """What one method sent for one clip at one setting, and the masks the user got."""
    bytes: int  # everything that crossed the network (bitstreams with their headers and level maps)
    frames: int  # frames the rate is spread over: coded frames (codec level), all frames (system level)
    offloaded: int
    masks: dict[int, np.ndarray]  # scored frame index -> class ids [H, W]
    sizes: list[int] = field(default_factory=list)  # bytes of each offloaded frame, in order


@dataclass
class Context:
    """The edge, the calibrated table set, and the device's settings shared by every method."""
    edge: LocalEdge
    tables: TableSet
    gate: float = 26.0  # dB
    flow_width: int = 512
    preset: str = "ultrafast"
    levels: int | None = None  # ablations: another number of levels spanning the same range of bounds
    region_blocks: int | None = None  # ablations: another region size
    _scaled: dict = field(default_factory=dict)

    def scaled(self, scale: float) -> TableSet:
        """The calibrated set rebuilt at bound B x scale (same level spacing, B at the same level)."""
        t = self.tables
        levels = self.levels or t.levels
        region_blocks = self.region_blocks or t.region_blocks
        key = (scale, levels, region_blocks)
        if key == (1.0, t.levels, t.region_blocks):
            return t
        if key not in self._scaled:
            span = t.bounds[-1] / t.bounds[0] if t.levels > 1 else 2 ** 0.25
            ratio = span ** (1 / (levels - 1)) if levels > 1 else 1.0
            start = round(t.middle_level * (levels - 1) / max(t.levels - 1, 1))  # B as far up the range
            self._scaled[key] = TableSet.from_gradients(t.gradients, t.bound * scale, t.num_coeffs, t.model,
                                                        levels=levels, ratio=ratio, start=start,
                                                        magnitudes=t.magnitudes, region_blocks=region_blocks)
        return self._scaled[key]


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
        codec = make_codec(setting.spec, ctx.scaled(setting.scale))
        codec.reset()
        sizes, masks = [], {}
        for i in indices:
            data = codec.encode(clip.frames[i])
            sizes.append(len(data))
            decoded = codec.decode(data)
            if i in scored:
                masks[i] = ctx.edge.segment_session.run(decoded)
        return Coded(sum(sizes), len(indices), len(indices), masks, sizes)


class Stac(Method):
    """STAC bitstreams answered by the STAC head; subclasses choose each frame's level map."""

    def run(self, ctx, clip, indices, scored, setting):
        tables = ctx.scaled(setting.scale)
        codec, edge = StacCodec(tables), ctx.edge.with_tables(tables)
        h, w = clip.frames[0].shape[:2]
        sizes, masks, previous = [], {}, None
        for i in indices:
            frame = clip.frames[i]
            levels = self.levels(ctx, codec, edge, clip, i, previous)
            data = codec.encode_levels(frame, levels)
            answer = edge.segment(data, "stac", (h, w))
            sizes.append(len(data))
            if i in scored:
                masks[i] = answer.mask
            previous = (i, answer.next_levels)
        return Coded(sum(sizes), len(indices), len(indices), masks, sizes)

    def levels(self, ctx: Context, codec: StacCodec, edge: LocalEdge, clip: Clip, index: int,
               previous: tuple[int, np.ndarray] | None) -> np.ndarray:
        return codec.uniform_levels(*clip.frames[index].shape[:2])


class StacUniform(Stac):
    """B's level everywhere (`--selection uniform`, as shipped): the gradient-shaped tables without spatial
    adaptation."""


class StacClosedLoop(Stac):
    """The paper's closed loop (`--selection paper`): frame k coded with the level map the head returned for
    the previous coded frame, carried to frame k by DIS flow; the first frame at B's level (Algorithm 2)."""

    def levels(self, ctx, codec, edge, clip, index, previous):
        if previous is None:
            return codec.uniform_levels(*clip.frames[index].shape[:2])
        prev_index, next_levels = previous
        return carry_levels(next_levels, clip.frames[prev_index], clip.frames[index], codec.tables.region_blocks,
                            ctx.flow_width, ctx.preset)


class StacOracle(Stac):
    """Levels from the head on the same frame (coded once at B's level to ask): an upper bound of
    what the head's levels can give, since no deployed device has them. Only the final coding is counted."""

    def levels(self, ctx, codec, edge, clip, index, previous):
        frame = clip.frames[index]
        probe = codec.encode_levels(frame, codec.uniform_levels(*frame.shape[:2]))
        return edge.segment(probe, "stac", frame.shape[:2]).next_levels


def carry_levels(levels: np.ndarray, previous: np.ndarray, frame: np.ndarray, region_blocks: int,
                 flow_width: int, preset: str) -> np.ndarray:
    """The previous frame's level map [Rh, Rw] seen from ``frame`` through DIS flow, as the runtime does."""
    h, w = frame.shape[:2]
    size = processing_size(w, h, flow_width)
    grey = [cv2.cvtColor(cv2.resize(f, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
            for f in (frame, previous)]
    grid = identity_map(size[1], size[0])
    return warp_levels(levels, compose(grid, Flow(preset)(*grey), grid), (h, w), region_blocks * BLOCK)


class Gated(Method):
    """The device loop (paper Algorithm 2) with the PSNR gate, answers waited for (--sync); STAC keyframes'
    level maps by ``selection`` (RuntimeConfig.selection)."""

    def __init__(self, name: str, settings: list[Setting], selection: str = RuntimeConfig.selection):
        super().__init__(name, settings)
        self.selection = selection

    def run(self, ctx, clip, indices, scored, setting):
        tables = ctx.scaled(setting.scale)
        config = RuntimeConfig(psnr=ctx.gate, sync=True, codec=setting.spec, selection=self.selection,
                               flow_width=ctx.flow_width, preset=ctx.preset)
        runtime = Runtime(ctx.edge.with_tables(tables), tables, clip.frames[0].shape[:2], config)
        sizes, masks = [], {}
        for i in indices:
            result = runtime.process(clip.frames[i])
            if result.offloaded:
                sizes.append(result.sent_bytes)
            if i in scored:
                masks[i] = result.mask
        runtime.close()
        if runtime.stats.edge_errors:
            raise RuntimeError(f"{self.name} {setting.label} on {clip.name}: {runtime.stats.edge_errors} edge errors")
        return Coded(runtime.stats.uplink_bytes, len(indices), runtime.stats.offloaded, masks, sizes)
