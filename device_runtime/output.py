"""What --out writes: each frame's mask as a class-id PNG, and an overlay video (unless masks only)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# class colours (BGR); class 0 stays uncoloured
PALETTE = np.array([[0, 0, 0], [60, 20, 220], [232, 35, 244], [70, 70, 70], [156, 102, 102], [153, 153, 190],
                    [153, 153, 153], [30, 170, 250], [0, 220, 220], [35, 142, 107], [152, 251, 152],
                    [180, 130, 70], [60, 20, 220], [0, 0, 255], [142, 0, 0], [70, 0, 0], [100, 60, 0],
                    [100, 80, 0], [230, 0, 0], [32, 11, 119]], np.uint8)


def overlay(frame: np.ndarray, mask: np.ndarray, levels: np.ndarray | None, max_level: int,
            keyframe: bool) -> np.ndarray:
    """BGR frame: classes tinted, the level map as a heat map in the top-right quarter, a red border on
    keyframes."""
    bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    colours = PALETTE[mask % len(PALETTE)]
    tinted = np.where(mask[..., None] > 0, cv2.addWeighted(bgr, 0.5, colours, 0.5, 0), bgr)
    h, w = mask.shape
    if levels is not None:
        heat = cv2.applyColorMap((levels.astype(np.float32) * (255 / max(max_level, 1))).astype(np.uint8),
                                 cv2.COLORMAP_JET)
        heat = cv2.resize(heat, (max(w // 4, 1), max(h // 4, 1)), interpolation=cv2.INTER_NEAREST)
        tinted[:heat.shape[0], w - heat.shape[1]:] = heat
    if keyframe:
        cv2.rectangle(tinted, (0, 0), (w - 1, h - 1), (0, 0, 255), 2)
    return tinted


class Outputs:
    def __init__(self, folder: str | Path, fps: float, size: tuple[int, int], max_level: int, video: bool = True):
        self.folder = Path(folder)
        (self.folder / "masks").mkdir(parents=True, exist_ok=True)
        h, w = size
        self.video = cv2.VideoWriter(str(self.folder / "overlay.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                     (w, h)) if video else None
        if self.video is not None and not self.video.isOpened():
            raise ValueError(f"cannot write {self.folder / 'overlay.mp4'}")
        self.max_level = max_level

    def write(self, index: int, frame: np.ndarray | None, mask: np.ndarray, levels, keyframe: bool) -> None:
        cv2.imwrite(str(self.folder / "masks" / f"{index:06d}.png"), mask)
        if frame is not None and self.video is not None:
            self.video.write(overlay(frame, mask, levels, self.max_level, keyframe))

    def close(self) -> None:
        if self.video is not None:
            self.video.release()
