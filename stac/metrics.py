"""Segmentation accuracy: confusion matrices and mean IoU."""
from __future__ import annotations

import numpy as np


def confusion_matrix(pred: np.ndarray, ref: np.ndarray, num_classes: int, ignore: int = 255) -> np.ndarray:
    """int64 [K, K], rows = reference class, columns = predicted; reference pixels == ignore are skipped."""
    if pred.shape != ref.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape}, reference {ref.shape}")
    keep = ref != ignore
    ref, pred = ref[keep].astype(np.int64), pred[keep].astype(np.int64)
    if ref.size and (ref.max() >= num_classes or pred.max() >= num_classes):
        raise ValueError(f"class ids must be < {num_classes}")
    return np.bincount(ref * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def miou(confusion: np.ndarray) -> float:
    """Mean IoU over the classes present in the reference or the prediction (1.0 when none is)."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    return float(np.mean(tp[present] / union[present])) if present.any() else 1.0
