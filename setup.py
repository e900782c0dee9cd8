"""The one compiled part: block transforms and coefficient JPEG I/O over the system libjpeg(-turbo).
Everything else about the package is in pyproject.toml."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("stac.codec._libjpeg", sources=["stac/codec/_libjpeg.c"],
                             libraries=["jpeg", "m"], extra_compile_args=["-O3"])])
