"""Offline calibration (paper III-B, GRACE's method): mean gradients -> bound B -> L table levels.

Everything runs on the exported graphs in onnxruntime: the STAC head gives the gradients, the SEGMENT
graph the masks whose agreement is the accuracy. Accuracy is the mIoU of the mask of a compressed frame
against the mask of the raw frame (so the raw frame scores 1.0), or, with labels, the mIoU against the
labels divided by the raw frames' mIoU against them.
"""
from __future__ import annotations

import math

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stac.codec import make_codec
from stac.codec.base import Codec
from stac.codec.bitstream import read_stac
from stac.codec.grace import GraceCodec
from stac.codec.transform import dct_quantize
from stac.contract import HEAD_GRAPH, SEGMENT_GRAPH
from stac.inference import HeadSession, SegmentSession, head_sha256, model_info
from stac.metrics import confusion_matrix, miou
from stac.tables import BLOCK, DEFAULT_LEVELS, TableSet, blocks_for
from stac.video import read_frames, resize, resolve_source

from .search import CalibrationError, SearchStep, search_bound

MIN_FRAMES = 4
# Calibration clips are never evaluation clips (stac-bench eval's defaults are carphone, megamind, vtest).
DEFAULT_SOURCES = ("bikes", "bigbuckbunny")
DEFAULT_SIZE = (144, 176)  # (h, w)
DEFAULT_MIN_ACCURACY = 0.98
# The levels span the accuracy range users ask for: the finest keeps 0.995 of raw accuracy, the coarsest
# 0.90. Where even all-ones tables stay below the finest target (the model's masks move on their own: the
# selfie model on the street clips reaches 0.993), the finest level is where accuracy comes within
# PLATEAU_MARGIN of that ceiling: finer levels would cost bits and buy nothing.
DEFAULT_SPAN = (0.995, 0.90)
PLATEAU_MARGIN = 0.005


