"""The contract between export, edge and device, spelled once: graph files, tensors (name, Triton data type, dims),
the Triton models and their signatures, which model a device asks for each kind of keyframe, and the table-set
handshake. Whatever two sides must spell alike is read from here.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

# what export/build.py writes into a model's ONNX folder
HEAD_GRAPH = "stac_head.onnx"
SEGMENT_GRAPH = "segment.onnx"
MODEL_INFO = "model.json"


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # Triton's data type without TYPE_: INT16, UINT8, FP32, INT64, STRING (BYTES to tritonclient)
    dims: tuple[int, ...]  # -1: any size
    optional: bool = False


BITSTREAM = Tensor("BITSTREAM", "STRING", (1,))  # one keyframe's bytes
BOUND = Tensor("BOUND", "FP32", (1,))  # the loss bound NEXT_LEVELS is selected against
POSITION = Tensor("POSITION", "INT64", (1,))  # an H.264 unit's place in its device's stream
COEFFS = Tensor("COEFFS", "INT16", (3, -1, -1, 64))  # quantized, [Y/Cb/Cr, Hb, Wb, 8x8 in natural order]
LEVELS = Tensor("LEVELS", "UINT8", (-1, -1))  # [Rh, Rw]: each region's table level
TABLES = Tensor("TABLES", "FP32", (-1, 3, 64))  # [L, Y/Cb/Cr, 8x8]: the table set's quantizer steps
# Frames and masks between the edge's models are batches: [N, H, W, 3] RGB and [N, H, W] class ids, and so are the
# head's tensors (``batched``). A decoder gives one frame; both graphs take N same-size frames, which Triton's dynamic
# batcher may gather from several devices (stac.edge.repository).
MAX_BATCH = 64  # frames in one run of a graph, at most (the batch dimension's bound at export)
# a graph model's config parameter: the values a run's first input holds at most, the frames of one batch together
# (both graphs' first input, IMAGE or COEFFS, holds 3 values a pixel)
MAX_RUN_VALUES = "max_run_values"
IMAGE = Tensor("IMAGE", "UINT8", (-1, -1, -1, 3))
MASK = Tensor("MASK", "UINT8", (-1, -1, -1))
CODED_MASK = Tensor("CODED_MASK", "STRING", (1,))  # MASK coded losslessly (stac.codec.mask): what a device receives
# (H, W, h, w): MASK cropped to the frame's H x W and given at h x w, the size the device uses it at
ANSWER_SIZE = Tensor("ANSWER_SIZE", "INT32", (4,), optional=True)
NEXT_LEVELS = Tensor("NEXT_LEVELS", "UINT8", (-1, -1))  # [Rh, Rw]: Algorithm 1's levels for the next keyframe
REGION_COST = Tensor("REGION_COST", "FP32", (-1, -1, -1))  # [Rh, Rw, L]
GRAD = Tensor("GRAD", "FP32", (3, -1, -1, 64))  # d loss / d dequantized coefficient
LOSS = Tensor("LOSS", "FP32", (1,))


def batched(tensor: Tensor) -> Tensor:
    """``tensor`` for N frames at once: a batch dimension in front."""
    return replace(tensor, dims=(-1, *tensor.dims))


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


# the graphs
HEAD = Signature(tuple(map(batched, (COEFFS, LEVELS, TABLES, BOUND))),
                 (MASK, *map(batched, (NEXT_LEVELS, REGION_COST, GRAD, LOSS))))
SEGMENT = Signature((IMAGE,), (MASK,))

# the Triton models: name -> signature (ensembles chain the others)
STAC_DECODE, STAC_HEAD, STAC = "stac_decode", "stac_head", "stac"
SEGMENT_MODEL = "segment"
MASK_ENCODE = "mask_encode"
JPEG_DECODE, JPEG_SEGMENT = "jpeg_decode", "jpeg_segment"
H264_DECODE, H264_SEGMENT = "h264_decode", "h264_segment"
SIGNATURES = {
    STAC_DECODE: Signature((BITSTREAM, replace(BOUND, optional=True)), HEAD.inputs),
    STAC_HEAD: HEAD,
    # NEXT_LEVELS reaches the device as the head gives it, a batch of one: [1, Rh, Rw]
    STAC: Signature((BITSTREAM, replace(BOUND, optional=True), ANSWER_SIZE), (CODED_MASK, batched(NEXT_LEVELS))),
    SEGMENT_MODEL: SEGMENT,
    MASK_ENCODE: Signature((MASK, ANSWER_SIZE), (CODED_MASK,)),
    JPEG_DECODE: Signature((BITSTREAM,), (IMAGE,)),
    JPEG_SEGMENT: Signature((BITSTREAM, ANSWER_SIZE), (CODED_MASK,)),
    H264_DECODE: Signature((BITSTREAM, POSITION), (IMAGE,)),
    H264_SEGMENT: Signature((BITSTREAM, POSITION, ANSWER_SIZE), (CODED_MASK,)),
}
MODELS = tuple(SIGNATURES)

# what a device asks for each route (a codec's kind of keyframe)
ROUTE_MODELS = {"stac": STAC, "jpeg": JPEG_SEGMENT, "h264": H264_SEGMENT}
# where END goes: an empty unit ends a device's stream, with nothing to segment
STREAM_DECODER = H264_DECODE

# the handshake: this model's config parameter lists the ids (hex, comma-separated) of the table sets the edge holds
TABLE_SETS_MODEL = STAC_DECODE
TABLE_SETS_PARAMETER = "table_sets"

# the header every request carries its device's ID in: a proxy in front of several servers keeps each device on one
# server by it (stac.edge.proxy), so the server holding a device's H.264 stream gets all of its units
DEVICE_HEADER = "stac-device"
