"""A keyframe gate that follows an accuracy target instead of a fixed PSNR.

The paper's gate offloads a frame when the keyframe carried to it by flow matches it worse than 26 dB. How
accurate the carried masks are at that point depends on the content (measured: at 26 dB the evaluation clips
keep mIoU 0.98 on a slow clip and 0.78 on a busy one), so no fixed threshold suits every video. The device
does see how well it carried: each fresh answer is the edge's mask of a new keyframe, and the mask the device
had carried from the previous answer to that same frame is what it would have shown. Their agreement (mIoU)
is the carried accuracy at the end of a keyframe interval, its worst point. The gate moves its PSNR by
``gain`` dB per unit of the gap between that agreement and the target: up (more keyframes) when carried
masks drift further than asked, down (fewer) when they stay better.
"""
from __future__ import annotations

import numpy as np

from .metrics import confusion_matrix, miou

GAIN_DB = 40.0  # dB per unit of mIoU gap: 0.4 dB per 0.01
GATE_RANGE_DB = (16.0, 48.0)  # a static camera gives PSNR far above 48 dB; below 16 dB nearly nothing is a keyframe


def agreement(carried: np.ndarray, fresh: np.ndarray) -> float:
    """mIoU of a carried mask against a fresh one, uint8 [H, W] each, over the classes either holds."""
    classes = int(max(carried.max(initial=0), fresh.max(initial=0))) + 1
    return miou(confusion_matrix(carried, fresh, classes, ignore=-1))


class AccuracyGate:
    """The PSNR threshold (dB) of the keyframe gate, steered to keep ``target`` agreement."""

    def __init__(self, target: float, start_db: float, gain: float = GAIN_DB):
        if not 0.0 < target < 1.0:
            raise ValueError(f"the accuracy target is an mIoU in (0, 1), got {target}")
        self.target, self.gain, self.db = target, gain, float(np.clip(start_db, *GATE_RANGE_DB))

    def update(self, measured: float) -> float:
        """One fresh answer's agreement with the carried mask -> the new threshold."""
        self.db = float(np.clip(self.db + self.gain * (self.target - measured), *GATE_RANGE_DB))
        return self.db
