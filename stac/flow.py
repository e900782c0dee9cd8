"""Dense optical flow (OpenCV DIS) and what the device propagates with it.

Everything is backward warping: a *map* float32 [h, w, 2] holds, for each pixel of the current frame,
its (x, y) position in the keyframe. The map starts as the identity at a keyframe and is composed with
each new frame's flow, so propagating a keyframe's mask, pixels or level map to the current frame is one
remap. Positions that leave the keyframe are clamped to its border: pixels without flow take the nearest
valid value.
"""
from __future__ import annotations

import cv2
import numpy as np

PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
           "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


MIN_SIZE = 16  # px: DIS refuses images whose sides are both below 12


def processing_size(height: int, width: int, flow_width: int) -> tuple[int, int]:
    """(h, w) flow and propagation run at: the frame scaled down to ``flow_width`` (never up), at least
    MIN_SIZE x MIN_SIZE."""
    if flow_width < MIN_SIZE:
        raise ValueError(f"--flow-width must be at least {MIN_SIZE} px, got {flow_width}")
    scale = min(1.0, flow_width / width)
    return max(MIN_SIZE, round(height * scale)), max(MIN_SIZE, round(width * scale))


class Flow:
    """DIS flow between consecutive grey frames at the processing size: flow(current, previous) gives, for
    each current pixel, the offset to where it was in the previous frame, [h, w, 2]."""

    def __init__(self, preset: str = "ultrafast"):
        if preset not in PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; known: {', '.join(PRESETS)}")
        self.dis = cv2.DISOpticalFlow_create(PRESETS[preset])

    def __call__(self, current: np.ndarray, previous: np.ndarray) -> np.ndarray:
        return self.dis.calc(current, previous, None)


def identity_map(height: int, width: int) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return np.dstack([xs, ys])


def compose(keyframe_map: np.ndarray, flow: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Map current -> keyframe, from the previous frame's map and flow current -> previous.

    map_t(x) = map_{t-1}(x + flow(x)), sampled bilinearly; grid is identity_map of the same size.
    """
    return cv2.remap(keyframe_map, grid + flow, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warp(image: np.ndarray, keyframe_map: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Keyframe image (mask: nearest; pixels: linear) seen from the current frame."""
    return cv2.remap(image, keyframe_map, None, cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def warp_levels(levels: np.ndarray, keyframe_map: np.ndarray, frame_size: tuple[int, int],
                region_px: int) -> np.ndarray:
    """Level map of the keyframe's region grid [Rh, Rw] -> the current frame's grid (same frame size).

    Each current region takes the level of the keyframe region its centre came from (positions in the
    map are at the processing size, region_px is the region's side in full-resolution pixels).
    """
    rh, rw = levels.shape
    h, w = frame_size
    mh, mw = keyframe_map.shape[:2]
    sy, sx = mh / h, mw / w  # full resolution -> processing size
    cy = np.minimum((np.arange(rh) + 0.5) * region_px, h - 1) * sy
    cx = np.minimum((np.arange(rw) + 0.5) * region_px, w - 1) * sx
    centres = keyframe_map[np.minimum(cy.astype(int), mh - 1)[:, None], np.minimum(cx.astype(int), mw - 1)[None, :]]
    col = np.clip((centres[..., 0] / sx) // region_px, 0, rw - 1).astype(int)
    row = np.clip((centres[..., 1] / sy) // region_px, 0, rh - 1).astype(int)
    return levels[row, col]
