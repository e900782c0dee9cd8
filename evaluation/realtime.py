"""Real time over a link: which method shows the most accurate masks, at what bytes both ways, how late, and at
what cost to the edge.

Every real-time point is the device loop over one link (stac.link): its mIoU is that of the masks the device shows
at each frame's capture time (``realtime_miou``), its rate everything that crossed the network both ways
(``total_kbps``, requests and answers with their messages). Per link and source:

- ``best``: each method's most accurate setting, and what it costs;
- ``target``: each method against H.264 streaming every frame (BASELINE) at MARGINS below the best real-time mIoU
  that baseline reaches on the link: the total Kbps it needs there (interpolated on its frontier, as frontier.py
  does), the saving against the baseline's, and, at its cheapest measured setting that gets there, its uplink and
  downlink, edge inferences per second and answer delays, each beside the baseline's.
"""
from __future__ import annotations

from collections.abc import Sequence

from .frontier import rate_at, saving

BASELINE = "h264"
MARGINS = (0.01, 0.02)
RATE = "total_kbps"


def _cheapest(points: Sequence[dict], target: float) -> dict | None:
    """The cheapest measured setting reaching ``target`` real-time mIoU."""
    reached = [p for p in points if p["realtime_miou"] >= target]
    return min(reached, key=lambda p: p[RATE]) if reached else None


def _best(points: Sequence[dict]) -> dict:
    return max(points, key=lambda p: (p["realtime_miou"], -p[RATE]))


def _measured(point: dict | None) -> dict:
    keys = ("setting", "up_kbps", "down_kbps", "edge_fps", "delay_p50_ms", "delay_p95_ms")
    return {key: point[key] for key in keys} if point else dict.fromkeys(keys)


def compare_realtime(points: Sequence[dict]) -> list[dict]:
    """Rows of kind ``best`` and ``target`` (see the module's docstring) for every link and source."""
    rows = []
    realtime = [p for p in points if p["level"] == "realtime"]
    for link, source in dict.fromkeys((p["link"], p["source"]) for p in realtime):
        methods: dict[str, list[dict]] = {}
        for p in realtime:
            if (p["link"], p["source"]) == (link, source):
                methods.setdefault(p["method"], []).append(p)
        for method, found in methods.items():
            best = _best(found)
            rows.append({"kind": "best", "link": link, "source": source, "method": method,
                         "realtime_miou": best["realtime_miou"], "total_kbps": best[RATE], **_measured(best)})
        if BASELINE not in methods:
            continue
        top = _best(methods[BASELINE])["realtime_miou"]
        for margin in MARGINS:
            target = top - margin
            base = _cheapest(methods[BASELINE], target)
            base_rate = rate_at([(p[RATE], p["realtime_miou"]) for p in methods[BASELINE]], target)
            for method, found in methods.items():
                rate = rate_at([(p[RATE], p["realtime_miou"]) for p in found], target)
                point = _cheapest(found, target)
                rows.append({"kind": "target", "link": link, "source": source, "method": method, "margin": margin,
                             "target": target, "total_kbps": rate.rate, "status": rate.status,
                             "saving": saving(rate.rate, base_rate.rate), **_measured(point),
                             "edge_share": point["edge_fps"] / base["edge_fps"] if point and base else None,
                             "baseline_delay_p95_ms": base["delay_p95_ms"] if base else None})
    return rows
