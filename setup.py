"""The compiled parts, over system libraries: block transforms and coefficient JPEG I/O (libjpeg-turbo), and
H.264 encoding with per-macroblock quantizer offsets (libx264). Everything else is in pyproject.toml."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("stac.codec._libjpeg", sources=["stac/codec/_libjpeg.c"],
                             libraries=["jpeg", "m"], extra_compile_args=["-O3"]),
                   Extension("stac.codec._libx264", sources=["stac/codec/_libx264.c"],
                             libraries=["x264"], extra_compile_args=["-O2"])])
