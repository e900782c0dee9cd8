"""Write the Triton model repository around exported ONNX graphs and a table set.

Models:
- ``stac_decode`` (python): BITSTREAM BYTES [1] -> COEFFS, LEVELS, TABLES, BOUND (from the table sets it holds);
- ``stac_head`` (ONNX): the STAC head;
- ``stac`` (ensemble): BITSTREAM, optional BOUND -> MASK [8Hb, 8Wb], NEXT_LEVELS (selected against BOUND, default
  the table set's B);
- ``segment`` (ONNX): IMAGE uint8 [H, W, 3] -> MASK;
- ``jpeg_decode`` (python) and ``jpeg_segment`` (ensemble): BITSTREAM (baseline JPEG) -> MASK [H', W'];
- ``h264_decode`` (python, stateful) and ``h264_segment`` (ensemble): one access unit of a device's keyframe stream
  (BITSTREAM, POSITION INT64 [1]; the stream is the request's sequence ID, START with every IDR) -> MASK [H', W'].
``backend="onnxruntime"`` writes native onnxruntime-backend configs with GPU instances (NGC container);
``backend="python"`` wraps the same ONNX bytes in python models running onnxruntime (pip-installed server).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..codec.bitstream import DEFAULT_MAX_PIXELS
from ..inference import model_info
from ..tables import TableSet
from .streams import MAX_STREAMS

BACKENDS = ("python", "onnxruntime")

HEAD_IO = {
    "input": [("COEFFS", "INT16", [3, -1, -1, 64]), ("LEVELS", "UINT8", [-1, -1]), ("TABLES", "FP32", [-1, 3, 64]),
              ("BOUND", "FP32", [1])],
    "output": [("MASK", "UINT8", [-1, -1]), ("NEXT_LEVELS", "UINT8", [-1, -1]), ("REGION_COST", "FP32", [-1, -1, -1]),
               ("GRAD", "FP32", [3, -1, -1, 64]), ("LOSS", "FP32", [1])],
}
SEGMENT_IO = {"input": [("IMAGE", "UINT8", [-1, -1, 3])], "output": [("MASK", "UINT8", [-1, -1])]}
OPTIONAL = True
DECODE_IO = {"input": [("BITSTREAM", "STRING", [1]), ("BOUND", "FP32", [1], OPTIONAL)],
             "output": [("COEFFS", "INT16", [3, -1, -1, 64]), ("LEVELS", "UINT8", [-1, -1]),
                        ("TABLES", "FP32", [-1, 3, 64]), ("BOUND", "FP32", [1])]}
JPEG_DECODE_IO = {"input": [("BITSTREAM", "STRING", [1])], "output": [("IMAGE", "UINT8", [-1, -1, 3])]}
H264_DECODE_IO = {"input": [("BITSTREAM", "STRING", [1]), ("POSITION", "INT64", [1])],
                  "output": JPEG_DECODE_IO["output"]}
ADAPTERS = {"stac_decode": "StacDecode", "jpeg_decode": "JpegDecode", "h264_decode": "H264Decode",
            "stac_head": "OnnxModel", "segment": "OnnxModel"}
# The edge's defaults. 2048x2048 (twice the paper's 2048x1024): the selfie head's gradient pass peaks at 0.63 GB of
# RSS there (0.38 GB at 2048x1024; 4096x4096 took 2.4 GB). 16 MB: at 2048x2048 even uniform noise, the worst case,
# codes to 8.5 MB as STAC's finest level and 11.7 MB as a 4:4:4 JPEG at quality 100.
EDGE_MAX_PIXELS = 2048 * 2048
EDGE_MAX_BYTES = 16 * 2 ** 20
MODELS = ("stac_decode", "stac_head", "stac", "segment", "jpeg_decode", "jpeg_segment", "h264_decode", "h264_segment")
# Device streams: Triton routes each sequence's requests in order to the one instance holding its decoder. The
# "oldest" strategy serves many sequences on one instance (the default "direct" one gives a max_batch_size 0
# model a single sequence slot, so a second device would wait for the first to go idle). A stream idle this
# long is released; its next P-frame is refused and the device sends an IDR.
STREAM_IDLE_S = 60
SEQUENCE_BATCHING = (f"sequence_batching {{ max_sequence_idle_microseconds: {STREAM_IDLE_S * 10**6} "
                     f"oldest {{ max_candidate_sequences: {MAX_STREAMS} }} }}")


def _tensors(kind: str, specs) -> str:
    """specs: (name, type, dims[, optional])."""
    return "\n".join(f'{kind} {{ name: "{n}" data_type: TYPE_{t} dims: [ {", ".join(map(str, d))} ]'
                     f'{" optional: true" if rest and rest[0] else ""} }}' for n, t, d, *rest in specs)


def _parameters(params: dict[str, str]) -> str:
    return "\n".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items())


def model_config(name: str, backend: str, io: dict, *, instances: str = "KIND_CPU", count: int = 1, params=None,
                 scheduling: str = "") -> str:
    return "\n".join(filter(None, [f'name: "{name}"', f'backend: "{backend}"', "max_batch_size: 0",
                                   _tensors("input", io["input"]), _tensors("output", io["output"]), scheduling,
                                   f"instance_group [ {{ kind: {instances} count: {count} }} ]",
                                   _parameters(params or {})])) + "\n"


def ensemble_config(name: str, io: dict, steps: list[tuple[str, dict, dict]]) -> str:
    lines = [f'name: "{name}"', 'platform: "ensemble"', "max_batch_size: 0", _tensors("input", io["input"]),
             _tensors("output", io["output"]), "ensemble_scheduling {"]
    for model, inputs, outputs in steps:
        lines.append(f'  step {{ model_name: "{model}" model_version: -1')
        lines += [f'    input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items()]
        lines += [f'    output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items()]
        lines.append("  }")
    return "\n".join(lines + ["}"]) + "\n"


def _write(repo: Path, name: str, config: str, files: dict[str, bytes | Path] | None = None) -> None:
    version = repo / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    (repo / name / "config.pbtxt").write_text(config)
    for filename, content in (files or {}).items():
        if isinstance(content, Path):
            shutil.copyfile(content, version / filename)
        else:
            (version / filename).write_bytes(content)


def _adapter(name: str) -> bytes:
    return (f"# generated by export/build.py: the {name} model is stac.edge.python_models.{ADAPTERS[name]}\n"
            f"from stac.edge.python_models import {ADAPTERS[name]} as TritonPythonModel  # noqa: F401\n").encode()


def write_repository(repo: str | Path, onnx_dir: str | Path, tables: TableSet, backend: str = "python",
                     max_pixels: int = EDGE_MAX_PIXELS, gpu: bool = True, max_bytes: int = EDGE_MAX_BYTES,
                     instances: int = 1) -> Path:
    """Write (or overwrite) the models (MODELS) into ``repo``; returns it. The decode models refuse requests over
    ``max_bytes`` and frames over ``max_pixels`` before any work. Every stateless model runs ``instances``
    instances, so requests of several devices are served side by side (h264_decode keeps one: each stream's
    decoder lives in it)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    repo, onnx_dir = Path(repo), Path(onnx_dir)
    info = model_info(onnx_dir)
    for stale in MODELS:
        shutil.rmtree(repo / stale, ignore_errors=True)
    if not 0 < max_pixels <= DEFAULT_MAX_PIXELS or max_bytes <= 0 or instances < 1:
        raise ValueError(f"max_pixels must be 1..{DEFAULT_MAX_PIXELS}, max_bytes positive and instances at least 1")
    limits = {"max_pixels": str(max_pixels), "max_bytes": str(max_bytes)}
    # table_sets: the ids of the sets held, which devices read from the config at start (the handshake)
    _write(repo, "stac_decode", model_config("stac_decode", "python", DECODE_IO, params={
        "tables": "tables.json", "table_sets": tables.id.hex(), **limits}, count=instances),
           {"model.py": _adapter("stac_decode"), "tables.json": tables.to_json().encode()})
    image_params = {"size_multiple": str(info["size_multiple"]), **limits}
    _write(repo, "jpeg_decode", model_config("jpeg_decode", "python", JPEG_DECODE_IO, params=image_params,
                                             count=instances),
           {"model.py": _adapter("jpeg_decode")})
    _write(repo, "h264_decode", model_config("h264_decode", "python", H264_DECODE_IO, params=image_params,
                                             scheduling=SEQUENCE_BATCHING), {"model.py": _adapter("h264_decode")})
    for name, io in (("stac_head", HEAD_IO), ("segment", SEGMENT_IO)):
        files: dict[str, bytes | Path] = {"model.onnx": onnx_dir / f"{name}.onnx"}
        if backend == "python":
            files["model.py"] = _adapter(name)
            config = model_config(name, "python", io, count=instances)
        else:
            config = model_config(name, "onnxruntime", io, instances="KIND_GPU" if gpu else "KIND_CPU",
                                  count=instances)
        _write(repo, name, config, files)
    _write(repo, "stac", ensemble_config("stac", {"input": DECODE_IO["input"], "output": HEAD_IO["output"][:2]}, [
        ("stac_decode", {"BITSTREAM": "BITSTREAM", "BOUND": "BOUND"},
         {"COEFFS": "coeffs", "LEVELS": "levels", "TABLES": "tables", "BOUND": "bound"}),
        ("stac_head", {"COEFFS": "coeffs", "LEVELS": "levels", "TABLES": "tables", "BOUND": "bound"},
         {"MASK": "MASK", "NEXT_LEVELS": "NEXT_LEVELS"}),
    ]))
    for route, io in (("jpeg", JPEG_DECODE_IO), ("h264", H264_DECODE_IO)):
        _write(repo, f"{route}_segment", ensemble_config(f"{route}_segment", {"input": io["input"],
                                                                          "output": SEGMENT_IO["output"]}, [
            (f"{route}_decode", {name: name for name, *_ in io["input"]}, {"IMAGE": "image"}),
            ("segment", {"IMAGE": "image"}, {"MASK": "MASK"}),
        ]))
    (repo / "model.json").write_text(json.dumps({**info, "backend": backend, "tables_id": tables.id.hex()}, indent=2))
    return repo
