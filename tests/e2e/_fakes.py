"""Small hand-made volumes and a value-lookup segmenter for the app engineer's unit tests.

Each slice holds exact HU per class (muscle 40, IMAT -60, VAT -90, SAT -100, air -1000), so a
segmenter that maps those values to labels is exact and areas are known by pixel count.
"""

from __future__ import annotations

import numpy as np

from sarcoscope.types import CTVolume, PatientInfo, SeriesInfo, SourceGrid

HU = {1: 40.0, 2: -60.0, 3: -90.0, 4: -100.0}


def label_slice(rows: int = 40, cols: int = 50, muscle_rows: int = 10) -> np.ndarray:
    lab = np.zeros((rows, cols), dtype=np.uint8)
    lab[2:2 + muscle_rows, 5:25] = 1  # muscle: muscle_rows x 20
    lab[15:17, 5:10] = 2  # IMAT: 2 x 5
    lab[20:30, 5:25] = 3  # VAT: 10 x 20
    lab[32:36, 5:45] = 4  # SAT: 4 x 40
    lab[0:5, 40:45] = 1  # a muscle patch on the image right = patient's left
    return lab


def make_volume(
    n: int = 5,
    *,
    spacing=(2.5, 0.8, 0.7),
    patient: PatientInfo | None = None,
    fmt: str = "phantom",
    source_grid: SourceGrid | None = None,
    muscle_rows_per_slice: tuple[int, ...] | None = None,
) -> tuple[CTVolume, np.ndarray]:
    """(volume, labels (k, j, i)); slice k has ``muscle_rows_per_slice[k]`` muscle rows."""
    rows, cols = 40, 50
    labels = np.zeros((n, rows, cols), dtype=np.uint8)
    for k in range(n):
        mr = muscle_rows_per_slice[k] if muscle_rows_per_slice else 10
        labels[k] = label_slice(rows, cols, mr)
    hu = np.full(labels.shape, -1000, dtype=np.int16)
    for value, h in HU.items():
        hu[labels == value] = int(h)
    dz, dr, dc = spacing
    affine = np.array(
        [[dc, 0, 0, -20.0], [0, dr, 0, -15.0], [0, 0, dz, -100.0], [0, 0, 0, 1]], dtype=float
    )
    series = SeriesInfo(
        source_path="memory", format=fmt,  # type: ignore[arg-type]
        study_uid="1.2.3", series_uid="1.2.3.4", series_description="fake",
    )
    vol = CTVolume(
        hu=hu, affine=affine, series=series, patient=patient or PatientInfo(),
        source_grid=source_grid,
    )
    return vol, labels


class LookupSegmenter:
    """Labels pixels by their exact HU value: a perfect segmenter for the fake volumes."""

    name = "lookup"
    version = "test"
    sha256 = None

    def __init__(self) -> None:
        self.calls = 0

    def segment(self, hu: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
        self.calls += 1
        out = np.zeros(hu.shape, dtype=np.uint8)
        for value, h in HU.items():
            out[hu == h] = value
        return out
