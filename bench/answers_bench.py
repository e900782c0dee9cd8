"""What an answer costs: the mask coded as the edge codes it (stac.codec.mask) against the raw class ids a device
would otherwise receive and against deflate, the general-purpose alternative (Triton's own gRPC response compression
is gzip), with the CPU both ends spend, on the model's masks of real frames."""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

import numpy as np

from stac.codec.mask import decode_mask, encode_mask


@dataclass
class AnswerCost:
    label: str  # clip and size
    masks: int
    raw: float  # bytes per answer, median
    coded: float
    deflate: float  # zlib level 9 of the raw class ids, as gzip would send them
    packed: float  # zlib level 9 of the class ids packed to bits (two-class masks)
    encode_ms: float  # median per mask: the edge's CPU
    decode_ms: float  # the device's


def answer_costs(label: str, masks: list[np.ndarray]) -> AnswerCost:
    coded, deflated, packed, encode, decode = [], [], [], [], []
    for mask in masks:
        started = time.perf_counter()
        data = encode_mask(mask)
        encode.append(time.perf_counter() - started)
        started = time.perf_counter()
        decoded = decode_mask(data)
        decode.append(time.perf_counter() - started)
        if not np.array_equal(decoded, mask):
            raise AssertionError(f"{label}: a coded mask did not decode to itself")
        coded.append(len(data))
        deflated.append(len(zlib.compress(mask.tobytes(), 9)))
        packed.append(len(zlib.compress(np.packbits(mask).tobytes(), 9)))
    return AnswerCost(label, len(masks), float(masks[0].size), float(np.median(coded)), float(np.median(deflated)),
                      float(np.median(packed)), float(np.median(encode)) * 1e3, float(np.median(decode)) * 1e3)


def format_costs(costs: list[AnswerCost]) -> str:
    lines = [f"{'clip':28} {'raw B':>9} {'coded B':>8} {'raw/coded':>9} {'deflate B':>9} {'packed B':>8} "
             f"{'enc ms':>7} {'dec ms':>7}"]
    lines += [f"{c.label:28} {c.raw:9.0f} {c.coded:8.0f} {c.raw / c.coded:9.0f} {c.deflate:9.0f} {c.packed:8.0f} "
              f"{c.encode_ms:7.2f} {c.decode_ms:7.2f}" for c in costs]
    return "\n".join(lines)
