"""How well a region sensitivity predicts what coarsening a region does to the mask (issue 11, item 3).

For each scored frame: code it at one level everywhere (the sweep set's level of B x BASE_SCALE), ask the
head for its mask and gradient, code it again COARSER levels coarser and segment that. What happens: per
region, the share of mask pixels that change, counted over the region grown by MARGIN pixels (a region's
coefficients reach beyond it through the network's receptive field). What each candidate predicts, from
the first coding only:

- ``paper``: Algorithm 1's cost at the coarser level, sum |g| q'/2 (the head's REGION_COST);
- ``first-order step``: the cost of the step itself, sum |g| (q' - q)/2;
- ``second-order``: the expected squared loss change under uniform quantization noise, sum g^2 (q'^2 - q^2)/12;
- ``mask boundary``: no gradient at all, the mask's boundary pixels in the grown region.

Reported: Spearman's rank correlation of each with what happened, per frame (frames where nothing changed
are skipped), averaged over frames and sources.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from stac.allocate import boundary, grown_region_sums
from stac.codec import StacCodec, read_stac
from stac.select import region_cost
from stac.tables import BLOCK

from .clips import Source
from .methods import Context

BASE_SCALE = 8.0  # mid-range of the sweep: mIoU 0.97-0.99 on the evaluation clips
COARSER = 3  # levels: the bound x 2.3
MARGIN = 12  # px around each region where its mask change is counted
CANDIDATES = ("paper", "first-order step", "second-order", "mask boundary")


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of a 1-D array, ties sharing their mean rank."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=r) / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation; None when either side is constant."""
    ra, rb = ranks(np.ravel(a)), ranks(np.ravel(b))
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def predictions(grad: np.ndarray, mask: np.ndarray, q: np.ndarray, q_coarse: np.ndarray, region_blocks: int,
                regions: tuple[int, int]) -> dict[str, np.ndarray]:
    """Every candidate's [Rh, Rw] from the gradient [3, Hb, Wb, 64], the mask [H, W] and the two levels' steps
    [3, 64]."""
    first = region_cost(grad, np.stack([q_coarse, q_coarse - q]), region_blocks)  # sum |g| t / 2
    second = region_cost(np.square(grad, dtype=np.float64), (q_coarse ** 2 - q ** 2)[None] / 6, region_blocks)
    out = {"paper": first[..., 0], "first-order step": first[..., 1], "second-order": second[..., 0]}
    out["mask boundary"] = grown_region_sums(boundary(mask), regions, region_blocks * BLOCK, MARGIN)
    return out


def sensitivity_ranking(ctx: Context, sources: Sequence[Source], step: int, frames_per_clip: int = 8,
                        tick: Callable[[], None] = lambda: None) -> list[dict]:
    """[{candidate, spearman (mean over frames), frames}], plus what was compared (levels, margin)."""
    tables = ctx.sweep_tables()
    base = tables.level_for(tables.bound * BASE_SCALE)
    coarse = min(base + COARSER, tables.levels - 1)
    steps = tables.tables.astype(np.float64)
    found: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    head = ctx.edge.head
    for source in sources:
        for clip in source.clips:
            for i in clip.sample(step)[:frames_per_clip]:
                frame = clip.frames[i]
                fine = head.run(read_stac(StacCodec(tables, base).encode(frame), tables), tables)
                coarse_mask = head.run(read_stac(StacCodec(tables, coarse).encode(frame), tables), tables).mask
                regions = fine.next_levels.shape
                changed = grown_region_sums(fine.mask != coarse_mask, regions, tables.region_blocks * BLOCK, MARGIN)
                for name, predicted in predictions(fine.grad, fine.mask, steps[base], steps[coarse],
                                                   tables.region_blocks, regions).items():
                    rho = spearman(predicted, changed)
                    if rho is not None:
                        found[name].append(rho)
            tick()
    return [{"candidate": name, "spearman": float(np.mean(v)) if v else None, "frames": len(v),
             "base_level": base, "coarser_level": coarse, "margin_px": MARGIN} for name, v in found.items()]
