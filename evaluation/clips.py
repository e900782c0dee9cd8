"""What the evaluation runs on: clips of consecutive frames, grouped by the SOURCE they came from (``datasets``
loads them: a sample clip name, a video file, a folder of images, or a dataset folder)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np


@dataclass
class Clip:
    name: str
    frames: list[np.ndarray]  # RGB uint8 [H, W, 3], consecutive
    fps: float
    labels: dict[int, np.ndarray] = field(default_factory=dict)  # frame index -> class ids uint8 [H, W], 255 ignored

    def sample(self, step: int) -> list[int]:
        """Codec-level frames: every ``step``-th, aligned so that the last labelled frame is one of them."""
        first = max(self.labels) % step if self.labels else 0
        return list(range(first, len(self.frames), step))

    def scored(self, indices: list[int]) -> list[int]:
        """Of these frames, those accuracy is measured on: the labelled ones when there are labels."""
        return [i for i in indices if i in self.labels] if self.labels else list(indices)


@dataclass
class Source:
    name: str
    clips: list[Clip]

    @property
    def labelled(self) -> bool:
        return any(c.labels for c in self.clips)


def read_label(path: Path, shape: tuple[int, int], lut: np.ndarray | None = None) -> np.ndarray:
    """A class-id PNG -> uint8 [H, W] (through ``lut`` when the file holds dataset ids, not train ids)."""
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None or label.ndim != 2:
        raise ValueError(f"label {path} is not a single-channel class-id PNG")
    if label.shape != tuple(shape):
        raise ValueError(f"label {path} is {label.shape[1]}x{label.shape[0]}, its frame {shape[1]}x{shape[0]}")
    return lut[label] if lut is not None else label.astype(np.uint8)
