"""Rate-aware level maps on the device (`--selection boundary`): the cheapest map, by the device's own rate
estimate, whose predicted mask change stays within what one level everywhere would risk.

Sensitivity: where the mask can change. Measured on the evaluation clips (`stac-bench eval --levels
ablation`, region sensitivity), the boundary pixels of the mask rank regions by the mask change coarsening
brings far better (Spearman 0.94) than the gradient costs of the paper (0.43). The device holds a
mask for the frame it is about to code (the newest answer carried by flow), so it needs nothing more from the
edge. A region's sensitivity is its boundary pixel count over the region grown by MARGIN px, floored at FLOOR
x the mean so that regions without a boundary still count; its predicted change at level l is
sensitivity x B_l (first order in the bound).

Rate: sum log2(1 + |s| / q_l) over the region's coefficients s (the device holds them), which tracks the
coded bytes closely. Selection: the multiple-choice knapsack min sum rate s.t. sum change <= the uniform map's,
by Lagrangian relaxation (bisection on the multiplier), each region within STEP levels of the uniform level.

The same sensitivity shapes an inter-coded keyframe (`--codec h264 --selection boundary`) through a quantizer
offset per 16x16 macroblock (`boundary_offsets`): macroblocks with no mask boundary within MARGIN px are coded
COARSER_QP coarser than x264's own choice, the rest as x264 chooses. Finer quantizers at the boundaries, and the
closed form of the allocation problem under a log rate model, did not pay there (below).
"""
from __future__ import annotations

import cv2
import numpy as np

from .codec.h264 import MACROBLOCK, macroblocks
from .codec.transform import dct_quantize
from .tables import BLOCK, TableSet, blocks_for, region_grid, region_sums

# Chosen on the calibration clips (bikes, bigbuckbunny, codec level, 20 frames 4 apart each), by the mean saving
# over one level everywhere at mIoU 0.95 / 0.97 / 0.98, among (FLOOR, STEP, MARGIN) = (0.1, 3, 12) -4.9%,
# (0.3, 3, 12) -1.4%, (0.03, 3, 12) -6.1%, (0.1, 5, 12) +5.6%, (0.1, 2, 12) -7.3%, (0.1, 3, 24) -6.0%,
# (0.03, 2, 12) -5.3%, (0.1, 2, 24) -9.3%, (0.03, 2, 24) -9.5% (-6.3 / -11.0 / -11.1%).
MARGIN = 24  # px: a region's coefficients reach beyond it through the network's receptive field
FLOOR = 0.03  # x mean sensitivity: a region without a boundary in the carried mask may still gain one
STEP = 2  # levels either side of the uniform level
BISECTIONS = 40
# Chosen on the calibration clips (bikes, bigbuckbunny, 120 frames each, system level, gate 38 dB, CRF 28-40), by
# the change in Kbps at mIoU 0.96 / 0.97 / 0.98 against no offsets (Gated runs, pooled):
# - coarser by 4 QP where no boundary is near: -22 (the cheapest CRF already reached it) / -15 / -3%; by 8 QP:
#   +7 / -1% / unreached;
# - sparing the foreground as well (class > 0 near), 4 / 6 / 8 / 12 QP: -9 / -14 / -6, -1 / -7 / -14,
#   -2 / -10 / -10, 0 / -10 / +1%; margin 8 or 48 px instead of 24 (8 QP): -9 / -8 / -10, -6 / -12 / -6%;
# - finer at the boundaries too (-2 QP with +8, -1 with +6): -2 / -8 / +2, +3 / -9 / -6%;
# - offsets -2 log2(sensitivity / its geometric mean), within 4 QP: +3 / -4 / +4%; -6 log2 (the log rate model's
#   optimum), within 12 QP: +31 / +43 / +38% at 0.95 / 0.97 / 0.98 (`stac-bench eval bikes bigbuckbunny --levels
#   system --methods stac-h264,stac-h264-boundary`).
# The first needs no notion of foreground, so it serves any model's classes.
COARSER_QP = 4.0


def grown_region_sums(pixels: np.ndarray, regions: tuple[int, int], region_px: int, margin: int = MARGIN
                      ) -> np.ndarray:
    """Pixels set in a bool map [H, W] within each region grown by ``margin`` px -> int [Rh, Rw]."""
    h, w = pixels.shape
    integral = cv2.integral(np.ascontiguousarray(pixels, np.uint8), sdepth=cv2.CV_32S)  # 60x a float64 one at 2 MP
    y0 = np.clip(np.arange(regions[0]) * region_px - margin, 0, h)
    y1 = np.clip((np.arange(regions[0]) + 1) * region_px + margin, 0, h)
    x0 = np.clip(np.arange(regions[1]) * region_px - margin, 0, w)
    x1 = np.clip((np.arange(regions[1]) + 1) * region_px + margin, 0, w)
    return (integral[y1][:, x1] - integral[y0][:, x1] - integral[y1][:, x0] + integral[y0][:, x0])


