"""Triton python-backend models: thin adapters (unpack tensors, call stac, pack tensors).

Each generated ``model.py`` in the repository is one line importing a class from here as
``TritonPythonModel``. A request that cannot be served gets an error response naming the problem; the
model, and the server, keep serving.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the python backend stub

from ..codec.bitstream import read_stac
from ..codec.jpeg import decode_jpeg
from ..codec.mask import encode_mask, fit
from ..codec.transform import check_size, pad_to_multiple
from ..contract import ANSWER_SIZE, BITSTREAM, BOUND, CODED_MASK, IMAGE, MASK, MAX_RUN_VALUES, POSITION
from ..inference import HeadSession, batch_runs, instance_threads, session
from ..tables import TableSet
from .streams import StreamDecoders


def _model_dir(args) -> Path:
    return Path(args["model_repository"]) / args["model_version"]


def _parameter(args, key: str) -> str:
    params = json.loads(args["model_config"]).get("parameters", {})
    if key not in params:
        raise pb_utils.TritonModelException(f"config.pbtxt lacks parameter {key!r}")
    return params[key]["string_value"]


def _limits(args) -> tuple[int, int, int]:
    """What a decode model accepts before any work: pixels and side of a frame, bytes of a request."""
    return tuple(int(_parameter(args, key)) for key in ("max_pixels", "max_side", "max_bytes"))


def _bitstream(request, max_bytes: int) -> bytes:
    value = pb_utils.get_input_tensor_by_name(request, BITSTREAM.name).as_numpy().reshape(-1)
    if value.size != 1:
        raise ValueError(f"BITSTREAM must hold exactly one element, got {value.size}")
    data = value[0]
    data = data if isinstance(data, bytes) else bytes(data)
    if len(data) > max_bytes:
        raise ValueError(f"BITSTREAM of {len(data)} bytes exceeds this edge's limit of {max_bytes} bytes")
    return data


def _response(outputs: dict[str, np.ndarray]):
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, value) for name, value in outputs.items()])


def _serve(requests, handle):
    """One response per request: its outputs, or an error that fails only that request. Bad input (ValueError:
    BitstreamError, TableSetError, undecodable or oversized images, wrong sizes) is INVALID_ARGUMENT (HTTP 400)
    with its message; anything else is INTERNAL with the exception's type only, so no traceback or server path
    reaches a client."""
    responses = []
    for request in requests:
        try:
            responses.append(_response(handle(request)))
        except ValueError as e:
            responses.append(pb_utils.InferenceResponse(
                error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG)))
        except Exception as e:  # a bug fails its request, not the model
            responses.append(pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"internal error ({type(e).__name__})", pb_utils.TritonError.INTERNAL)))
    return responses


def _bound(request, default: float) -> float:
    """The request's optional BOUND (FP32 [1]), or ``default``; checked where it is fed to the head
    (HeadSession.feed)."""
    tensor = pb_utils.get_input_tensor_by_name(request, BOUND.name)
    if tensor is None:
        return default
    value = tensor.as_numpy().reshape(-1)
    if value.size != 1:
        raise ValueError(f"BOUND must hold exactly one element, got {value.size}")
    return float(value[0])


class StacDecode:
    """BITSTREAM (BYTES [1]), optional BOUND (FP32 [1]) -> COEFFS, LEVELS, the TABLES of the set it was coded
    with, and BOUND: the request's, or that set's B; each a batch of one (the head's inputs)."""

    def initialize(self, args):
        folder = _model_dir(args)
        self.tables = [TableSet.load(folder / name) for name in _parameter(args, "tables").split(",")]
        self.max_pixels, self.max_side, self.max_bytes = _limits(args)

    def _handle(self, request):
        frame = read_stac(_bitstream(request, self.max_bytes), self.tables, self.max_pixels, self.max_side)
        return HeadSession.feed(frame, frame.tables, _bound(request, frame.tables.bound))

    def execute(self, requests):
        return _serve(requests, self._handle)


class JpegDecode:
    """BITSTREAM (a baseline JPEG) -> IMAGE uint8 [1, H', W', 3], edge-padded to the segment graph's multiple."""

    def initialize(self, args):
        self.multiple = int(_parameter(args, "size_multiple"))
        self.max_pixels, self.max_side, self.max_bytes = _limits(args)

    def _image(self, image: np.ndarray) -> dict:
        check_size("image", *image.shape[:2], self.max_pixels, self.max_side)
        return {IMAGE.name: pad_to_multiple(image, self.multiple)[None]}

    def _handle(self, request):
        return self._image(decode_jpeg(_bitstream(request, self.max_bytes), self.max_pixels, self.max_side))

    def execute(self, requests):
        return _serve(requests, self._handle)


class H264Decode(JpegDecode):
    """One access unit of a device's keyframe stream (BITSTREAM, POSITION INT64 [1]; the stream is the request's
    sequence correlation ID) -> IMAGE as JpegDecode's. Stateful: Triton's sequence batcher keeps each stream's
    requests in order on this instance (stac.edge.streams). END releases the stream's decoder; an empty unit with
    END only does that (its IMAGE is empty)."""

    def initialize(self, args):
        super().initialize(args)
        self.streams = StreamDecoders()

    def _handle(self, request):
        stream = request.correlation_id()
        position = pb_utils.get_input_tensor_by_name(request, POSITION.name).as_numpy().reshape(-1)
        if position.size != 1:
            raise ValueError(f"POSITION must hold exactly one element, got {position.size}")
        data = _bitstream(request, self.max_bytes)
        ending = request.flags() & pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END
        if ending and not data:  # the device closed its stream: nothing to decode, an empty IMAGE
            self.streams.end(stream)
            return {IMAGE.name: np.zeros((1, 0, 0, 3), np.uint8)}
        outputs = self._image(self.streams.decode(stream, int(position[0]), data, self.max_pixels, self.max_side))
        if ending:
            self.streams.end(stream)
        return outputs


class MaskEncode:
    """MASK uint8 [1, H', W'], optional ANSWER_SIZE INT32 [4] -> CODED_MASK (BYTES [1]): the answer as it crosses
    the network, a few hundred bytes."""

    def initialize(self, args):
        pass

    def _handle(self, request):
        masks = pb_utils.get_input_tensor_by_name(request, MASK.name).as_numpy()
        if masks.shape[0] != 1:
            raise ValueError(f"MASK must hold one mask, got {masks.shape[0]}")
        mask = masks[0]
        size = pb_utils.get_input_tensor_by_name(request, ANSWER_SIZE.name)
        if size is not None:
            values = size.as_numpy().reshape(-1)
            if values.size != 4:
                raise ValueError(f"ANSWER_SIZE must hold 4 elements (H, W, h, w), got {values.size}")
            mask = fit(mask, (int(values[0]), int(values[1])), (int(values[2]), int(values[3])))
        return {CODED_MASK.name: np.array([encode_mask(np.ascontiguousarray(mask))], dtype=object)}

    def execute(self, requests):
        return _serve(requests, self._handle)


class OnnxModel:
    """Runs the model directory's model.onnx in onnxruntime (the pip-installed Triton has no onnxruntime
    backend); inputs and outputs are the config's. A batching model (max_batch_size > 0) runs the requests Triton's
    dynamic batcher hands it together, one graph run for each group of the same input shapes, as the native
    backend would, but a run's first inputs hold at most the config's ``max_run_values`` (one largest frame's worth:
    stac.inference.batch_runs)."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.session = session(_model_dir(args) / "model.onnx", instance_threads(config, os.cpu_count() or 1),
                               spin=False)
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.batching = int(config.get("max_batch_size", 0)) > 0
        bound = config.get("parameters", {}).get(MAX_RUN_VALUES)
        self.max_run_values = int(bound["string_value"]) if bound else None

    def _feed(self, request) -> dict[str, np.ndarray]:
        return {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}

    def _wanted(self, request) -> list[str]:
        """The outputs ``request`` asks for, in the config's order (all if it names none). An ensemble asks for those
        it maps, the head's MASK and NEXT_LEVELS: its GRAD alone is 50 MB at 2048x2048, held until the batch's
        answers leave."""
        asked = set(request.requested_output_names())
        return [name for name in self.outputs if name in asked] or self.outputs

    def _handle(self, request):
        wanted = self._wanted(request)
        return dict(zip(wanted, self.session.run(wanted, self._feed(request))))

    def execute(self, requests):
        if not self.batching or len(requests) == 1:
            return _serve(requests, self._handle)
        feeds = [self._feed(request) for request in requests]
        wanted = [self._wanted(request) for request in requests]
        responses = [None] * len(requests)
        # a run's requests agree on their inputs' shapes and on the outputs they ask for
        keys = [[value.shape for value in feed.values()] + [tuple(names)] for feed, names in zip(feeds, wanted)]
        for members in batch_runs(keys, self.max_run_values):
            answers = self._batch([requests[i] for i in members], [feeds[i] for i in members], wanted[members[0]])
            for i, response in zip(members, answers):
                responses[i] = response
        return responses

    def _batch(self, requests, feeds, wanted: list[str]):
        """One graph run for same-shape requests, its outputs split back by each request's batch; if the run
        fails, each request is run alone, so a bad one fails only itself."""
        try:
            outputs = self.session.run(wanted, {name: np.concatenate([feed[name] for feed in feeds])
                                                for name in self.inputs})
        except Exception:
            return _serve(requests, self._handle)
        ends = np.cumsum([len(feed[self.inputs[0]]) for feed in feeds])[:-1]
        parts = [np.split(output, ends) for output in outputs]
        return [_response({name: part[i] for name, part in zip(wanted, parts)}) for i in range(len(requests))]
