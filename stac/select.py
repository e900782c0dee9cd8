"""Paper Algorithm 1, the numpy reference: each region's table level from the DNN's gradient.

The ONNX STAC head computes the same thing inside the graph; this is what its tests compare against.
"""
from __future__ import annotations

import numpy as np

from .tables import region_sums


def region_cost(grad: np.ndarray, tables: np.ndarray, region_blocks: int) -> np.ndarray:
    """Worst-case loss increase of every region under every level.

    grad: dLoss/d(dequantized coefficient) [3, Hb, Wb, 64]; tables: steps [L, 3, 64].
    Returns [Rh, Rw, L]: cost[r, l] = sum over r's coefficients of |g| * tables[l] / 2. Regions at the
    right and bottom edges may hold fewer blocks; they sum what they hold.
    """
    _, hb, wb, _ = grad.shape
    n_levels = tables.shape[0]
    g = np.abs(grad, dtype=np.float64).transpose(1, 2, 0, 3).reshape(hb * wb, 3 * 64)
    block = (g @ tables.reshape(n_levels, 3 * 64).T.astype(np.float64) / 2).reshape(hb, wb, n_levels)
    return region_sums(block, region_blocks)


def select_levels(cost: np.ndarray, bound: float) -> np.ndarray:
    """Level of each region: argmin_l |cost[r, l] - B / r_max|. [Rh, Rw, L] -> uint8 [Rh, Rw].

    Distances are taken in float64: costs come from the head in float32, where a cost far below B / r_max
    disappears from the difference and every level ties. On a true tie (levels whose tables are equal, e.g.
    all clamped to 255) the coarsest level wins; the paper's loop would keep the finest, which costs bits
    for nothing.
    """
    r_max = cost.shape[0] * cost.shape[1]
    distance = np.abs(np.asarray(cost, np.float64) - np.float64(bound) / r_max)
    return (cost.shape[-1] - 1 - np.argmin(distance[..., ::-1], axis=-1)).astype(np.uint8)


def next_levels(grad: np.ndarray, tables: np.ndarray, bound: float, region_blocks: int) -> np.ndarray:
    """Algorithm 1 end to end: gradient [3, Hb, Wb, 64] -> level map uint8 [Rh, Rw]."""
    return select_levels(region_cost(grad, tables, region_blocks), bound)
