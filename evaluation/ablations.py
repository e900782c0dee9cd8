"""The paper's ablations (Fig. 6-8 and the gate threshold), pooled over the sources.

- levels: the closed-loop STAC sweep (the same bounds) with L in {2, 4, 8, 16, 32} levels spanning the sweep
  set's range, B .. 64 B;
- regions: the same with regions of 1x1 .. 4x4 blocks (the exported head has one region size baked in;
  other sizes are answered by ``AnyRegionEdge``);
- propagation: accuracy of masks carried by flow from a raw keyframe vs the PSNR of the carried frame, and vs
  the frames since the keyframe;
- threshold: the device loop with PSNR gates 20 .. 32 dB at the calibrated bound;
- sensitivity: how well region sensitivities rank what coarsening a region does to the mask
  (``sensitivity.py``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from stac.codec.bitstream import StacFrame, read_stac
from stac.codec.mask import encode_mask, fit
from stac.edge.client import EdgeAnswer, LocalEdge
from stac.flow import Flow, compose, identity_map, processing_size, warp
from stac.select import next_levels
from stac.tables import TableSet, region_grid
from stac.video import psnr, resize

from .clips import Source
from .methods import Context, Gated, Setting, StacClosedLoop
from .run import main_source, stac_settings, sweep
from .scoring import Scorer, accuracy
from .sensitivity import sensitivity_ranking

LEVEL_COUNTS = (2, 4, 8, 16, 32)
REGION_SIZES = (1, 2, 3, 4)
THRESHOLDS = (20, 22, 24, 26, 28, 30, 32)
PROPAGATION_SPAN = 30  # frames carried from each raw keyframe
PROPAGATION_STARTS = 4  # keyframes per clip


class AnyRegionEdge:
    """The local edge for a table set whose region size is not the head graph's.

    The head is given the already dequantized coefficients with one all-ones table, so the region size
    baked into it no longer matters for MASK and GRAD; Algorithm 1 then runs in numpy (``stac.select``, the
    reference the head's own selection is tested against) on the set's own regions.
    """

    ONES = TableSet(np.ones((1, 3, 64)), [1.0], np.ones((3, 64)), 1.0, 1, {"name": "dequantized"})

    def __init__(self, edge: LocalEdge, graph_region_blocks: int):
        self.edge, self.graph_region_blocks = edge, graph_region_blocks
        self.segment_session = edge.segment_session

    def with_tables(self, tables: TableSet) -> "AnyRegionEdge":
        return AnyRegionEdge(self.edge.with_tables(tables), self.graph_region_blocks)

    def segment(self, data: bytes, kind: str, size: tuple[int, int], bound: float | None = None,
                stream=None, levels: bool = True, answer: tuple[int, int] | None = None) -> EdgeAnswer:
        tables = self.edge.tables
        frame = read_stac(data, tables)
        steps = tables.tables[frame.block_levels()].transpose(2, 0, 1, 3)  # [3, Hb, Wb, 64]
        deq = frame.coeffs.astype(np.int32) * steps
        if np.abs(deq).max() > np.iinfo(np.int16).max:
            raise ValueError("dequantized coefficients exceed int16")
        hb, wb = frame.coeffs.shape[1:3]
        zeros = np.zeros(region_grid(hb, wb, self.graph_region_blocks), np.uint8)
        result = self.edge.head.run(StacFrame(deq.astype(np.int16), zeros, frame.height, frame.width, self.ONES),
                                    self.ONES)
        mask = result.mask if answer is None else fit(result.mask, size, answer)
        coded = encode_mask(result.padded_mask if answer is None else mask)  # what the edge would send
        return EdgeAnswer(mask, next_levels(result.grad, tables.steps, tables.bound if bound is None else bound,
                                            tables.region_blocks), len(coded))


def level_ablation(ctx: Context, scorer: Scorer, sources: Sequence[Source], step: int,
                   tick: Callable[[], None]) -> list[dict]:
    points = []
    for count in LEVEL_COUNTS:
        variant = dataclasses.replace(ctx, levels=count, _sweep={})
        found, _ = sweep("codec", [StacClosedLoop(f"L={count}", stac_settings())], variant, scorer, sources, step,
                         tick)
        points += [{**p, "levels_L": count} for p in _pooled(found, sources)]
    return points


def region_ablation(ctx: Context, scorer: Scorer, sources: Sequence[Source], step: int, graph_region_blocks: int,
                    tick: Callable[[], None]) -> list[dict]:
    points = []
    for size in REGION_SIZES:
        edge = ctx.edge if size == graph_region_blocks else AnyRegionEdge(ctx.edge, graph_region_blocks)
        variant = dataclasses.replace(ctx, region_blocks=size, edge=edge, _sweep={})
        found, _ = sweep("codec", [StacClosedLoop(f"{size}x{size} blocks", stac_settings())], variant, scorer,
                         sources, step, tick)
        points += [{**p, "region_blocks": size} for p in _pooled(found, sources)]
    return points


def threshold_ablation(ctx: Context, scorer: Scorer, sources: Sequence[Source],
                       tick: Callable[[], None]) -> list[dict]:
    points = []
    for gate in THRESHOLDS:
        variant = dataclasses.replace(ctx, gate=float(gate))
        found, _ = sweep("system", [Gated("stac", [Setting("scale=1", "stac", 1.0)])], variant, scorer, sources, 1,
                         tick)
        points += [{**p, "psnr_threshold": gate} for p in _pooled(found, sources)]
    return points


def propagation_ablation(ctx: Context, scorer: Scorer, sources: Sequence[Source],
                         tick: Callable[[], None]) -> tuple[list[dict], list[dict]]:
    """Paper Fig. 8: masks of raw keyframes carried 1..PROPAGATION_SPAN frames by the runtime's flow; mIoU of
    the carried masks pooled per 1 dB bin of the carried frame's PSNR against the real one, and per number of
    frames since the keyframe (the propagation ceiling of a fixed keyframe interval)."""
    bins: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    by_distance: dict[int, np.ndarray] = {}
    distance_counts: dict[int, int] = {}
    flow = Flow(ctx.preset)
    for source in sources:
        for clip in source.clips:
            n = len(clip.frames)
            h, w = clip.frames[0].shape[:2]
            size = processing_size(h, w, ctx.flow_width)
            grid = identity_map(*size)
            small = [resize(f, size) for f in clip.frames]
            grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in small]
            starts = range(0, max(1, n - 1), max(1, (n - 1) // PROPAGATION_STARTS))[:PROPAGATION_STARTS]
            for k in starts:
                mask = cv2.resize(scorer.raw_mask(clip, k), size[::-1], interpolation=cv2.INTER_NEAREST)
                to_key = grid.copy()
                for t in range(k + 1, min(n, k + 1 + PROPAGATION_SPAN)):
                    to_key = compose(to_key, flow(grey[t], grey[t - 1]), grid)
                    if clip.labels and t not in clip.labels:
                        continue
                    quality = psnr(warp(small[k], to_key), small[t])
                    carried = cv2.resize(warp(mask, to_key, nearest=True), (w, h), interpolation=cv2.INTER_NEAREST)
                    b = int(np.floor(min(quality, 60.0)))
                    confusion = scorer.confusion(clip, {t: carried})
                    bins[b] = bins.get(b, 0) + confusion
                    counts[b] = counts.get(b, 0) + 1
                    by_distance[t - k] = by_distance.get(t - k, 0) + confusion
                    distance_counts[t - k] = distance_counts.get(t - k, 0) + 1
            tick()
    return ([{"psnr_db": b + 0.5, "frames": counts[b], **accuracy(bins[b])} for b in sorted(bins)],
            [{"frames_since_keyframe": d, "frames": distance_counts[d], **accuracy(by_distance[d])}
             for d in sorted(by_distance)])


def _pooled(points: list[dict], sources: Sequence[Source]) -> list[dict]:
    """The points of all sources together (the one source's, when there is one)."""
    wanted = main_source([s.name for s in sources])
    return [p for p in points if p["source"] == wanted]


def work(ctx: Context, sources: Sequence[Source]) -> int:
    clips = sum(len(s.clips) for s in sources)
    settings = len(stac_settings())
    return clips * (settings * (len(LEVEL_COUNTS) + len(REGION_SIZES)) + len(THRESHOLDS) + 2)


def run_ablations(ctx: Context, scorer: Scorer, sources: Sequence[Source], step: int, graph_region_blocks: int,
                  tick: Callable[[], None] = lambda: None) -> dict:
    by_psnr, by_distance = propagation_ablation(ctx, scorer, sources, tick)
    return {"levels": level_ablation(ctx, scorer, sources, step, tick),
            "regions": region_ablation(ctx, scorer, sources, step, graph_region_blocks, tick),
            "propagation": by_psnr, "propagation_distance": by_distance,
            "sensitivity": sensitivity_ranking(ctx, sources, step, tick=tick),
            "threshold": threshold_ablation(ctx, scorer, sources, tick)}
