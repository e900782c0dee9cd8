"""Where the evaluation's clips come from (``load_source``): a sample clip name, a video file, a folder of images,
or a folder of one of the paper's labelled datasets, each giving clips whose labelled frames are scored. A video or
image folder gives one clip, its first ``frames x step`` frames; a dataset many short clips.

Cityscapes (paper VI-A): ``ROOT/leftImg8bit_sequence/SPLIT/CITY/CITY_SEQ_FRAME_leftImg8bit.png`` (30-frame
snippets) and ``ROOT/gtFine/SPLIT/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png`` for the 20th frame of each.
A clip is a snippet up to its labelled frame; labelIds become the 19 train ids, everything else 255.
Without leftImg8bit_sequence, ``leftImg8bit`` gives one-frame clips.

CamVid (paper VI-D), SegNet's layout: ``ROOT/SPLIT/*.png`` and ``ROOT/SPLITannot/*.png`` with class ids
0..10 and 11 for void (-> 255). Frames are named SEQUENCE_FRAME.png; each sequence is a clip, every frame
labelled, 1 fps.
"""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from device_runtime.sources import FOLDER_FPS
from stac.video import IMAGE_SUFFIXES, read_frames, resolve_source, video_fps

from .clips import Clip, Source, read_label

SPLITS = ("val", "test", "train")


def _split(root: Path, exists) -> str:
    for split in SPLITS:
        if exists(split):
            return split
    raise ValueError(f"{root} holds none of the splits {', '.join(SPLITS)}")


def _image(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class Cityscapes:
    name = "cityscapes"
    fps = 17.0  # the sequences' capture rate
    snippet_labelled = 19  # the labelled frame is the 20th of its snippet
    # labelIds 0..33 -> train ids (Cityscapes scripts' labels.py); -1 (licence plate) and unlisted -> 255
    TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    LUT = np.full(256, 255, np.uint8)
    for _id, _train in TRAIN_IDS.items():
        LUT[_id] = _train
    NAME = re.compile(r"(.+)_(\d{6})_(\d{6})_gtFine_labelIds\.png$")

    @staticmethod
    def detect(root: Path) -> bool:
        return root.is_dir() and (root / "gtFine").is_dir() and (
            (root / "leftImg8bit_sequence").is_dir() or (root / "leftImg8bit").is_dir())

    @classmethod
    def load(cls, root: Path, frames: int, step: int) -> list[Clip]:
        images = root / ("leftImg8bit_sequence" if (root / "leftImg8bit_sequence").is_dir() else "leftImg8bit")
        split = _split(root, lambda s: (root / "gtFine" / s).is_dir() and (images / s).is_dir())
        labels = sorted((root / "gtFine" / split).glob("*/*_gtFine_labelIds.png"))
        if not labels:
            raise ValueError(f"{root / 'gtFine' / split} holds no *_gtFine_labelIds.png")
        clips = []
        for label in labels[:frames]:
            city, seq, number = cls.NAME.match(label.name).groups()
            first = max(0, int(number) - (cls.snippet_labelled if images.name.endswith("sequence") else 0))
            files = [images / split / label.parent.name / f"{city}_{seq}_{n:06d}_leftImg8bit.png"
                     for n in range(first, int(number) + 1)]
            files = [f for f in files if f.is_file()]
            if not files or files[-1].name != f"{city}_{seq}_{number}_leftImg8bit.png":
                raise ValueError(f"no image for label {label} in {images / split}")
            pictures = [_image(f) for f in files]
            clips.append(Clip(f"{city}_{seq}_{number}", pictures, cls.fps,
                              {len(pictures) - 1: read_label(label, pictures[-1].shape[:2], cls.LUT)}))
        return clips


class CamVid:
    name = "camvid"
    fps = 1.0
    VOID = 11
    LUT = np.arange(256).astype(np.uint8)
    LUT[VOID:] = 255

    @staticmethod
    def detect(root: Path) -> bool:
        return root.is_dir() and any((root / s).is_dir() and (root / f"{s}annot").is_dir() for s in SPLITS)

    @classmethod
    def load(cls, root: Path, frames: int, step: int) -> list[Clip]:
        split = _split(root, lambda s: (root / s).is_dir() and (root / f"{s}annot").is_dir())
        files = sorted((root / split).glob("*.png"))
        if not files:
            raise ValueError(f"{root / split} holds no .png frames")
        sequences: dict[str, list[Path]] = {}
        for f in files:
            sequences.setdefault(f.stem.rsplit("_", 1)[0], []).append(f)
        clips, left = [], frames * step
        for name, seq in sequences.items():
            if left <= 0:
                break
            seq = seq[:left]
            left -= len(seq)
            pictures = [_image(f) for f in seq]
            annot = root / f"{split}annot"
            labels = {i: read_label(annot / f.name, p.shape[:2], cls.LUT)
                      for i, (f, p) in enumerate(zip(seq, pictures))}
            clips.append(Clip(name, pictures, cls.fps, labels))
        return clips


DATASETS = (Cityscapes, CamVid)


def load_source(spec: str, frames: int, step: int, labels: str | Path | None = None) -> Source:
    """A SOURCE argument -> its clips; ``frames`` is how many frames (labelled frames, for datasets) are scored
    at the codec level, each ``step`` apart."""
    path = resolve_source(spec)
    for dataset in DATASETS:
        if dataset.detect(path):
            if labels:
                raise ValueError(f"{spec} is a {dataset.name} folder: its labels come with it (drop --labels)")
            return Source(spec, dataset.load(path, frames, step))
    fps = FOLDER_FPS if path.is_dir() else video_fps(path)
    clip = Clip(Path(spec).stem or spec, list(read_frames(path, frames * step)), fps)
    if labels:
        files = sorted(p for p in Path(labels).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"label folder {labels} holds no images")
        shape = clip.frames[0].shape[:2]
        clip.labels = {i: read_label(f, shape) for i, f in enumerate(files[:len(clip.frames)])}
    return Source(clip.name, [clip])
