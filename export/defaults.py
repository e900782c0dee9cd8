"""The default model's graphs and tables, built once into the cache on first use, so that `stac-runtime run
carphone` needs no flags (the way the model's weights are fetched once). Building needs torch (the export extra);
--onnx-dir and --tables override what is built here."""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from stac.cache import cache_dir
from stac.contract import HEAD_GRAPH, MODEL_INFO, SEGMENT_GRAPH

DEFAULT_MODEL = "selfie"
# what the graphs and the tables are made by: a change to any of these builds them afresh
_SOURCES = ("stac/models", "stac/contract.py", "stac/tables.py", "calibration/calibrate.py", "calibration/search.py")


def _fingerprint() -> str:
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for source in _SOURCES:
        path = root / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def default_build(progress: Callable[[str], None] = lambda message: None) -> Path:
    """The folder holding the default model's graphs (HEAD_GRAPH, SEGMENT_GRAPH, MODEL_INFO) and its calibrated
    tables.json with the calibration's summary; built on first use (a minute on two cores), then reused."""
    folder = cache_dir() / f"build-{DEFAULT_MODEL}-{_fingerprint()}"
    if all((folder / name).is_file() for name in (HEAD_GRAPH, SEGMENT_GRAPH, MODEL_INFO, "tables.json")):
        return folder
    try:
        from calibration.calibrate import DEFAULT_SOURCES, calibrate_default
        from calibration.report import write as write_calibration
        from stac.models.to_onnx import export_model
    except ImportError as e:
        raise FileNotFoundError(f"no --onnx-dir given, and the default graphs cannot be built here ({e}): install "
                                f"the export extra, or pass --onnx-dir from `stac-export --onnx-only`") from None
    progress(f"building the {DEFAULT_MODEL} model's graphs and tables once, into {folder}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        work = Path(tmp) / "build"
        export_model(DEFAULT_MODEL, work)
        write_calibration(calibrate_default(work), list(DEFAULT_SOURCES), work)
        shutil.rmtree(folder, ignore_errors=True)
        work.replace(folder)  # whole or not at all: another process never sees half a build
    return folder
