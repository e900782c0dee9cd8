"""Rate control: each keyframe's knob, steered so the uplink meets a bitrate budget.

The knob sets a keyframe's size, size = c * knob ** -alpha: STAC's loss bound B (coded at one level everywhere,
a keyframe uses the level nearest the bound; with the paper's selection the edge picks the next level map
against it, BOUND in the request), or, for keyframes on the inter codec, H.264's quantizer step 2^(CRF / 6).
The controller keeps a running estimate of log c from the keyframes it has seen, and asks each keyframe for the
knob whose predicted size is its share of the budget: the budget rate times the time since the previous keyframe
(the frames this one pays for, as the PSNR gate spaced them), plus what the uplink was under budget at the
previous keyframe (or less what it was over), repaid over HORIZON seconds. Time is video time (frame index /
fps), so a synchronous run steers the same way however fast the machine is.
"""
from __future__ import annotations

import math

import numpy as np

from .tables import TableSet

# bytes ~ bound ** -ALPHA: JPEG-coded keyframes at STAC's levels, measured over bounds B .. 64 B with
# `stac-bench eval` (codec level, carphone, megamind, vtest: 0.61-0.66). Feedback corrects the rest.
ALPHA = 0.65
# bytes ~ step ** -H264_ALPHA, step = 2^(CRF / 6): H.264 keyframe streams at CRF 22-43 on the calibration clips
# (`stac-bench eval bikes bigbuckbunny --levels system`, stac-h264 at gates 30-38: bikes 0.73-0.75,
# bigbuckbunny 0.82-0.91).
H264_ALPHA = 0.8
CRF_RANGE = (10.0, 51.0)
HORIZON = 2.0  # seconds over which a budget overrun (or underrun) is repaid
SMOOTHING = 0.5  # weight of the newest keyframe in the estimate of log c
MIN_SHARE = 0.25  # a keyframe's share never falls below this fraction of the budget rate x its time


class RateController:
    """knob(frame) for a keyframe; update() with what it cost. Budget in Kbps, clock in frames at ``fps``; the knob
    stays within [lowest, highest] and starts at ``first``."""

    def __init__(self, kbps: float, fps: float, lowest: float, highest: float, first: float, alpha: float):
        if not (kbps > 0 and math.isfinite(kbps)):
            raise ValueError(f"a bitrate budget must be a positive number of Kbps, got {kbps}")
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"the frame rate must be positive, got {fps}")
        self.rate = kbps * 1e3 / 8  # bytes per second
        self.fps, self.alpha = fps, alpha
        self.lowest, self.highest = math.log(lowest), math.log(highest)
        self.first = first  # before any keyframe has been measured
        self.log_c: float | None = None
        self.sent = 0
        self.last_time = 0.0  # video time the budget has been accounted to

    @classmethod
    def for_bound(cls, kbps: float, fps: float, tables: TableSet) -> "RateController":
        """STAC's loss bound, over the table set's levels, from its B."""
        return cls(kbps, fps, float(tables.bounds[0]), float(tables.bounds[-1]), float(tables.bound), ALPHA)

    @classmethod
    def for_crf(cls, kbps: float, fps: float, crf: float) -> "RateController":
        """H.264's quantizer step (crf_step), over CRF_RANGE, from ``crf``."""
        return cls(kbps, fps, crf_step(CRF_RANGE[0]), crf_step(CRF_RANGE[1]), crf_step(crf), H264_ALPHA)

    def knob(self, frame_index: int) -> float:
        """The knob for a keyframe at ``frame_index``."""
        if self.log_c is None:
            return self.first
        now = (frame_index + 1) / self.fps  # this keyframe pays for the frames up to and including itself
        elapsed = max(now - self.last_time, 1 / self.fps)
        carried = self.rate * self.last_time - self.sent  # under budget (> 0) or over (< 0) so far
        share = max(self.rate * elapsed + carried * min(1.0, elapsed / HORIZON), MIN_SHARE * self.rate * elapsed)
        return float(np.exp(min(max((self.log_c - math.log(share)) / self.alpha, self.lowest), self.highest)))

    def update(self, frame_index: int, nbytes: int, knob: float) -> None:
        """Keyframe ``frame_index`` was coded at ``knob`` into ``nbytes``."""
        self.last_time = (frame_index + 1) / self.fps
        self.sent += nbytes
        observed = math.log(max(nbytes, 1)) + self.alpha * math.log(knob)
        self.log_c = observed if self.log_c is None else (1 - SMOOTHING) * self.log_c + SMOOTHING * observed


def crf_step(crf: float) -> float:
    """H.264's quantizer step, up to a constant: it doubles every 6 QP."""
    return 2.0 ** (crf / 6)


def step_crf(step: float) -> float:
    return 6 * math.log2(step)


def tracking_error(sent: list[int], fps: float, kbps: float) -> dict:
    """How well an uplink met its budget: bytes sent at each frame -> the whole run's relative error
    (achieved / budget - 1) and the RMS of that error over consecutive 2-second spans."""
    per_window = max(1, round(2.0 * fps))
    spans = [sent[i:i + per_window] for i in range(0, len(sent) - per_window + 1, per_window)]
    errors = [sum(s) * 8 / 1e3 / (len(s) / fps) / kbps - 1 for s in spans]
    return {"kbps_target": kbps, "rate_error": sum(sent) * 8 / 1e3 / (len(sent) / fps) / kbps - 1 if sent else None,
            "rate_error_2s": float(np.sqrt(np.mean(np.square(errors)))) if errors else None}
