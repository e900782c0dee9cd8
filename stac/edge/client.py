"""Where keyframes go: the Edge interface and its two real implementations.

``local``: in this process, the same decoder and the same ONNX graphs in onnxruntime as the edge runs.
``triton``: tritonclient over gRPC or HTTP to the model repository's ensembles: ``stac`` (BITSTREAM BYTES
[1], optional BOUND FP32 [1] -> CODED_MASK of MASK uint8 [8Hb, 8Wb], NEXT_LEVELS uint8 [1, Rh, Rw] when asked for)
and ``jpeg_segment`` (BITSTREAM -> CODED_MASK of MASK [H', W'], H', W' >= H, W), and ``h264_segment`` (one access
unit of the device's keyframe stream, its POSITION, the stream as the sequence ID: ``stac.edge.streams``). The mask
crosses the network coded (``stac.codec.mask``): the Triton edge's is decoded; the local edge codes its own as the
edge does, to count it, and keeps the mask (the coding is lossless). Both crop it to the frame and size the messages
(``stac.edge.wire``), so the runtime never sees the difference.
"""
from __future__ import annotations

import copy
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..codec.bitstream import read_stac
from ..codec.jpeg import decode_jpeg
from ..codec.mask import MaskError, decode_mask, encode_mask, fit
from ..contract import (ANSWER_SIZE, BITSTREAM, BOUND, CODED_MASK, DEVICE_HEADER, HEAD_GRAPH, IMAGE, NEXT_LEVELS,
                        POSITION, ROUTE_MODELS, SEGMENT_GRAPH, STREAM_DECODER, TABLE_SETS_MODEL, TABLE_SETS_PARAMETER,
                        Tensor)
from ..inference import HeadSession, SegmentSession
from ..tables import TableSet
from .streams import NEED_IDR, Stream, StreamDecoders
from .wire import Exchange, response_bytes


REFUSED = "refused by the edge's proxy"


class EdgeError(RuntimeError):
    """The edge did not answer this request (down, timed out, or answered an error)."""

    @property
    def need_idr(self) -> bool:
        """The edge holds a keyframe stream but not this frame's predecessor: it asks for an IDR."""
        return NEED_IDR in str(self)

    @property
    def refused(self) -> bool:
        """A proxy in front of the edge refused the request at once (every server busy or down): no graph ran it."""
        return REFUSED in str(self)


@dataclass
class EdgeAnswer:
    mask: np.ndarray  # uint8 [H, W]
    next_levels: np.ndarray | None  # uint8 [Rh, Rw]; None for baseline codecs, or when not asked for
    payload: int = 0  # bytes of the answer's tensors: the coded mask, and NEXT_LEVELS when asked for
    wire: int = 0  # bytes of the answer's message on the network (stac.edge.wire)
    received: float | None = None  # a remote edge's: when its message was in the client's hands (time.monotonic)


def exchange(data: bytes, kind: str, bound: float | None = None, stream: Stream | None = None,
             levels: bool = True, size: tuple[int, int] | None = None,
             answer: tuple[int, int] | None = None) -> Exchange:
    """The request a device sends for a keyframe of route ``kind`` (see Edge.segment); ``answer`` with the frame's
    ``size`` asks for the mask at that size."""
    inputs = [(BITSTREAM, np.array([data], dtype=object))]
    if bound is not None and kind == "stac":
        inputs.append((BOUND, np.array([bound], np.float32)))
    if kind == "h264":
        stream = _stream(stream)
        inputs.append((POSITION, np.array([stream.position], np.int64)))
    if answer is not None:
        inputs.append((ANSWER_SIZE, np.array([*size, *answer], np.int32)))
    outputs = [CODED_MASK, NEXT_LEVELS] if kind == "stac" and levels else [CODED_MASK]
    return Exchange(ROUTE_MODELS[kind], inputs, outputs, stream if kind == "h264" else None)


