"""``read_ct``: the one entry point from a path to a display-oriented ``CTVolume``."""

from __future__ import annotations

from pathlib import Path

from sarcoscope.errors import InputError
from sarcoscope.io.dicom import read_dicom
from sarcoscope.io.nifti import read_nifti
from sarcoscope.io.sources import is_nifti, truncation_guard
from sarcoscope.types import CTVolume


def read_ct(path: Path, series_uid: str | None = None, *, workers: int | None = None) -> CTVolume:
    """Read a CT scan from a DICOM folder (recursive), file, zip, DICOMDIR or NIfTI file.

    For DICOM inputs holding several series the best axial CT series for body composition is
    picked (see ``io.series.select_series``) unless ``series_uid`` names one; the reason is in
    ``volume.series.selection_reason``. Raises ``InputError``/``GeometryError`` with a message
    naming the file and what to do.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    with truncation_guard(path):
        if path.is_file() and is_nifti(path):
            if series_uid:
                raise InputError(f"{path}: --series applies to DICOM input; a NIfTI file holds one volume")
            return read_nifti(path)
        return read_dicom(path, series_uid, workers=workers)


def source_to_display_index(volume: CTVolume, k_source: int) -> int:
    """Display slice index of a slice counted as the user sees the input.

    NIfTI: ``k_source`` counts along the file's stored third axis (as in ITK-SNAP/nibabel).
    DICOM: it counts along the sorted stack, inferior → superior, which is the display order.
    """
    n = volume.n_slices
    grid = volume.source_grid
    if volume.series.format == "nifti":
        if grid is None:
            raise InputError("this NIfTI volume has no source grid; slice indices cannot be mapped")
        if grid.axes[0] != 2:
            raise InputError(
                f"{volume.series.source_path}: the file's third axis is not the body axis (it was "
                "stored coronally or sagittally), so slice indices along it are not axial slices; "
                "give display slice indices or reorient the file"
            )
        n_src = grid.shape[2]
        if not 0 <= k_source < n_src:
            raise InputError(
                f"slice {k_source} is outside the NIfTI's third axis 0…{n_src - 1} ({volume.series.source_path})"
            )
        return n_src - 1 - k_source if grid.flips[0] else k_source
    if not 0 <= k_source < n:
        raise InputError(
            f"slice {k_source} is outside the series' 0…{n - 1} (sorted inferior → superior)"
        )
    return k_source


def display_to_source_index(volume: CTVolume, k_display: int) -> int:
    """Inverse of ``source_to_display_index`` (for reporting indices as the user counts them)."""
    grid = volume.source_grid
    if volume.series.format == "nifti" and grid is not None and grid.axes[0] == 2 and grid.flips[0]:
        return grid.shape[2] - 1 - k_display
    return k_display
