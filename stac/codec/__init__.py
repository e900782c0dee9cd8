"""Codecs behind one interface (`Codec`, `make_codec`), and the STAC bitstream."""
from .base import CODECS, Codec, make_codec
from .bitstream import BitstreamError, StacFrame, read_stac, write_stac
from .grace import GraceCodec
from .h264 import H264Codec
from .jpeg import JpegCodec
from .stac import StacCodec

__all__ = ["CODECS", "Codec", "make_codec", "BitstreamError", "StacFrame", "read_stac", "write_stac",
           "GraceCodec", "H264Codec", "JpegCodec", "StacCodec"]