def _answer(request: Exchange, coded, next_levels: np.ndarray | None, size: tuple[int, int],
            mask: np.ndarray | None = None) -> EdgeAnswer:
    """The device's side of an answer: CODED_MASK (BYTES [1]) decoded (unless the ``mask`` it codes is at hand: the
    coding is lossless) and cropped to ``size`` (the frame's, or the one asked for), NEXT_LEVELS taken out of its
    batch of one (as sent: check_answer judges its shape), the bytes sized."""
    if not (isinstance(coded, np.ndarray) and coded.shape == (1,) and isinstance(coded[0], bytes)):
        raise EdgeError(f"bad answer: CODED_MASK {_describe(coded)}, expected one coded mask")
    try:
        mask = decode_mask(coded[0]) if mask is None else mask
    except MaskError as e:
        raise EdgeError(f"bad answer: CODED_MASK: {e}") from None
    outputs = [(CODED_MASK, coded)] + ([(NEXT_LEVELS, next_levels)] if isinstance(next_levels, np.ndarray) else [])
    payload = sum(len(coded[0]) if tensor is CODED_MASK else value.nbytes for tensor, value in outputs)
    if isinstance(next_levels, np.ndarray) and next_levels.ndim == 3 and len(next_levels) == 1:
        next_levels = next_levels[0]
    return EdgeAnswer(mask[:size[0], :size[1]], next_levels, payload, response_bytes(request, outputs))


def check_answer(answer: EdgeAnswer, size: tuple[int, int], regions: tuple[int, int] | None, levels: int) -> None:
    """Raise EdgeError unless ``answer`` is what the device can use: MASK uint8 of ``size`` (the frame's [H, W], or the
    size asked for), and for a STAC
    keyframe (``regions``: its region grid) NEXT_LEVELS uint8 [Rh, Rw] below ``levels``. An edge that answers
    anything else (a bug, a mismatched repository, a hostile server) costs a keyframe, never the loop."""
    mask = answer.mask
    if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8 or mask.shape != tuple(size):
        raise EdgeError(f"bad answer: MASK {_describe(mask)}, expected uint8 {list(size)}")
    if regions is None:
        return
    found = answer.next_levels
    if not isinstance(found, np.ndarray) or found.dtype != np.uint8 or found.shape != tuple(regions):
        raise EdgeError(f"bad answer: NEXT_LEVELS {_describe(found)}, expected uint8 {list(regions)}")
    if found.size and int(found.max()) >= levels:
        raise EdgeError(f"bad answer: NEXT_LEVELS up to {int(found.max())}, the table set has {levels} levels")


def _describe(value) -> str:
    return f"{value.dtype} {list(value.shape)}" if isinstance(value, np.ndarray) else type(value).__name__


class Edge(ABC):
    @abstractmethod
    def segment(self, data: bytes, kind: str, size: tuple[int, int], bound: float | None = None,
                stream: Stream | None = None, levels: bool = True,
                answer: tuple[int, int] | None = None) -> EdgeAnswer:
        """kind (a codec's route): "stac" (STAC bitstream), "jpeg" (any baseline JPEG) or "h264" (one access unit
        of the keyframe stream ``stream``); size (H, W) of the frame; ``bound``: the loss bound NEXT_LEVELS is
        selected against (default: the table set's B); ``levels``: a STAC keyframe's answer carries NEXT_LEVELS
        (only the paper's selection needs them); ``answer``: the mask's size (h, w) in the answer (default the
        frame's)."""

    # whether segment_async requests reach the edge in the order they are made while earlier ones are still being
    # answered: an inter stream can then keep several keyframes in flight
    ordered = False

    def segment_async(self, done: Callable[[EdgeAnswer | Exception], None], *args, **kwargs) -> None:
        """segment(*args, **kwargs) without waiting: ``done`` gets its answer or error, on another thread. Only where
        ``ordered``."""
        raise NotImplementedError(f"{type(self).__name__} answers one request at a time (segment)")

    def end(self, stream: Stream) -> None:
        """The device closed its keyframe stream (``stream.position``: the units it sent): the edge may release the
        stream's decoder."""

    @abstractmethod
    def table_sets(self) -> list[str]:
        """The ids (hex) of the table sets whose STAC keyframes this edge decodes (EdgeError: no answer)."""

    def wait_ready(self, timeout: float) -> None:
        """Return once the edge can answer, or raise EdgeError after ``timeout`` seconds."""

    def close(self) -> None:
        pass


