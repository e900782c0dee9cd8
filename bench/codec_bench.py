"""Codec benchmark: every codec over the same frames, reported as ratios to JPEG measured in the same run."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from stac.codec import Codec
from stac.video import psnr

BASELINE = "jpeg"


@dataclasses.dataclass
class CodecResult:
    spec: str
    frames: int
    bytes_total: int
    bytes_per_frame: float
    kbps: float
    psnr_db: float  # mean over frames
    encode_ms: float  # median per frame
    decode_ms: float  # median per frame
    ratio_to_jpeg: dict[str, float] = dataclasses.field(default_factory=dict)


def run_codec(codec: Codec, frames: Sequence[np.ndarray], fps: float, save_dir: Path | None = None,
              tick: Callable[[], None] = lambda: None) -> CodecResult:
    codec.reset()
    sizes, psnrs, enc_ms, dec_ms = [], [], [], []
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        for name, content in codec.side_files().items():
            (save_dir / name).write_bytes(content)
    for i, frame in enumerate(frames):
        t0 = time.perf_counter()
        data = codec.encode(frame)
        t1 = time.perf_counter()
        decoded = codec.decode(data)
        t2 = time.perf_counter()
        sizes.append(len(data))
        psnrs.append(psnr(frame, decoded))
        enc_ms.append((t1 - t0) * 1e3)
        dec_ms.append((t2 - t1) * 1e3)
        if save_dir is not None:
            (save_dir / f"frame_{i:05d}{codec.ext}").write_bytes(data)
        tick()
    total = int(sum(sizes))
    return CodecResult(codec.spec, len(frames), total, total / len(frames), total * 8 / 1000 / (len(frames) / fps),
                       float(np.mean(psnrs)), float(np.median(enc_ms)), float(np.median(dec_ms)))


def run_codec_bench(codecs: Sequence[Codec], frames: Sequence[np.ndarray], fps: float,
                    save_dir: Path | None = None, tick: Callable[[], None] = lambda: None) -> list[CodecResult]:
    """Runs every codec on the same frames; the first JPEG codec is the baseline of the ratios."""
    if not frames:
        raise ValueError("no frames to benchmark")
    if not any(c.name == BASELINE for c in codecs):
        raise ValueError("the codec list needs a jpeg codec as the baseline of the ratios")
    results = []
    for codec in codecs:
        out = None if save_dir is None else save_dir / codec.spec.replace(":", "_").replace(",", "_").replace("=", "")
        results.append(run_codec(codec, frames, fps, out, tick))
    base = next(r for r, c in zip(results, codecs) if c.name == BASELINE)
    for r in results:
        r.ratio_to_jpeg = {k: getattr(r, k) / getattr(base, k)
                           for k in ("bytes_per_frame", "encode_ms", "decode_ms")}
    return results


def format_table(results: Sequence[CodecResult]) -> str:
    head = (f"{'codec':44s} {'B/frame':>9s} {'Kbps':>9s} {'PSNR dB':>8s} {'enc ms':>7s} {'dec ms':>7s}"
            f" {'size/jpeg':>9s} {'enc/jpeg':>8s} {'dec/jpeg':>8s}")
    rows = [head]
    for r in results:
        x = r.ratio_to_jpeg
        rows.append(f"{r.spec:44s} {r.bytes_per_frame:9.0f} {r.kbps:9.1f} {r.psnr_db:8.2f} {r.encode_ms:7.1f}"
                    f" {r.decode_ms:7.1f} {x['bytes_per_frame']:9.3f} {x['encode_ms']:8.2f} {x['decode_ms']:8.2f}")
    return "\n".join(rows)
