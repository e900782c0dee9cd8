"""The compiled parts: block transforms and coefficient JPEG I/O (over libjpeg-turbo), H.264 encoding with
per-macroblock quantizer offsets (over libx264), and the coder of the edge's answers (class-id masks). Everything
else is in pyproject.toml."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("stac.codec._libjpeg", sources=["stac/codec/_libjpeg.c"],
                             libraries=["jpeg", "m"], extra_compile_args=["-O3"]),
                   Extension("stac.codec._libx264", sources=["stac/codec/_libx264.c"],
                             libraries=["x264"], extra_compile_args=["-O2"]),
                   Extension("stac.codec._mask", sources=["stac/codec/_mask.c"], extra_compile_args=["-O3"])])
