"""onnxruntime sessions for the exported graphs (no torch: the device and the edge both use this).

``HeadSession`` runs stac_head.onnx on a decoded STAC bitstream; ``SegmentSession`` runs segment.onnx
on an RGB frame. Sizes: the head sees the padded block grid and its MASK is cropped back to H x W;
the segment graph needs H and W to be multiples of the model's ``size_multiple`` (model.json), so
frames are edge-padded up to one and the mask cropped.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .codec.bitstream import StacFrame
from .codec.transform import pad_to_multiple
from .contract import BOUND, COEFFS, HEAD_GRAPH, IMAGE, LEVELS, MODEL_INFO, TABLES
from .tables import TableSet


def model_info(onnx_dir: str | Path) -> dict:
    """model.json, written beside the exported graphs: name, classes, native_size, size_multiple, ..."""
    path = Path(onnx_dir) / MODEL_INFO
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (export the model with export/build.py)")
    return json.loads(path.read_text())


def head_sha256(onnx_dir: str | Path) -> str:
    """Identity of the STAC head graph, as tables.json records it."""
    return hashlib.sha256((Path(onnx_dir) / HEAD_GRAPH).read_bytes()).hexdigest()


def check_tables(tables: TableSet, onnx_dir: str | Path) -> None:
    """Tables calibrated for another model would pick meaningless levels: ValueError for a mismatch."""
    if not tables.model.get("sha256"):
        return  # the built-in set belongs to no model
    digest = head_sha256(onnx_dir)
    if digest != tables.model["sha256"]:
        raise ValueError(f"tables.json was calibrated for {tables.model.get('name')} (stac_head sha256 "
                         f"{tables.model['sha256'][:12]}), but {onnx_dir} holds a different head ({digest[:12]}); "
                         f"recalibrate or pass the matching --onnx-dir")


def check_bound(bound: float) -> float:
    """A requested loss bound, or ValueError: it must be a positive finite number (of float32's range)."""
    value = float(bound)
    if not (0 < value < 3e38):
        raise ValueError(f"BOUND must be a positive finite number, got {bound}")
    return value


def session(path: str | Path, threads: int | None = None, providers: list[str] | None = None,
            profile: str | None = None, spin: bool = True):
    """``profile``: a file prefix; onnxruntime then records every node's time (``end_profiling()``). ``spin``: the
    threads keep spinning a while after each run, which saves a device a little latency but, on an edge whose cores
    several models share, burns the CPU the next request needs."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX graph {path} does not exist (build it with export/build.py)")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if profile:
        options.enable_profiling, options.profile_file_prefix = True, profile
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def batch_runs(shapes: list[tuple[tuple[int, ...], ...]], max_values: int | None) -> list[list[int]]:
    """Requests (each by its inputs' shapes, then anything else a run's requests must agree on) -> the graph runs
    that serve them: indices of requests that agree, in order, each run's first inputs holding at most ``max_values``
    values together (None: no bound; a request over it still runs, alone). The bound keeps a batch of large frames
    from multiplying the graph's memory: eight devices sending 2048x2048 STAC keyframes at once took the edge to
    5.4 GB of RSS unbounded, 3.0 GB bounded, 1.8 GB unbatched (docs/edge.md)."""
    groups: dict[tuple, list[int]] = {}
    for i, request in enumerate(shapes):
        groups.setdefault(tuple(map(tuple, request)), []).append(i)
    runs = []
    for request, members in groups.items():
        values = max(1, int(np.prod(request[0])))
        step = len(members) if max_values is None else max(1, max_values // values)
        runs.extend(members[start:start + step] for start in range(0, len(members), step))
    return runs


def instance_threads(config: dict, cores: int) -> int | None:
    """onnxruntime threads for each of the model's instances: the cores shared out between them (None, all of them,
    for one instance). Measured on a 16-core machine (docs/edge.md), N sessions of 16/N threads each served 2.5x
    the keyframes per second of one session of 16 at 8 instances; N sessions of 16 threads each would fight."""
    count = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
    return max(1, cores // count) if count > 1 else None


@dataclass
class HeadResult:
    padded_mask: np.ndarray  # uint8 [8Hb, 8Wb] class ids, the graph's one mask (the edge answers this)
    next_levels: np.ndarray  # uint8 [Rh, Rw]
    region_cost: np.ndarray  # float32 [Rh, Rw, L]
    grad: np.ndarray  # float32 [3, Hb, Wb, 64]
    loss: float
    height: int
    width: int

    @property
    def mask(self) -> np.ndarray:
        """uint8 [H, W]: the frame's class ids."""
        return self.padded_mask[:self.height, :self.width]


class HeadSession:
    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None,
                 profile: str | None = None):
        self.session = session(path, threads, providers, profile)

    @staticmethod
    def feed(frame: StacFrame, tables: TableSet, bound: float | None = None) -> dict[str, np.ndarray]:
        """The graph's inputs for one keyframe, a batch of one; ``bound``: what NEXT_LEVELS is selected against
        (default: the table set's B)."""
        return {COEFFS.name: frame.coeffs[None], LEVELS.name: frame.levels[None], TABLES.name: tables.steps[None],
                BOUND.name: np.array([[check_bound(tables.bound if bound is None else bound)]], dtype=np.float32)}

    def run(self, frame: StacFrame, tables: TableSet, bound: float | None = None) -> HeadResult:
        outputs = self.session.run(None, self.feed(frame, tables, bound))
        mask, next_levels, cost, grad, loss = (out[0] for out in outputs)  # the batch's one frame
        return HeadResult(mask, next_levels, cost, grad, float(loss[0]), frame.height, frame.width)


class SegmentSession:
    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None,
                 profile: str | None = None):
        path = Path(path)
        self.session = session(path, threads, providers, profile)
        has_info = (path.parent / MODEL_INFO).is_file()
        self.size_multiple = model_info(path.parent).get("size_multiple", 8) if has_info else 8

    def run(self, image: np.ndarray, crop: bool = True) -> np.ndarray:
        """RGB uint8 [H, W, 3] -> class ids uint8 [H, W] (``crop`` False: of the image edge-padded to the graph's
        multiple, as the edge's ensembles answer)."""
        h, w = image.shape[:2]
        padded = np.ascontiguousarray(pad_to_multiple(image, self.size_multiple))
        mask = self.session.run(None, {IMAGE.name: padded[None]})[0][0]
        return mask[:h, :w] if crop else mask