def boundary(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels whose 3x3 neighbourhood holds another class."""
    return cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0


def region_sensitivity(mask: np.ndarray, regions: tuple[int, int], region_px: int) -> np.ndarray:
    """Mask class ids [H, W] -> float [Rh, Rw]: boundary pixels near each region, floored at FLOOR x the mean."""
    counts = grown_region_sums(boundary(mask), regions, region_px)
    return np.maximum(counts, FLOOR * max(counts.mean(), 1.0))


def region_rate(coeffs: np.ndarray, tables: np.ndarray, region_blocks: int) -> np.ndarray:
    """Unquantized coefficients [3, Hb, Wb, 64] and steps [L, 3, 64] -> estimated bits [Rh, Rw, L]."""
    _, hb, wb, _ = coeffs.shape
    magnitude = np.abs(coeffs.astype(np.float32)).transpose(1, 2, 0, 3).reshape(hb, wb, 1, 192)
    bits = np.log2(1 + magnitude / tables.reshape(1, 1, -1, 192).astype(np.float32)).sum(axis=-1)  # [Hb, Wb, L]
    return region_sums(bits, region_blocks)


def allocate(rate: np.ndarray, sensitivity: np.ndarray, bounds: np.ndarray, level: int, step: int = STEP
             ) -> np.ndarray:
    """The level map uint8 [Rh, Rw] of least estimated rate whose predicted change sum(sensitivity x B_l) is at
    most the uniform map's (every region at ``level``), levels within ``step`` of it.

    rate [Rh, Rw, L] (bits), sensitivity [Rh, Rw], bounds [L]."""
    levels = np.arange(max(0, level - step), min(len(bounds), level + step + 1))
    change = sensitivity[..., None] * bounds[levels]  # [Rh, Rw, K]
    bits = rate[..., levels]
    budget = float(sensitivity.sum() * bounds[level])

    def pick(lam: float) -> np.ndarray:
        return np.argmin(bits + lam * change, axis=-1)

    def total(choice: np.ndarray) -> float:
        return float(np.take_along_axis(change, choice[..., None], -1).sum())

    lo, hi = 0.0, 1.0
    while total(pick(hi)) > budget and hi < 1e30:
        hi *= 4
    for _ in range(BISECTIONS):  # the smallest multiplier that keeps the budget: the least rate
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if total(pick(mid)) <= budget else (mid, hi)
    choice = pick(hi)
    if total(choice) > budget:  # the relaxation could not meet it (cannot happen with the uniform map inside)
        return np.full(sensitivity.shape, level, np.uint8)
    return levels[choice].astype(np.uint8)


def boundary_offsets(mask: np.ndarray, coarser: float = COARSER_QP, margin: int = MARGIN) -> np.ndarray:
    """`--codec h264 --selection boundary`: the device's mask for the frame [H, W] -> QP offset per macroblock,
    float32 [ceil(H/16), ceil(W/16)]: ``coarser`` where no mask boundary lies within ``margin`` px, else 0."""
    near = grown_region_sums(boundary(mask), macroblocks(*mask.shape), MACROBLOCK, margin)
    return np.where(near > 0, 0.0, coarser).astype(np.float32)


def boundary_levels(frame: np.ndarray, mask: np.ndarray, tables: TableSet, level: int) -> np.ndarray:
    """`--selection boundary`: frame RGB uint8 [H, W, 3], the device's mask for it [H, W] -> level map uint8
    [Rh, Rw] around the uniform ``level``."""
    hb, wb = blocks_for(*frame.shape[:2])
    regions = region_grid(hb, wb, tables.region_blocks)
    coeffs = dct_quantize(frame, np.zeros((hb, wb), np.uint8), np.ones((1, 3, 64), np.float32))
    lo, hi = max(0, level - STEP), min(tables.levels, level + STEP + 1)  # only the levels allocate may pick
    rate = np.full((*regions, tables.levels), np.inf)
    rate[..., lo:hi] = region_rate(coeffs, tables.steps[lo:hi], tables.region_blocks)
    sensitivity = region_sensitivity(mask, regions, tables.region_blocks * BLOCK)
    return allocate(rate, sensitivity, tables.bounds, level)
