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
        self.allowed = 0.0  # bytes the budget allowed up to last_time
        self.last_time = 0.0  # video time the budget has been accounted to
        self.max_credit: float | None = None  # seconds of budget an underspend may carry forward (None: all)

    @classmethod
    def for_bound(cls, kbps: float, fps: float, tables: TableSet) -> "RateController":
        """STAC's loss bound, over the table set's levels, from its B."""
        return cls(kbps, fps, float(tables.bounds[0]), float(tables.bounds[-1]), float(tables.bound), ALPHA)

    @classmethod
    def for_crf(cls, kbps: float, fps: float, crf: float) -> "RateController":
        """H.264's quantizer step (crf_step), over CRF_RANGE, from ``crf``."""
        return cls(kbps, fps, crf_step(CRF_RANGE[0]), crf_step(CRF_RANGE[1]), crf_step(crf), H264_ALPHA)

    def knob(self, frame_index: int, most: float | None = None) -> float:
        """The knob for a keyframe at ``frame_index``, of at most ``most`` bytes if given."""
        if self.log_c is None:
            return self.first
        now = (frame_index + 1) / self.fps  # this keyframe pays for the frames up to and including itself
        elapsed = max(now - self.last_time, 1 / self.fps)
        carried = self.allowed - self.sent  # under budget (> 0) or over (< 0) so far
        if self.max_credit is not None:
            carried = min(carried, self.rate * self.max_credit)
        share = max(self.rate * elapsed + carried * min(1.0, elapsed / HORIZON), MIN_SHARE * self.rate * elapsed)
        share = share if most is None else max(min(share, most), 1.0)
        return float(np.exp(min(max((self.log_c - math.log(share)) / self.alpha, self.lowest), self.highest)))

    def update(self, frame_index: int, nbytes: int, knob: float) -> None:
        """Keyframe ``frame_index`` was coded at ``knob`` into ``nbytes``."""
        now = (frame_index + 1) / self.fps
        self.allowed += self.rate * max(0.0, now - self.last_time)
        self.last_time = now
        self.sent += nbytes
        observed = math.log(max(nbytes, 1)) + self.alpha * math.log(knob)
        self.log_c = observed if self.log_c is None else (1 - SMOOTHING) * self.log_c + SMOOTHING * observed

    def no_finer_than(self, knob: float) -> None:
        """Never code finer than ``knob``: a budget that finds a fast link (--kbps auto) then leaves it unused rather
        than spend it on bytes that buy no accuracy and only delay every answer (AUTO_FINEST_CRF)."""
        self.lowest = math.log(knob)

    def set_kbps(self, kbps: float) -> None:
        """A new budget, from the time accounted to on (a device finding its link's rate changes it as it goes)."""
        self.rate = kbps * 1e3 / 8


class DeliveryRate:
    """How fast the way to the edge delivers a device's requests, from its own sends and the answers to them.

    A sample per answer: the bytes of the last SPAN answers over the time the way was busy with them, or over the
    time it took to hand them over if that was longer (as TCP's BBR bounds its samples: answers come back bunched,
    a pipelined edge or a client thread waiting for Python's lock can return several at once, and nothing is
    delivered faster than it was sent). An answer that waited behind the one before kept the way busy from that
    one's arrival to its own; one sent to an idle way, from its hand-over to its arrival less ``floor``, the time
    any answer takes besides its upload (the round trip, the edge: the caller's estimate, which depends on this
    one; so at most half the time is taken off, and never less than nothing, and a wrong floor cannot run away).
    A sample is then near the bottleneck's rate (the uplink's, or the edge's when it is slower), and what the
    device sends while it sends less. The estimate is the largest sample of the last WINDOW seconds, restarted
    from the newest answer when a delay shows the rate has fallen.
    """
    WINDOW = 1.0
    SPAN = 4

    def __init__(self):
        self.answers: list[tuple[float, float, float, int]] = []  # (handed, arrived, busy seconds, bytes)
        self.samples: list[tuple[float, float]] = []  # (when, bytes per second)

    def answered(self, handed: float, arrived: float, nbytes: int, floor: float = 0.0) -> None:
        waited = bool(self.answers) and handed < self.answers[-1][1]
        busy = arrived - self.answers[-1][1] if waited else max(arrived - handed - max(floor, 0.0),
                                                                (arrived - handed) / 2)
        self.answers = self.answers[-(self.SPAN - 1):] + [(handed, arrived, busy, nbytes)]
        sample = sum(a[3] for a in self.answers) / max(sum(a[2] for a in self.answers),
                                                        handed - self.answers[0][0], 1e-3)
        self.samples = [(t, r) for t, r in self.samples if t > arrived - self.WINDOW] + [(arrived, sample)]

    def restart(self) -> None:
        """Forget all but the newest answer: the rate has just fallen."""
        self.answers, self.samples = self.answers[-1:], self.samples[-1:]

    @property
    def estimate(self) -> float | None:
        """Bytes per second, or None before any answer."""
        return max(r for _, r in self.samples) if self.samples else None


