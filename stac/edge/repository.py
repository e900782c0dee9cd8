"""Write the Triton model repository around exported ONNX graphs and a table set.

Models:
- ``stac_decode`` (python): BITSTREAM BYTES [1] -> COEFFS, LEVELS, TABLES, BOUND (from the table sets it holds);
- ``stac_head`` (ONNX): the STAC head (batching as ``segment``);
- ``mask_encode`` (python): MASK, optional ANSWER_SIZE -> CODED_MASK, the mask (cropped to the frame and given at
  the size the device uses it at, when asked) coded losslessly (stac.codec.mask); every ensemble ends in it;
- ``stac`` (ensemble): BITSTREAM, optional BOUND -> CODED_MASK (of MASK [8Hb, 8Wb]), NEXT_LEVELS [1, Rh, Rw]
  (selected against BOUND, default the table set's B);
- ``segment`` (ONNX): IMAGE uint8 [N, H, W, 3] -> MASK, N same-size frames gathered by Triton's dynamic batcher;
- ``jpeg_decode`` (python) and ``jpeg_segment`` (ensemble): BITSTREAM (baseline JPEG) -> CODED_MASK (of [H', W']);
- ``h264_decode`` (python, stateful) and ``h264_segment`` (ensemble): one access unit of a device's keyframe stream
  (BITSTREAM, POSITION INT64 [1]; the stream is the request's sequence ID, START with every IDR) -> CODED_MASK.
``backend="onnxruntime"`` writes native onnxruntime-backend configs with GPU instances (NGC container);
``backend="python"`` wraps the same ONNX bytes in python models running onnxruntime (pip-installed server).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from ..codec.bitstream import DEFAULT_MAX_PIXELS
from ..contract import (ANSWER_SIZE, CODED_MASK, H264_DECODE, H264_SEGMENT, HEAD_GRAPH, JPEG_DECODE, JPEG_SEGMENT, MASK,
                        MASK_ENCODE, MAX_BATCH, MAX_RUN_VALUES, MODEL_INFO, MODELS, NEXT_LEVELS, SEGMENT_GRAPH,
                        SEGMENT_MODEL, SIGNATURES, STAC, STAC_DECODE, STAC_HEAD, TABLE_SETS_PARAMETER, Signature)
from ..inference import model_info
from ..tables import TableSet
from .streams import MAX_STREAMS, STREAM_IDLE_S

BACKENDS = ("python", "onnxruntime")
ADAPTERS = {STAC_DECODE: "StacDecode", JPEG_DECODE: "JpegDecode", H264_DECODE: "H264Decode",
            MASK_ENCODE: "MaskEncode", STAC_HEAD: "OnnxModel", SEGMENT_MODEL: "OnnxModel"}
GRAPHS = {STAC_HEAD: HEAD_GRAPH, SEGMENT_MODEL: SEGMENT_GRAPH}
# The edge's defaults. 2048x2048 (twice the paper's 2048x1024): the selfie head's gradient pass peaks at 0.63 GB of
# RSS there (0.38 GB at 2048x1024; 4096x4096 took 2.4 GB); 2048 on either side, since a 144x16560 strip (fewer
# pixels) took the segment graph's memory 127 MB past what 2048x2048 had, never given back. 16 MB: at 2048x2048
# even uniform noise, the worst case, codes to 8.5 MB as STAC's finest level and 11.7 MB as a 4:4:4 JPEG at
# quality 100.
EDGE_MAX_PIXELS = 2048 * 2048
EDGE_MAX_SIDE = 2048
EDGE_MAX_BYTES = 16 * 2 ** 20
# The graphs' dynamic batching: up to 8 same-size frames a run, gathered only from requests already waiting (no
# wait: an idle edge answers as without batching). Chosen on bikes with `stac-bench load --capacity --sweep` against
# none, 4 and a 5 ms wait: past capacity the segment routes answered 25-41% more keyframes per second at 6-8 devices,
# STAC keyframes (the head) 15-25% more, and 3 STAC devices were held in both trials against none (docs/edge.md).
DEFAULT_BATCH = 8
DEFAULT_BATCH_WAIT_US = 0
# Device streams: Triton routes each sequence's requests in order to the one instance holding its decoder. The
# "oldest" strategy serves many sequences on one instance (the default "direct" one gives a max_batch_size 0
# model a single sequence slot, so a second device would wait for the first to go idle). Its slot is released after
# as long idle as the decoder (STREAM_IDLE_S).


def _config(name: str, signature: Signature, batch: int = 0, **fields) -> pb.ModelConfig:
    """A config message with ``signature``'s tensors; ``batch`` > 0: the first dimension of every tensor is the
    batch, of at most ``batch`` (Triton then leaves it out of the dims)."""
    config = pb.ModelConfig(name=name, max_batch_size=batch, **fields)
    for tensor in signature.inputs:
        config.input.add(name=tensor.name, data_type=pb.DataType.Value(f"TYPE_{tensor.dtype}"),
                         dims=tensor.dims[1:] if batch else tensor.dims, optional=tensor.optional)
    for tensor in signature.outputs:
        config.output.add(name=tensor.name, data_type=pb.DataType.Value(f"TYPE_{tensor.dtype}"),
                          dims=tensor.dims[1:] if batch else tensor.dims)
    return config


def model_config(name: str, backend: str, *, kind: str = "KIND_CPU", count: int = 1,
                 params: dict[str, str] | None = None, sequences: bool = False, batch: int = 1,
                 batch_wait_us: int = 0) -> pb.ModelConfig:
    """Model ``name`` (its signature from the contract) on ``backend``, ``count`` instances of ``kind``;
    ``sequences``: a stateful model, one sequence per device stream; ``batch`` > 1: Triton's dynamic batcher gathers
    up to that many same-shape requests into one run, waiting up to ``batch_wait_us`` for more."""
    max_batch = batch if batch > 1 else 0  # Triton's spelling: 0 is no batch dimension
    config = _config(name, SIGNATURES[name], max_batch, backend=backend)
    if max_batch:
        config.dynamic_batching.max_queue_delay_microseconds = batch_wait_us
    config.instance_group.add(kind=pb.ModelInstanceGroup.Kind.Value(kind), count=count)
    for key, value in (params or {}).items():
        config.parameters[key].string_value = value
    if sequences:
        config.sequence_batching.max_sequence_idle_microseconds = STREAM_IDLE_S * 10 ** 6
        config.sequence_batching.oldest.max_candidate_sequences = MAX_STREAMS
    return config


def ensemble_config(name: str, steps: list[tuple[str, dict, dict]]) -> pb.ModelConfig:
    """Ensemble ``name``: each step (model, its input <- ensemble tensor, its output -> ensemble tensor)."""
    config = _config(name, SIGNATURES[name], platform="ensemble")
    for model, inputs, outputs in steps:
        step = config.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        step.input_map.update(inputs)
        step.output_map.update(outputs)
    return config


def _write(repo: Path, config: pb.ModelConfig, files: dict[str, bytes | Path] | None = None) -> None:
    version = repo / config.name / "1"
    version.mkdir(parents=True, exist_ok=True)
    (repo / config.name / "config.pbtxt").write_text(text_format.MessageToString(config))
    for filename, content in (files or {}).items():
        if isinstance(content, Path):
            shutil.copyfile(content, version / filename)
        else:
            (version / filename).write_bytes(content)


def _same(names: list[str]) -> dict[str, str]:
    return {name: name for name in names}


def _adapter(name: str) -> bytes:
    return (f"# generated by export/build.py: the {name} model is stac.edge.python_models.{ADAPTERS[name]}\n"
            f"from stac.edge.python_models import {ADAPTERS[name]} as TritonPythonModel  # noqa: F401\n").encode()


def write_repository(repo: str | Path, onnx_dir: str | Path, tables: TableSet, backend: str = "python",
                     max_pixels: int = EDGE_MAX_PIXELS, gpu: bool = True, max_bytes: int = EDGE_MAX_BYTES,
                     instances: int = 1, max_side: int = EDGE_MAX_SIDE, batch: int = DEFAULT_BATCH,
                     batch_wait_us: int = DEFAULT_BATCH_WAIT_US) -> Path:
    """Write (or overwrite) the models (MODELS) into ``repo``; returns it. The decode models refuse requests over
    ``max_bytes`` and frames over ``max_pixels`` or ``max_side`` before any work. Every stateless model runs
    ``instances`` instances, so requests of several devices are served side by side (h264_decode keeps one: each
    stream's decoder lives in it). ``batch`` > 1: each graph (the head and the segment graph) runs up to that many
    same-size frames of different devices at once (``model_config``)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    repo, onnx_dir = Path(repo), Path(onnx_dir)
    info = model_info(onnx_dir)
    for stale in MODELS:
        shutil.rmtree(repo / stale, ignore_errors=True)
    if not 0 < max_pixels <= DEFAULT_MAX_PIXELS or max_side < 1 or max_bytes <= 0 or instances < 1 \
            or not 1 <= batch <= MAX_BATCH or batch_wait_us < 0:
        raise ValueError(f"max_pixels must be 1..{DEFAULT_MAX_PIXELS}, max_side and max_bytes positive, instances "
                         f"at least 1, batch 1..{MAX_BATCH} and batch_wait_us not negative")
    limits = {"max_pixels": str(max_pixels), "max_side": str(max_side), "max_bytes": str(max_bytes)}
    _write(repo, model_config(STAC_DECODE, "python", count=instances, params={
        "tables": "tables.json", TABLE_SETS_PARAMETER: tables.id.hex(), **limits}),
           {"model.py": _adapter(STAC_DECODE), "tables.json": tables.to_json().encode()})
    image_params = {"size_multiple": str(info["size_multiple"]), **limits}
    _write(repo, model_config(JPEG_DECODE, "python", count=instances, params=image_params),
           {"model.py": _adapter(JPEG_DECODE)})
    _write(repo, model_config(H264_DECODE, "python", params=image_params, sequences=True),
           {"model.py": _adapter(H264_DECODE)})
    for name, graph in GRAPHS.items():
        files: dict[str, bytes | Path] = {"model.onnx": onnx_dir / graph}
        if backend == "python":
            files["model.py"] = _adapter(name)
        kind = "KIND_GPU" if gpu and backend == "onnxruntime" else "KIND_CPU"
        # a batch holds at most one largest frame's pixels (the python adapter's bound; the native backend has none)
        _write(repo, model_config(name, backend, kind=kind, count=instances, batch=batch, batch_wait_us=batch_wait_us,
                                  params={MAX_RUN_VALUES: str(3 * max_pixels)}), files)
    _write(repo, model_config(MASK_ENCODE, "python", count=instances), {"model.py": _adapter(MASK_ENCODE)})
    # an ensemble's own tensors keep their names; those between its steps are spelled in lower case. Every
    # ensemble ends in mask_encode: the mask crosses the network coded.
    coded = {name: name.lower() for name in SIGNATURES[STAC_DECODE].output_names}
    mask = {MASK.name: MASK.name.lower()}
    answer = (MASK_ENCODE, {**mask, **_same([ANSWER_SIZE.name])}, _same([CODED_MASK.name]))
    _write(repo, ensemble_config(STAC, [(STAC_DECODE, _same(SIGNATURES[STAC_DECODE].input_names), coded),
                                        (STAC_HEAD, coded, {**mask, **_same([NEXT_LEVELS.name])}), answer]))
    for decoder, ensemble in ((JPEG_DECODE, JPEG_SEGMENT), (H264_DECODE, H264_SEGMENT)):
        image = {name: name.lower() for name in SIGNATURES[decoder].output_names}
        _write(repo, ensemble_config(ensemble, [(decoder, _same(SIGNATURES[decoder].input_names), image),
                                                (SEGMENT_MODEL, image, mask), answer]))
    (repo / MODEL_INFO).write_text(json.dumps({**info, "backend": backend, "tables_id": tables.id.hex()}, indent=2))
    return repo
