"""Frame sources: a video file (anything OpenCV reads), a folder of images, a camera index, a sample clip.

Frames come out RGB uint8 at the first frame's size (later frames of another size are resized to it).
A frame that cannot be read comes out as None, so the loop can still emit a mask for it.
"""
from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from stac.video import SAMPLES, image_files, raw_frames, resize, resolve_source, video_fps

FOLDER_FPS = 17.0  # the paper's camera rate, for folders of images unless --fps says otherwise


class Source:
    def __init__(self, spec: str, max_frames: int | None = None, fps: float | None = None):
        if fps is not None and not fps > 0:
            raise ValueError(f"--fps must be positive, got {fps:g}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"--max-frames must be at least 1, got {max_frames}")
        self.spec, self.max_frames = spec, max_frames
        if spec.isdigit() and spec not in SAMPLES:
            self.kind, self.camera = "camera", int(spec)
            self.fps = fps or 30.0
            return
        self.path = resolve_source(spec)
        if self.path.is_dir():
            self.kind = "folder"
            self.files = image_files(self.path)
            self.fps = fps or FOLDER_FPS
        else:
            self.kind = "video"
            self.fps = fps or video_fps(self.path)
            capture = cv2.VideoCapture(str(self.path))
            ok = capture.isOpened() and capture.read()[0]
            capture.release()
            if not ok:
                raise ValueError(f"cannot read video {self.path}: not a container/codec OpenCV can open")

    def count(self) -> int | None:
        """Frames the source will give, when known (not for cameras)."""
        if self.kind == "camera":
            known = None
        elif self.kind == "folder":
            known = len(self.files)
        else:
            capture = cv2.VideoCapture(str(self.path))
            known = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
            capture.release()
        if known is None:
            return self.max_frames
        return min(known, self.max_frames) if self.max_frames is not None else known

    def frames(self) -> Iterator[np.ndarray | None]:
        size = None
        for count, bgr in enumerate(raw_frames(self.camera if self.kind == "camera" else self.path)):
            if self.max_frames is not None and count >= self.max_frames:
                return
            if bgr is None or bgr.ndim != 3:
                yield None
                continue
            if size is None:
                size = bgr.shape[:2]
            else:
                bgr = resize(bgr, size)
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def first_size(source: Source) -> tuple[int, int]:
    """(H, W) of the first readable frame."""
    for frame in source.frames():
        if frame is not None:
            return frame.shape[:2]
    raise ValueError(f"{source.spec} has no readable frame")
