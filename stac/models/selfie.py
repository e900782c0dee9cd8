"""MediaPipe selfie segmentation (person vs background): the real pretrained default model.

The weights come from the npm package @mediapipe/selfie_segmentation, pinned by version and sha256,
fetched once into the cache (``$STAC_CACHE``, default ~/.cache/stac) with its licence notice beside it.
The landscape variant takes 144x256 RGB in 0..1 and returns the person probability at the same size;
``net_size`` runs the same weights at another multiple of 16 (the network is fully convolutional and
its squeeze-excite pooling is global).
"""
from __future__ import annotations

import io
import tarfile
import urllib.request
from pathlib import Path

import torch

from ..cache import cache_dir, sha256, verified, write_atomic
from .base import SegModel
from .resize import resize
from .tflite import TfliteNet

PACKAGE = "@mediapipe/selfie_segmentation"
VERSION = "0.1.1675465747"
URL = f"https://registry.npmjs.org/{PACKAGE}/-/selfie_segmentation-{VERSION}.tgz"
TARBALL_SHA256 = "7767b33eaa68990ee06c28bbb89f39a13a47ebb07ff0f1fd4947d9e817bb9bf9"
FILES = {  # variant -> (file in the package, sha256, native input size H x W)
    "landscape": ("selfie_segmentation_landscape.tflite",
                  "4aafe6223bb8dac6fac8ca8ed56852870a33051ef3f6238822d282a109962894", (144, 256)),
    "square": ("selfie_segmentation.tflite",
               "8d13b7fae74af625c641226813616a2117bd6bca19eb3b75574621fc08557f27", (256, 256)),
}
NOTICE = f"""MediaPipe Selfie Segmentation models, from the npm package {PACKAGE}@{VERSION}
({URL}).
Copyright Google LLC. Licensed under the Apache License, Version 2.0 (the package's "license" field);
you may not use these files except in compliance with the License. You may obtain a copy at
https://www.apache.org/licenses/LICENSE-2.0. Distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR
CONDITIONS OF ANY KIND. Model card: https://mediapipe.page.link/selfiesegmentation-mc
"""


def fetch(directory: Path | None = None, timeout: float = 60.0) -> Path:
    """Download and verify the package once; returns the folder holding both .tflite files and NOTICE."""
    folder = (directory or cache_dir()) / f"mediapipe-selfie-{VERSION}"
    if all(verified(folder / name, digest) for name, digest, _ in FILES.values()):
        return folder
    try:
        with urllib.request.urlopen(URL, timeout=timeout) as response:
            tarball = response.read()
    except OSError as exc:
        raise RuntimeError(f"cannot download {URL} ({exc}); put the two .tflite files in {folder} by hand") from exc
    if sha256(tarball) != TARBALL_SHA256:
        raise RuntimeError(f"{URL}: sha256 {sha256(tarball)} is not the pinned {TARBALL_SHA256}")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        for name, digest, _ in FILES.values():
            data = tar.extractfile(f"package/{name}").read()
            if sha256(data) != digest:
                raise RuntimeError(f"{name} in {URL}: sha256 {sha256(data)} is not the pinned {digest}")
            write_atomic(folder / name, data)
    (folder / "NOTICE").write_text(NOTICE)
    return folder


def tflite_path(variant: str = "landscape") -> Path:
    if variant not in FILES:
        raise ValueError(f"unknown selfie variant {variant!r}; known: {', '.join(FILES)}")
    return fetch() / FILES[variant][0]


class SelfieSegmentation(SegModel):
    """Frame of any size -> resized (antialiased bilinear) to ``net_size`` -> logits [1, 2, h, w].

    The tflite graph ends in a sigmoid of one logit x; the two-class logits are [0, x], so argmax is
    "person probability > 0.5" and the softmax is the original probability.
    """

    name = "selfie"
    classes = ("background", "person")

    def __init__(self, variant: str = "landscape", net_size: tuple[int, int] | None = None):
        super().__init__()
        native = FILES[variant][2] if variant in FILES else None
        self.net = TfliteNet(tflite_path(variant).read_bytes(), drop_final_logistic=True)
        self.native_size = tuple(net_size or native)
        if any(s % 16 for s in self.native_size):
            raise ValueError(f"selfie net_size {self.native_size} must be multiples of 16")
        self.variant = variant

    def describe(self) -> dict:
        return {**super().describe(), "variant": self.variant, "source": f"{PACKAGE}@{VERSION}"}

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = resize(rgb, self.native_size) * (1.0 / 255.0)  # scaled after shrinking: a pass over far fewer pixels
        logit = self.net(x)
        return torch.cat([torch.zeros_like(logit), logit], dim=1)
