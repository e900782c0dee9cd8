"""What every segmentation model offers the STAC head and the exporters."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

MODELS: dict[str, type["SegModel"]] = {}


class WeightsError(ValueError):
    """A checkpoint that does not fit the model; the message names every mismatch."""


class SegModel(torch.nn.Module):
    """forward(rgb float32 [1, 3, H, W], values 0..255) -> class logits [1, K, h, w].

    The model's own preprocessing (normalization, resizing to its working size) happens inside forward,
    so the ONNX graphs built from it take plain RGB. ``size_multiple`` is what H and W must be a multiple
    of (8 for the STAC head's padded frames always works).
    """

    name: ClassVar[str]
    classes: ClassVar[tuple[str, ...]]
    size_multiple: ClassVar[int] = 1
    full_resolution: ClassVar[bool] = False  # logits come out at the input's size (no upsampling for masks)
    dropped_prefixes: ClassVar[tuple[str, ...]] = ()  # checkpoint keys of training-only parts, ignored
    native_size: tuple[int, int]  # (H, W) the model is meant to see; benchmarks run it there too

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            MODELS[cls.name] = cls

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        """Identity recorded in tables.json and model repositories."""
        return {"name": self.name, "classes": list(self.classes), "native_size": list(self.native_size),
                "size_multiple": self.size_multiple}

    def load_weights(self, path: str | Path) -> None:
        """Load a checkpoint strictly: every key present, no extra key, every shape equal."""
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"{self.name}: weights file {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle, zip or format errors all mean "not a checkpoint"
            raise WeightsError(f"{self.name}: {path} is not a torch checkpoint ({exc})") from exc
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise WeightsError(f"{self.name}: {path} holds a {type(state).__name__}, not a state_dict")
        state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
        state = {k: v for k, v in state.items() if not k.startswith(self.dropped_prefixes)}
        own = self.state_dict()
        # BatchNorm's step counter does not affect inference and old checkpoints (torch < 0.4) lack it
        state.update({k: v for k, v in own.items() if k.endswith("num_batches_tracked") and k not in state})
        problems = [f"missing {k}" for k in own if k not in state]
        problems += [f"unexpected {k}" for k in state if k not in own]
        problems += [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                     for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
        if problems:
            shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
            raise WeightsError(f"{self.name}: {path} does not match the model: {shown}")
        self.load_state_dict(state, strict=True)


def build_model(name: str, weights: str | Path | None = None, **options) -> SegModel:
    """A model by registry name, in eval mode, with its weights loaded (random when none are given
    for models that have no shipped weights)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    model = MODELS[name](**options)
    if weights is not None:
        model.load_weights(weights)
    return model.eval()
