"""The whole evaluation: each level's sweeps (run.py), over links at the real-time level, the ablations, the
comparisons, and how stable the model's own masks are on each source."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from stac.link import Link

from .ablations import run_ablations
from .ablations import work as ablation_work
from .clips import Source
from .methods import Context
from .realtime import compare_realtime
from .run import LEVELS, TARGETS, Evaluation, check_levels, compare, method_names, methods, sweep
from .scoring import Scorer, stability

# the links of the real-time level when none is named: a constrained cellular uplink, LTE, Wi-Fi (stac.link.LINKS)
DEFAULT_LINKS = ("constrained", "lte", "wifi")


def work(levels: Sequence[str], ctx: Context, sources: Sequence[Source], only: Sequence[str] | None = None,
         links: Sequence[str] = DEFAULT_LINKS) -> int:
    """Units of progress (``tick`` calls) of an evaluation: one per method, setting and clip (and link)."""
    clips = sum(len(s.clips) for s in sources)
    return sum(ablation_work(ctx, sources) if level == "ablation" else
               sum(len(m.settings) for m in methods(level, ctx, only)) * clips * (len(links) if level == "realtime"
                                                                                   else 1) for level in levels)


def evaluate(ctx: Context, scorer: Scorer, sources: Sequence[Source], *, model: str, levels: Sequence[str] = LEVELS,
             step: int = 4, targets: Sequence[float] = TARGETS, graph_region_blocks: int | None = None,
             only: Sequence[str] | None = None, links: Sequence[str] = DEFAULT_LINKS,
             tick: Callable[[], None] = lambda: None) -> Evaluation:
    """``levels`` among codec, system, realtime (each of ``links``) and ablation; at the swept levels the methods
    named in ``only`` (default: all)."""
    labelled = [s.labelled for s in sources]
    if any(labelled) and not all(labelled):
        raise ValueError("some sources have labels and some do not: evaluate them in separate runs")
    check_levels(levels)
    unknown = set(only or ()) - method_names(levels, ctx)
    if unknown:
        raise ValueError(f"unknown method {', '.join(sorted(unknown))} at levels {', '.join(levels)} (known: "
                         f"{', '.join(sorted(method_names(levels, ctx)))})")
    for spec in links if "realtime" in levels else ():
        Link.parse(spec)  # a bad link is told before hours of sweeps
    evaluation = Evaluation(model, [s.name for s in sources], "labels" if all(labelled) else "raw")
    evaluation.stability = {s.name: stability(scorer, s.clips) for s in sources}
    for level in levels:
        if level == "ablation":
            started = time.perf_counter()
            evaluation.ablations = run_ablations(ctx, scorer, sources, step,
                                                 graph_region_blocks or ctx.tables.region_blocks, tick)
            evaluation.timing.append({"level": level, "source": "all", "seconds": time.perf_counter() - started})
            continue
        for link in links if level == "realtime" else (None,):
            points, timing = sweep(level, methods(level, ctx, only), dataclasses.replace(ctx, link=link), scorer,
                                   sources, step, tick, evaluation.samples if level == "codec" else None)
            evaluation.points += points
            evaluation.timing += timing
    compare(evaluation, targets)
    evaluation.realtime = compare_realtime(evaluation.points)
    return evaluation
