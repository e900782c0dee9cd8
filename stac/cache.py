"""Where fetched third-party files live (``$STAC_CACHE``, default ~/.cache/stac), checked by sha256."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("STAC_CACHE", Path.home() / ".cache" / "stac"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verified(path: Path, digest: str) -> bool:
    """The file exists and has the pinned content."""
    return path.is_file() and sha256(path.read_bytes()) == digest


def write_atomic(path: Path, data: bytes) -> None:
    """Readers never see half a file, even if this process dies mid-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    tmp.replace(path)
