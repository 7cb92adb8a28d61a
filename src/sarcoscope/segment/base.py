"""The one interface every segmenter implements (classical baseline, trained ONNX model)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Segmenter(Protocol):
    """Turns one display-oriented axial slice in HU into a uint8 label map (0..4).

    ``name`` and ``version`` go into every result; ``sha256`` is the model file's hash
    (``None`` for the rule-based baseline, whose version is the package version). A segmenter
    may also expose ``post_steps`` (tuple of str: what runs after its network), which the
    result records too (``types.SegmenterInfo``).
    """

    name: str
    version: str
    sha256: str | None

    def segment(self, hu: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
        """Label a (rows, columns) float32 HU slice; returns uint8 of the same shape."""
        ...
