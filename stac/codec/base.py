"""One interface for every codec STAC is compared with (after CompressAI's bench codecs).

A codec turns RGB uint8 frames [H, W, 3] into the exact bytes that would cross the network, and back.
Stateful codecs (H.264) must see frames in order; `reset()` starts a new stream.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from ..tables import TableSet

CODECS: dict[str, type["Codec"]] = {}


class Codec(ABC):
    name: ClassVar[str]
    ext: ClassVar[str]  # file extension of one encoded frame, for --save
    options: ClassVar[dict[str, type]] = {}  # option name -> type, as in "jpeg:q=90"
    # What answers this codec's keyframes at the edge: "stac" (the STAC head), "jpeg" (any baseline JPEG, decoded
    # and segmented), "h264" (one inter-coded stream per device); None: not offloaded by the device loop.
    route: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        CODECS[cls.name] = cls

    @classmethod
    def create(cls, tables: TableSet, **options) -> "Codec":
        """Build from parsed options; codecs that quantize with the table set in use override this."""
        return cls(**options)

    @abstractmethod
    def encode(self, frame: np.ndarray) -> bytes: ...

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray: ...

    @property
    @abstractmethod
    def spec(self) -> str:
        """The codec spec that rebuilds this codec, e.g. 'jpeg:q=90,subsampling=420'."""

    def reset(self) -> None:
        """Start a new stream (stateless codecs have nothing to do)."""

    def side_files(self) -> dict[str, bytes]:
        """Files a decoder needs besides the frames (saved with them by `stac-bench codec --save`)."""
        return {}


def make_codec(spec: str, tables: TableSet | None = None) -> Codec:
    """'name[:key=value,...]' -> a codec, e.g. 'jpeg:q=90', 'stac:level=8', 'h264:crf=23'."""
    name, _, rest = spec.partition(":")
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r} (known: {', '.join(sorted(CODECS))})")
    cls = CODECS[name]
    options = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in cls.options:
            allowed = ", ".join(f"{k}=<{t.__name__}>" for k, t in cls.options.items()) or "none"
            raise ValueError(f"bad option {item!r} for codec {name!r} (options: {allowed})")
        try:
            options[key] = cls.options[key](value)
        except ValueError:
            raise ValueError(f"option {key} of codec {name!r} must be {cls.options[key].__name__}, got {value!r}") from None
    return cls.create(tables if tables is not None else TableSet.default(), **options)
