"""Segmentation networks and the differentiable STAC head (torch; used for export and calibration only)."""
from .base import MODELS, SegModel, WeightsError, build_model
from . import bisenet, drn, selfie, tiny  # noqa: F401  (registers the models)

__all__ = ["MODELS", "SegModel", "WeightsError", "build_model"]