def fit(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop to the aspect ratio of size (h, w), then resize."""
    h, w = size
    fh, fw = frame.shape[:2]
    if fw * h > fh * w:  # too wide
        cw = fh * w // h
        frame = frame[:, (fw - cw) // 2:(fw - cw) // 2 + cw]
    elif fw * h < fh * w:
        ch = fw * h // w
        frame = frame[(fh - ch) // 2:(fh - ch) // 2 + ch]
    return resize(frame, size)


def load_frames(sources: Sequence[str], size: tuple[int, int], per_source: int, step: int) -> list[np.ndarray]:
    """Calibration frames: every ``step``-th frame of each source, ``per_source`` of them, fitted to size."""
    frames = []
    for source in sources:
        frames += [fit(f, size) for f in read_frames(resolve_source(source), per_source, step=step)]
    if len(frames) < MIN_FRAMES:
        raise CalibrationError(f"{len(frames)} calibration frames from {', '.join(sources)}; need at least "
                               f"{MIN_FRAMES}")
    return frames


def load_labels(folder: str | Path, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Class-id PNGs in name order, one per calibration frame, at the calibration size."""
    files = sorted(Path(folder).glob("*.png"))
    if len(files) < count:
        raise CalibrationError(f"{folder} holds {len(files)} label PNGs for {count} calibration frames")
    labels = []
    for file in files[:count]:
        label = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
        if label is None or label.ndim != 2:
            raise CalibrationError(f"{file} is not a single-channel class-id PNG")
        if label.shape != tuple(size):
            raise CalibrationError(f"{file} is {label.shape[1]}x{label.shape[0]}, the frames {size[1]}x{size[0]}")
        labels.append(label)
    return labels


def mean_gradients(head: HeadSession, frames: Sequence[np.ndarray], start: TableSet) -> tuple[np.ndarray, np.ndarray]:
    """(mean |g_n|, mean |s_n|), each [3, 64]: gradients of frames coded at start's middle level, and the
    magnitudes of their unquantized coefficients (GRACE's zeroing test)."""
    codec = make_codec("stac", start)
    grads, mags = [], []
    for frame in frames:
        result = head.run(read_stac(codec.encode(frame), start), start)
        grads.append(np.abs(result.grad, dtype=np.float64).mean(axis=(1, 2)))
        hb, wb = blocks_for(*frame.shape[:2])
        coeffs = dct_quantize(frame, np.zeros((hb, wb), np.uint8), np.ones((1, 3, 64), np.float32))
        mags.append(np.abs(coeffs, dtype=np.float64).mean(axis=(1, 2)))
    return np.mean(grads, axis=0), np.mean(mags, axis=0)


class Accuracy:
    """Accuracy and size of a codec on the calibration frames."""

    def __init__(self, segment: SegmentSession, frames: Sequence[np.ndarray], num_classes: int,
                 labels: Sequence[np.ndarray] | None = None):
        self.segment, self.frames, self.num_classes = segment, frames, num_classes
        raw = [segment.run(f) for f in frames]
        self.references = labels if labels is not None else raw
        self.raw = self._miou(raw) if labels is not None else 1.0
        if self.raw == 0:
            raise CalibrationError("the model's masks on the raw frames share nothing with the labels")

    def _miou(self, masks) -> float:
        conf = sum(confusion_matrix(m, r, self.num_classes) for m, r in zip(masks, self.references))
        return miou(conf)

    def __call__(self, codec: Codec) -> tuple[float, float]:
        """(accuracy relative to the raw frames, mean bytes per frame)."""
        data = [codec.encode(f) for f in self.frames]
        masks = [self.segment.run(codec.decode(d)) for d in data]
        return self._miou(masks) / self.raw, float(np.mean([len(d) for d in data]))


@dataclass
class LevelStat:
    level: int
    bound: float
    bytes_per_frame: float
    accuracy: float


@dataclass
class Calibration:
    tables: TableSet
    search: list[SearchStep]
    levels: list[LevelStat]
    grace: LevelStat  # GRACE's table for the same B (GRACE's Algorithm 1)
    grace_own: LevelStat  # GRACE with the largest bound of its own that meets the requirement
    info: dict = field(default_factory=dict)
    span_search: list[SearchStep] = field(default_factory=list)  # the finest and coarsest levels' bounds

    def report(self) -> dict:
        return {**self.info, "bound": self.tables.bound, "tables_id": self.tables.id.hex(),
                "search": [asdict(s) for s in self.search], "span_search": [asdict(s) for s in self.span_search],
                "levels": [asdict(s) for s in self.levels],
                "grace": asdict(self.grace), "grace_own": asdict(self.grace_own)}


def level_spacing(bound: float, finest: float, coarsest: float, levels: int) -> tuple[int, float]:
    """(level of B, ratio) of L geometric levels through B that reach ``finest`` below it and ``coarsest``
    above it: B's level splits the L - 1 steps in proportion to the two log-distances, and the ratio is
    the larger step either side needs."""
    finest, coarsest = min(finest, bound), max(coarsest, bound)
    if levels == 1 or coarsest == finest:
        return 0 if levels == 1 else levels // 2, 2 ** 0.25
    below = round((levels - 1) * math.log(bound / finest) / math.log(coarsest / finest))
    below = min(max(below, 1 if bound > finest else 0), levels - (2 if coarsest > bound else 1))
    above = levels - 1 - below
    ratio = max((bound / finest) ** (1 / below) if below else 1.0, (coarsest / bound) ** (1 / above) if above else 1.0)
    return below, ratio


def calibrate(onnx_dir: Path, frames: Sequence[np.ndarray], *, min_accuracy: float = 0.99,
              levels: int = DEFAULT_LEVELS, span: tuple[float, float] = DEFAULT_SPAN,
              labels: Sequence[np.ndarray] | None = None,
              progress: Callable[[str], None] = lambda message: None) -> Calibration:
    if not 0 < min_accuracy <= 1:
        raise CalibrationError(f"--min-accuracy must be in (0, 1], got {min_accuracy}")
    if not 0 < span[1] <= min_accuracy <= span[0] <= 1:
        raise CalibrationError(f"the levels' accuracies must bracket --min-accuracy: finest {span[0]} >= "
                               f"{min_accuracy} >= coarsest {span[1]} > 0")
    sizes = {f.shape for f in frames}
    if len(sizes) != 1:
        raise CalibrationError(f"calibration frames must share one size, got {sorted(sizes)}")
    info = model_info(onnx_dir)
    h, w = frames[0].shape[:2]
    if h % info["size_multiple"] or w % info["size_multiple"]:
        raise CalibrationError(f"{info['name']} needs frames whose sides are multiples of "
                               f"{info['size_multiple']}, got {w}x{h}")
    model = {"name": info["name"], "sha256": head_sha256(onnx_dir), "classes": info["classes"]}
    head = HeadSession(onnx_dir / HEAD_GRAPH)
    segment = SegmentSession(onnx_dir / SEGMENT_GRAPH)

    progress(f"gradients of {len(frames)} frames")
    gradients, magnitudes = mean_gradients(head, frames, TableSet.default())
    hb, wb = blocks_for(h, w)
    num_coeffs = 3 * hb * wb * BLOCK * BLOCK
    measure = Accuracy(segment, frames, len(info["classes"]), labels)

    def uniform_accuracy(bound: float) -> float:
        single = TableSet.from_gradients(gradients, bound, num_coeffs, model, levels=1)
        return measure(make_codec("stac", single))[0]

    positive = gradients[gradients > 0]
    if positive.size == 0:
        raise CalibrationError("the model's gradient is zero on every calibration frame")
    lowest, highest = float(num_coeffs * positive.min() / 2), float(255 * num_coeffs * positive.max() / 2)
    start = 8 * num_coeffs * float(np.median(positive)) / 2  # median step 8
    ceiling = uniform_accuracy(lowest)
    if ceiling < min_accuracy:  # the model's masks move even under every step 1: ask what can be had
        min_accuracy, asked = ceiling - PLATEAU_MARGIN, min_accuracy
        progress(f"every step 1 reaches only {ceiling:.4g} < {asked}: aiming B at {min_accuracy:.4g}")
        span = (span[0], min(span[1], min_accuracy))
    progress(f"searching B for accuracy >= {min_accuracy:.4g}")
    bound, search = search_bound(uniform_accuracy, min_accuracy, start, lowest=lowest, highest=highest)

    fine_target = min(span[0], ceiling - PLATEAU_MARGIN)
    progress(f"searching the bounds of the finest (accuracy {fine_target:.4g}) and coarsest ({span[1]}) levels")
    try:
        finest, fine_search = search_bound(uniform_accuracy, fine_target, bound, lowest=lowest, highest=highest)
    except CalibrationError:
        finest, fine_search = lowest, []  # accuracy is not monotone near the ceiling: every step 1
    coarsest, coarse_search = search_bound(uniform_accuracy, span[1], bound, lowest=lowest, highest=highest)
    start, ratio = level_spacing(bound, finest, coarsest, levels)

    model["calibration"] = {"size": [h, w], "frames": len(frames), "min_accuracy": min_accuracy,
                            "span": [fine_target, span[1]]}
    tables = TableSet.from_gradients(gradients, bound, num_coeffs, model, levels=levels, ratio=ratio, start=start,
                                     magnitudes=magnitudes)
    progress("measuring each level and GRACE")
    stats = []
    for level in range(levels):
        accuracy, size = measure(make_codec(f"stac:level={level}", tables))
        stats.append(LevelStat(level, float(tables.bounds[level]), size, accuracy))
    accuracy, size = measure(make_codec("grace", tables))
    grace = LevelStat(-1, bound, size, accuracy)
    # GRACE's zeroing makes its table far coarser than STAC's at the same B; its own bound makes the
    # baseline comparable at equal accuracy
    progress("searching GRACE's own bound")
    grace_bound, _ = search_bound(lambda b: measure(GraceCodec(tables, b))[0], min_accuracy, bound,
                                  lowest=lowest, highest=highest)
    accuracy, size = measure(GraceCodec(tables, grace_bound))
    grace_own = LevelStat(-1, grace_bound, size, accuracy)
    return Calibration(tables, search, stats, grace, grace_own, {"frames": len(frames), "size": [h, w],
                                                      "min_accuracy": min_accuracy, "model": info["name"],
                                                      "labels": labels is not None, "span": [fine_target, span[1]],
                                                      "span_bounds": [finest, coarsest]},
                       span_search=fine_search + coarse_search)


def calibrate_default(onnx_dir: str | Path, size: tuple[int, int] = DEFAULT_SIZE, **kwargs) -> "Calibration":
    """stac-calibrate's defaults: 25 frames 5 apart from each default source, accuracy >= 0.98."""
    frames = load_frames(list(DEFAULT_SOURCES), size, 25, 5)
    return calibrate(Path(onnx_dir), frames, min_accuracy=DEFAULT_MIN_ACCURACY, **kwargs)
