"""Equal-accuracy comparison: each method's rate-accuracy Pareto frontier and the rate it needs at a target.

Between two frontier points the rate is interpolated on a log axis, linearly in accuracy (rate grows
roughly exponentially as accuracy approaches its ceiling). Nothing is extrapolated: a target above a
method's best accuracy is "unreached", one below its cheapest point's accuracy is "below-sweep" (the
sweep did not go cheap enough to say), and both give no rate.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RateAt:
    rate: float | None
    status: str  # "ok", "unreached" or "below-sweep"


def pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(rate, accuracy) pairs -> the frontier, rate ascending with accuracy strictly ascending: every
    point that no other point beats with a rate as low or lower and an accuracy as high or higher."""
    frontier: list[tuple[float, float]] = []
    for rate, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not frontier or acc > frontier[-1][1]:
            frontier.append((rate, acc))
    return frontier


def rate_at(points: Sequence[tuple[float, float]], target: float) -> RateAt:
    """The rate a method needs to reach accuracy ``target``, from its (rate, accuracy) points."""
    frontier = [p for p in pareto(points) if p[0] > 0]
    if not frontier or frontier[-1][1] < target:
        return RateAt(None, "unreached")
    if frontier[0][1] > target:
        return RateAt(None, "below-sweep")
    for (r0, a0), (r1, a1) in zip(frontier, frontier[1:]):
        if a0 <= target <= a1:
            t = (target - a0) / (a1 - a0)
            return RateAt(math.exp(math.log(r0) + t * (math.log(r1) - math.log(r0))), "ok")
    return RateAt(frontier[0][0], "ok")  # a single point exactly at the target


def curves(points: Iterable[dict], rate_key: str = "kbps") -> dict[str, list[tuple[float, float]]]:
    """Result points -> method -> [(rate, mIoU)], in the order methods first appear."""
    out: dict[str, list[tuple[float, float]]] = {}
    for p in points:
        out.setdefault(p["method"], []).append((p[rate_key], p["miou"]))
    return out


def common_accuracy(groups: dict[str, list[tuple[float, float]]], margin: float) -> float:
    """``margin`` below the highest accuracy every method reaches, to 0.001: where methods capped below the
    targets (the PSNR-gated ones, by propagation) can still be compared, away from the cap's noise."""
    return math.floor((min(max(a for _, a in pts) for pts in groups.values()) - margin) * 1000) / 1000


def saving(rate_stac: float | None, rate_other: float | None) -> float | None:
    """1 - rate_stac / rate_other: the fraction of the other method's bits STAC saves (negative: costs more)."""
    if rate_stac is None or rate_other is None:
        return None
    return 1.0 - rate_stac / rate_other
