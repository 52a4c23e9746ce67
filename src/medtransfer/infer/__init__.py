"""Inference: sliding-window prediction (2D slice-wise, 3D patches with blending) and whole-scan prediction."""

from __future__ import annotations

from .io import predict_file, predict_path
from .predictor import Predictor, find_checkpoint, load_predictor, predict_volume
from .sliding_window import Blend, importance_map, logits_to_probs, predict_patches, predict_slices

__all__ = [
    "Blend",
    "Predictor",
    "find_checkpoint",
    "importance_map",
    "load_predictor",
    "logits_to_probs",
    "predict_file",
    "predict_patches",
    "predict_path",
    "predict_slices",
    "predict_volume",
]