class LocalEdge(Edge):
    def __init__(self, onnx_dir: str | Path, tables: TableSet):
        onnx_dir = Path(onnx_dir)
        self.tables = tables
        self.head = HeadSession(onnx_dir / HEAD_GRAPH)
        self.segment_session = SegmentSession(onnx_dir / SEGMENT_GRAPH)
        self.streams = StreamDecoders()

    def with_tables(self, tables: TableSet) -> "LocalEdge":
        """The same sessions serving another table set (evaluation sweeps bounds without reloading graphs)."""
        other = copy.copy(self)
        other.tables = tables
        return other

    def segment(self, data: bytes, kind: str, size: tuple[int, int], bound: float | None = None,
                stream: Stream | None = None, levels: bool = True,
                answer: tuple[int, int] | None = None) -> EdgeAnswer:
        next_levels = None
        try:
            request = exchange(data, kind, bound, stream, levels, size, answer)
            if kind == "stac":
                result = self.head.run(read_stac(data, self.tables), self.tables, bound)
                mask, next_levels = result.padded_mask, result.next_levels[None] if levels else None
            else:  # as the edge's ensembles: the image padded to the graph's multiple, the mask not cropped
                image = self.streams.decode(request.stream.id, request.stream.position, data) if kind == "h264" \
                    else decode_jpeg(data)
                mask = self.segment_session.run(image, crop=False)
            if answer is not None:
                mask = fit(mask, size, answer)
        except ValueError as e:  # BitstreamError, an undecodable JPEG or H.264 unit, NeedIdr, a size that cannot be
            raise EdgeError(str(e)) from e
        return _answer(request, np.array([encode_mask(mask)], dtype=object), next_levels, answer or size, mask)

    def end(self, stream: Stream) -> None:
        self.streams.end(stream.id)

    def table_sets(self) -> list[str]:
        return [self.tables.id.hex()]


def _stream(stream: Stream | None) -> Stream:
    if stream is None:
        raise ValueError("an H.264 keyframe needs its stream (ID and position)")
    return stream


