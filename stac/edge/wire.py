"""What one keyframe request and its answer weigh on the network, whichever Edge serves them.

A device reaches the edge through Triton's inference protocol over gRPC: each request is a ModelInferRequest (the
model, each tensor's name, type and shape, the sequence parameters of an H.264 stream, the tensors' bytes) and each
answer a ModelInferResponse, each message behind gRPC's 5-byte length prefix. ``Exchange`` spells what a device
sends and asks for; ``request_bytes`` and ``response_bytes`` build the messages as tritonclient and Triton do and
size them with protobuf, so the in-process edge of the evaluation counts exactly what a Triton edge carries (tested
against the real server's messages). Not counted: HTTP/2 frame headers (9 bytes per frame, two to four frames a
message), the header blocks (HPACK: the device's ID header, ``stac.contract.DEVICE_HEADER``, costs about 30 bytes
once per connection and one byte a request after that) and TCP/IP headers (40-52 bytes a packet); over HTTP the
protocol's JSON header replaces the protobuf one.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..contract import Tensor
from .streams import Stream

GRPC_PREFIX = 5  # bytes before each gRPC message: a compression flag and a 4-byte length


@dataclass
class Exchange:
    """One request: the model, its input tensors, the outputs asked for, and (H.264) the stream it belongs to."""
    model: str
    inputs: list[tuple[Tensor, np.ndarray]]
    outputs: list[Tensor]
    stream: Stream | None = None


def _sequence(message, stream: Stream) -> None:
    message.parameters["sequence_id"].int64_param = stream.id
    message.parameters["sequence_start"].bool_param = stream.start
    message.parameters["sequence_end"].bool_param = False


def raw_contents(value: np.ndarray) -> bytes:
    """A tensor's bytes as the protocol carries them: BYTES elements each behind a 4-byte little-endian length."""
    if value.dtype == object:
        return b"".join(len(item).to_bytes(4, "little") + bytes(item) for item in value.reshape(-1))
    return value.tobytes()


def _wire_type(tensor: Tensor) -> str:
    return "BYTES" if tensor.dtype == "STRING" else tensor.dtype


def request_bytes(exchange: Exchange) -> int:
    from tritonclient.grpc import service_pb2

    message = service_pb2.ModelInferRequest(model_name=exchange.model)
    for tensor, value in exchange.inputs:
        message.inputs.add(name=tensor.name, datatype=_wire_type(tensor), shape=value.shape)
        message.raw_input_contents.append(raw_contents(value))
    for tensor in exchange.outputs:
        message.outputs.add(name=tensor.name)
    if exchange.stream is not None:
        _sequence(message, exchange.stream)
    return message.ByteSize() + GRPC_PREFIX


def response_bytes(exchange: Exchange, outputs: Sequence[tuple[Tensor, np.ndarray]]) -> int:
    """The answer to ``exchange`` holding ``outputs`` (Triton echoes the sequence parameters in every answer)."""
    from tritonclient.grpc import service_pb2

    message = service_pb2.ModelInferResponse(model_name=exchange.model, model_version="1")
    _sequence(message, exchange.stream or Stream(0, 0, False))
    for tensor, value in outputs:
        message.outputs.add(name=tensor.name, datatype=_wire_type(tensor), shape=value.shape)
        message.raw_output_contents.append(raw_contents(value))
    return message.ByteSize() + GRPC_PREFIX
