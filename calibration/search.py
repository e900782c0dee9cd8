"""The bound search: the largest B whose accuracy still meets the requirement (paper III-B)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


class CalibrationError(ValueError):
    pass


@dataclass
class SearchStep:
    phase: str  # "bracket" or "bisect"
    bound: float
    accuracy: float
    passed: bool


def search_bound(accuracy: Callable[[float], float], target: float, start: float, *, lowest: float,
                 highest: float, rel_tol: float = 0.02, max_steps: int = 80) -> tuple[float, list[SearchStep]]:
    """Largest B in [lowest, highest] with accuracy(B) >= target, for accuracy non-increasing in B.

    Brackets by doubling (or halving) from ``start``, then bisects in log space until the bracket is
    narrower than ``rel_tol``; returns the best passing B and every evaluation made. ``lowest`` is where
    every step is already 1 (nothing finer exists) and ``highest`` where every step is 255.
    """
    steps: list[SearchStep] = []

    def check(bound: float, phase: str) -> bool:
        value = accuracy(bound)
        steps.append(SearchStep(phase, bound, value, value >= target))
        return value >= target

    b = min(max(start, lowest), highest)
    if check(b, "bracket"):
        lo, hi = b, None
        while hi is None:
            if lo >= highest:
                return lo, steps  # even the coarsest tables meet the requirement
            nxt = min(lo * 2, highest)
            if check(nxt, "bracket"):
                lo = nxt
            else:
                hi = nxt
    else:
        lo, hi = None, b
        while lo is None:
            if hi <= lowest:
                raise CalibrationError(f"accuracy {steps[-1].accuracy:.4f} < {target} even with every step 1 "
                                       f"(B = {lowest:.4g}): the requirement cannot be met")
            nxt = max(hi / 2, lowest)
            if check(nxt, "bracket"):
                lo = nxt
            else:
                hi = nxt
    while hi / lo > 1 + rel_tol and len(steps) < max_steps:
        mid = math.sqrt(lo * hi)
        if check(mid, "bisect"):
            lo = mid
        else:
            hi = mid
    return lo, steps