# --kbps auto: how the budget follows the delivery rate. While answers come back well within the delay target the
# budget grows (PROBE_STEP per answer, up to PROBE_CAP x the estimate: a rate the device has not used yet can only be
# found by using it, and while the video sends less than the link carries the estimate is just what it sends); past
# the target it falls to BACKOFF_GAIN x the estimate, which requests queueing on the link have just measured. Keyframes
# wait while the bytes in flight would keep the newest past the target (the window, may_send), and none is coded
# larger than the link delivers within AIM of the target (the whole target while probing: most), nor finer than
# AUTO_FINEST_CRF (RateController.no_finer_than).
PROBE_BELOW = 0.8  # of the delay target: answers faster than this let the budget grow
WINDOW_GAIN = 0.85  # of the window: the estimate, the largest sample of a second, overstates the mean rate
AIM = 0.6  # of the delay target: what a keyframe is sized to be answered within (sizes scatter around the aim)
PROBE_STEP, PROBE_CAP, BACKOFF_GAIN = 1.05, 1.5, 0.8
AUTO_START_KBPS = 500.0  # the budget before any answer: a few hundred Kbps every uplink carries
AUTO_MAX_CREDIT = 0.5  # seconds of an underspent budget a keyframe may use
# the finest H.264 CRF auto codes at (STAC keyframes: the table set's B, not calibrated). On the calibration clip
# bikes over the step trace, real-time mIoU by this floor: CRF 40 0.698, 32 0.710, 26 0.764, 20 0.765, 14 0.755, 10
# (none) 0.728, with 4.2 s to recover from the step down; 26 sends the fewest bytes on the plateau (measured before
# the size cap also held while probing)
AUTO_FINEST_CRF = 26.0


class AutoRate:
    """The uplink budget and window of ``--kbps auto``: ``answered`` for every answer, then ``kbps`` and
    ``may_send``. Times in seconds on one clock (the device's, or a link model's)."""

    def __init__(self, max_delay: float):
        if not max_delay > 0:
            raise ValueError(f"--max-delay must be positive, got {max_delay * 1e3:g} ms")
        self.max_delay = max_delay
        self.delivery = DeliveryRate()
        self.kbps = AUTO_START_KBPS
        self.probing = True
        # (when, capture to answer, hand-over to the message back, bytes) of recent answers, from which the time an
        # answer takes besides its own upload (coding, the round trip, the edge) is reckoned at the current estimate
        self.recent: list[tuple[float, float, float, int]] = []

    def besides(self) -> tuple[float, float]:
        """(capture to answer, hand-over to message) less the upload, the least of recent answers: what a keyframe's
        delay is besides its bytes, whose rest is the room they may take. Reckoned at the current estimate, never
        below nothing: an upload reckoned at a rate too low (before the link's is found) would make it negative, and
        the room larger than the target."""
        if not self.recent or self.delivery.estimate is None:
            return 0.0, 0.0
        rate = self.delivery.estimate
        return (max(min(d - n / rate for _, d, _, n in self.recent), 0.0),
                max(min(f - n / rate for _, _, f, n in self.recent), 0.0))

    def answered(self, captured: float, handed: float, received: float, available: float, nbytes: int) -> None:
        """An answer to a request of ``nbytes`` (on the wire) handed over at ``handed`` for a frame captured at
        ``captured`` came back at ``received`` and was in hand, decoded, at ``available``."""
        self.delivery.answered(handed, received, nbytes, self.besides()[1])
        delay = available - captured
        self.probing = delay < PROBE_BELOW * self.max_delay
        late = delay > self.max_delay
        if late:  # the rate has fallen: what is measured from now on, not the window's best, is the rate
            self.delivery.restart()
            self.recent = []  # their uploads went at the rate before: reckoned at the new one, too long
        self.recent = [r for r in self.recent if r[0] > available - 10 * DeliveryRate.WINDOW] + \
            [(available, delay, received - handed, nbytes)]
        estimate = self.delivery.estimate * 8 / 1e3  # Kbps
        if late:
            self.kbps = BACKOFF_GAIN * estimate
        elif self.probing:  # the cap stops growth, never lowers it: a video sending less measures only that
            self.kbps = min(self.kbps * PROBE_STEP, max(PROBE_CAP * estimate, self.kbps))
        self.kbps = max(self.kbps, 8.0)

    def room(self, share: float = 1.0) -> float | None:
        """Bytes the link delivers within ``share`` of the delay target, less what a keyframe's delay is besides its
        own bytes; None before any answer."""
        if self.delivery.estimate is None:
            return None
        return self.delivery.estimate * max(share * self.max_delay - self.besides()[0], 0.0)

    def most(self) -> float | None:
        """The most bytes a keyframe may take: what the link delivers in AIM of the target, less what an answer takes
        besides, once answers come near the target; while they come well within it, in the whole target. That still
        lets a device find more than it has measured (a device sending less than its link carries measures only what
        it sends): at ``fps`` keyframes a second it may send fps x the room, over twice the estimate at 10 fps and a
        250 ms target. None before any answer."""
        return self.room(1.0 if self.probing else AIM)

    def may_send(self, in_flight: int, last_request: int) -> bool:
        """Whether a keyframe of about ``last_request`` bytes may go while ``in_flight`` bytes await answers: the
        window is what the link delivers in the room the target leaves. While the link is the bottleneck, what is in
        flight is what waits on it; while it is not, the window (the estimate times the target less what an answer
        takes besides its upload, against an answer's whole round trip) lets more go than has been measured, which
        is how a higher rate is found, as long as the target is more than twice that."""
        if not in_flight or self.delivery.estimate is None:
            return True
        return in_flight + last_request <= WINDOW_GAIN * self.room()


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