class TritonEdge(Edge):
    """url: grpc://host:port or http://host:port."""

    def __init__(self, url: str, timeout: float = 10.0, device: str | None = None):
        """``device``: this device's ID, sent with every request (a proxy keeps each device on one server by it;
        default: drawn here, one per client)."""
        scheme, _, address = url.partition("://")
        if scheme not in ("grpc", "http") or not address:
            raise ValueError(f"edge URL must be grpc://HOST:PORT or http://HOST:PORT, got {url!r}")
        if scheme == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
        self.client_module, self.scheme, self.url, self.timeout = client, scheme, address, timeout
        kwargs = {} if scheme == "grpc" else {"connection_timeout": timeout, "network_timeout": timeout}
        self.client = client.InferenceServerClient(url=address, **kwargs)
        self.headers = {DEVICE_HEADER: device or secrets.token_hex(8)}

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                if self.client.is_server_ready() and self.client.is_model_ready(ROUTE_MODELS["stac"]):
                    return
                last = "server up but the stac model is not ready"
            except Exception as e:  # connection refused, DNS, timeouts: all mean "not yet"
                last = str(e).splitlines()[0] if str(e) else type(e).__name__
            time.sleep(0.5)
        raise EdgeError(f"edge {self.scheme}://{self.url} not ready after {timeout:g} s: {last}")

    def segment(self, data: bytes, kind: str, size: tuple[int, int], bound: float | None = None,
                stream: Stream | None = None, levels: bool = True,
                answer: tuple[int, int] | None = None) -> EdgeAnswer:
        request, inputs, outputs, extra = self._request(data, kind, size, bound, stream, levels, answer)
        return self._unpack(request, self._infer(request.model, inputs, outputs, extra), answer or size)

    @property
    def ordered(self) -> bool:
        """gRPC: calls made one after another on the one channel reach the server in that order."""
        return self.scheme == "grpc"

    def segment_async(self, done: Callable[[EdgeAnswer | Exception], None], data: bytes, kind: str,
                      size: tuple[int, int], bound: float | None = None, stream: Stream | None = None,
                      levels: bool = True, answer: tuple[int, int] | None = None) -> None:
        if not self.ordered:
            super().segment_async(done)
        request, inputs, outputs, extra = self._request(data, kind, size, bound, stream, levels, answer)

        def callback(result, error) -> None:
            try:
                if error is not None:
                    raise _edge_error(request.model, error)
                done(self._unpack(request, result, answer or size))
            except Exception as e:  # every request gets its answer or its error
                done(e)

        try:
            self.client.async_infer(request.model, inputs, callback, outputs=outputs, **extra)
        except Exception as e:
            done(_edge_error(request.model, e))

    def _request(self, data, kind, size, bound, stream, levels, answer) -> tuple[Exchange, list, list, dict]:
        """A keyframe's request as the client sends it: what it is, its inputs and outputs, the call's options."""
        request = exchange(data, kind, bound, stream, levels, size, answer)
        inputs = [self._input(tensor, value) for tensor, value in request.inputs]
        outputs = [self.client_module.InferRequestedOutput(tensor.name) for tensor in request.outputs]
        extra = {**self._timeout(), "headers": self.headers}
        if request.stream is not None:
            extra.update(sequence_id=request.stream.id, sequence_start=request.stream.start)
        return request, inputs, outputs, extra

    @staticmethod
    def _unpack(request: Exchange, result, size: tuple[int, int]) -> EdgeAnswer:
        received = time.monotonic()  # before the device's own work on it (decoding the mask)
        # checked here and by the runtime (check_answer), not converted: a wrong type fails
        next_levels = result.as_numpy(NEXT_LEVELS.name) if NEXT_LEVELS in request.outputs else None
        answer = _answer(request, result.as_numpy(CODED_MASK.name), next_levels, size)
        answer.received = received
        return answer

    def table_sets(self) -> list[str]:
        try:
            config = self.client.get_model_config(TABLE_SETS_MODEL) if self.scheme == "http" else \
                self.client.get_model_config(TABLE_SETS_MODEL, as_json=True)["config"]
            return config["parameters"][TABLE_SETS_PARAMETER]["string_value"].split(",")
        except (KeyError, TypeError) as e:
            raise ValueError(f"{TABLE_SETS_MODEL}: its config names no {TABLE_SETS_PARAMETER} (a repository from an "
                             f"older export/build.py: rebuild it)") from e
        except Exception as e:  # tritonclient raises its own exception types per protocol
            raise EdgeError(f"{TABLE_SETS_MODEL}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e

    def end(self, stream: Stream) -> None:
        inputs = [self._input(BITSTREAM, np.array([b""], dtype=object)),
                  self._input(POSITION, np.array([stream.position], np.int64))]
        self._infer(STREAM_DECODER, inputs, [self.client_module.InferRequestedOutput(IMAGE.name)],
                    {**self._timeout(), "headers": self.headers, "sequence_id": stream.id, "sequence_end": True})

    def _input(self, tensor: Tensor, value: np.ndarray):
        """The request's ``tensor`` (tritonclient spells the STRING type BYTES)."""
        wire = self.client_module.InferInput(tensor.name, list(value.shape), "BYTES" if tensor.dtype == "STRING"
                                             else tensor.dtype)
        wire.set_data_from_numpy(value)
        return wire

    def _timeout(self) -> dict:
        """infer()'s per-request time limit, as each protocol's client spells it."""
        return {"client_timeout": self.timeout} if self.scheme == "grpc" else {"timeout": int(self.timeout * 1e6)}

    def _infer(self, model: str, inputs: list, outputs: list, extra: dict):
        try:
            return self.client.infer(model, inputs, outputs=outputs, **extra)
        except Exception as e:  # tritonclient raises its own exception types per protocol
            raise _edge_error(model, e) from e

    def close(self) -> None:
        self.client.close()


def _edge_error(model: str, error: Exception) -> EdgeError:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    # the proxy's 503: tritonclient's HTTP exception carries the status, gRPC's names it in its message
    status = error.status() if callable(getattr(error, "status", None)) else None
    if status == "503" or "status: 503" in text:
        return EdgeError(f"{model}: {REFUSED}: {text}")
    return EdgeError(f"{model}: {text}")


def check_table_set(edge: Edge, tables: TableSet) -> None:
    """The handshake: ValueError unless the edge holds ``tables`` (else it would refuse every STAC keyframe)."""
    held = edge.table_sets()
    if tables.id.hex() not in held:
        raise ValueError(f"the edge holds table set {', '.join(held)}, this device codes with {tables.id.hex()}: "
                         f"every STAC keyframe would be refused; pass --tables with the edge's tables.json (the "
                         f"one export/build.py wrote into its model repository)")


def make_edge(spec: str, tables: TableSet, onnx_dir: str | Path | None = None, timeout: float = 10.0) -> Edge:
    """``local`` (needs onnx_dir) or a grpc:// / http:// URL."""
    if spec == "local":
        if onnx_dir is None:
            raise ValueError("--edge local needs --onnx-dir (graphs from `stac-export --onnx-only`)")
        return LocalEdge(onnx_dir, tables)
    return TritonEdge(spec, timeout)
