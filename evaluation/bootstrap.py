"""How sure a codec-level saving is: a frame bootstrap of the whole comparison.

At the codec level every scored frame is coded and scored on its own, so a clip's result is a sum over its
frames: bytes and a confusion matrix each. One resample draws each clip's frames with replacement, the same
draw for every method and setting (the comparison stays paired), rebuilds every method's rate-accuracy
points from the drawn frames, and recomputes the savings at each target exactly as the point estimate does.
The interval is the central LEVEL of the savings over the resamples where both rates exist; ``reached`` is
the share of resamples where they did. A resample's rate is the scored frames' bytes over their video time.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stac.metrics import miou

from .frontier import rate_at, saving

RESAMPLES = 200
LEVEL = 0.90
SEED = 0


@dataclass
class FrameSamples:
    """One method at one setting on one clip: what each scored frame cost and scored."""
    fps: float
    bytes: np.ndarray  # int [n]
    confusion: np.ndarray  # int64 [n, K, K]


def intervals(samples: dict[tuple[str, str], list[FrameSamples]], targets: Sequence[float],
              resamples: int = RESAMPLES) -> dict[tuple[str, float], dict]:
    """samples: (method, setting) -> its clips' frames (the same clips, in the same order, for every key).
    Returns (other method, target) -> {"low", "high", "reached"} for the saving of `stac` against it."""
    keys = list(samples)
    lengths = [len(clip.bytes) for clip in samples[keys[0]]]
    rng = np.random.default_rng(SEED)
    found: dict[tuple[str, float], list[float]] = {}
    for _ in range(resamples):
        draws = [rng.integers(0, n, n) for n in lengths]
        groups: dict[str, list[tuple[float, float]]] = {}
        for method, setting in keys:
            clips = samples[(method, setting)]
            nbytes = sum(int(c.bytes[d].sum()) for c, d in zip(clips, draws))
            seconds = sum(len(d) / c.fps for c, d in zip(clips, draws))
            confusion = sum(c.confusion[d].sum(axis=0) for c, d in zip(clips, draws))
            groups.setdefault(method, []).append((nbytes * 8 / 1e3 / seconds, miou(confusion)))
        for target in targets:
            stac = rate_at(groups["stac"], target).rate
            for method, points in groups.items():
                if method != "stac":
                    value = saving(stac, rate_at(points, target).rate)
                    found.setdefault((method, target), [])
                    if value is not None:
                        found[(method, target)].append(value)
    tail = (1 - LEVEL) / 2 * 100
    return {key: {"low": float(np.percentile(v, tail)) if v else None,
                  "high": float(np.percentile(v, 100 - tail)) if v else None,
                  "reached": len(v) / resamples} for key, v in found.items()}
