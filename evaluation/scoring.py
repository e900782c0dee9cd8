"""Accuracy: one confusion matrix per method and setting, against labels or the model on raw frames."""
from __future__ import annotations

import numpy as np

from stac.inference import SegmentSession
from stac.metrics import confusion_matrix, miou

from .clips import Clip

STABILITY_DISTANCES = (1, 4, 8)  # frames apart
# Below this, the model's own masks of neighbouring frames disagree more than the accuracies compared: a target
# above a source's stability measures the model's flicker, not the method (every method that carries a mask, as
# all do under a real delay, is capped near it)
STABLE = 0.95


class Scorer:
    """Reference masks (labels, else the model's mask on the raw frame, computed once per frame) and the
    confusion matrices of predicted masks against them."""

    def __init__(self, segment: SegmentSession, num_classes: int):
        self.segment, self.num_classes = segment, num_classes
        self._raw: dict[tuple[int, int], np.ndarray] = {}

    def raw_mask(self, clip: Clip, index: int) -> np.ndarray:
        """The model's mask on the uncompressed frame."""
        key = (id(clip), index)
        if key not in self._raw:
            self._raw[key] = self.segment.run(clip.frames[index])
        return self._raw[key]

    def reference(self, clip: Clip, index: int) -> np.ndarray:
        return clip.labels[index] if clip.labels else self.raw_mask(clip, index)

    def confusion(self, clip: Clip, masks: dict[int, np.ndarray]) -> np.ndarray:
        """int64 [K, K] summed over the frames of ``masks`` (frame index -> predicted class ids [H, W])."""
        total = np.zeros((self.num_classes, self.num_classes), np.int64)
        for index, mask in masks.items():
            total += confusion_matrix(mask, self.reference(clip, index), self.num_classes)
        return total


def accuracy(confusion: np.ndarray) -> dict[str, float]:
    """mIoU, and for a two-class (foreground/background) model the foreground class's IoU: with a small
    foreground, mIoU is dominated by the background and hides what happened to the objects."""
    out = {"miou": miou(confusion)}
    if confusion.shape[0] == 2:
        tp = float(confusion[1, 1])
        union = float(confusion[1].sum() + confusion[:, 1].sum()) - tp
        out["fg_iou"] = tp / union if union else 1.0
    return out


def stability(scorer: Scorer, clips: list[Clip]) -> dict[str, float]:
    """How well the model's masks of raw frames t and t + d agree (mIoU, confusion pooled over every t of the clips),
    for each d in STABILITY_DISTANCES: the reference's own flicker."""
    out = {}
    for d in STABILITY_DISTANCES:
        total = np.zeros((scorer.num_classes, scorer.num_classes), np.int64)
        for clip in clips:
            for t in range(len(clip.frames) - d):
                total += confusion_matrix(scorer.raw_mask(clip, t + d), scorer.raw_mask(clip, t), scorer.num_classes)
        if total.any():
            out[f"t+{d}"] = miou(total)
    return out
