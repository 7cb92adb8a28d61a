"""``--labels PATH``: the label map as NIfTI on the *input's* full voxel grid.

Same shape and affine as the input NIfTI (so it overlays in ITK-SNAP, 3D Slicer or nibabel
without resampling); labels 1..4 on the analysed slices and 0 elsewhere. For DICOM input the
grid is the sorted slice stack, with its LPS geometry converted to NIfTI's RAS.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sarcoscope.errors import ExportError
from sarcoscope.types import AnalysisResult, CTVolume

#: DICOM LPS → NIfTI RAS: negate x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def display_label_volume(result: AnalysisResult) -> np.ndarray:
    """uint8 (k, j, i) labels in display orientation: analysed slices filled, 0 elsewhere."""
    out = np.zeros(result.volume.shape, dtype=np.uint8)  # the full stack, even after a partial read
    for lm in result.label_maps:
        out[lm.slice_index] = lm.labels
    return out


def source_grid_labels(volume: CTVolume, display: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map a display (k, j, i) array onto the input's stored grid: (array, RAS affine).

    The array is indexed like the affine's voxel axes (NIfTI: as stored; DICOM: column, row,
    sorted slice), so ``nibabel.Nifti1Image(array, affine)`` lands on the input's geometry.
    """
    grid = volume.source_grid
    if grid is None:
        # An in-memory volume: its own display grid, (i, j, k) order as the affine expects.
        return np.ascontiguousarray(display.transpose(2, 1, 0)), LPS_TO_RAS @ volume.affine
    stored = grid.to_source(display)
    if tuple(stored.shape) != tuple(grid.shape):
        raise ExportError(
            f"label volume {stored.shape} does not match the input grid {grid.shape}; "
            "this is a bug in sarcoscope, please report it."
        )
    affine = np.asarray(grid.affine, dtype=float)
    if volume.series.format != "nifti":
        # DICOM: the stored stack is (sorted slice, row, column) while its affine, like a
        # NIfTI affine, runs over (column, row, slice) — reorder, and LPS → RAS.
        stored = np.ascontiguousarray(stored.transpose(2, 1, 0))
        affine = LPS_TO_RAS @ affine
    return stored, affine


def check_labels_path(path: Path) -> None:
    """Refuse a ``--labels`` name that is not ``.nii`` / ``.nii.gz`` (before any work is staged)."""
    name = Path(path).name
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise ExportError(f"--labels {path}: the file name must end in .nii or .nii.gz.")


def write_labels_nifti(result: AnalysisResult, path: Path) -> Path:
    """Write the label NIfTI (``.nii`` or ``.nii.gz`` by suffix) atomically."""
    import nibabel as nib

    path = Path(path)
    check_labels_path(path)
    name = path.name
    array, affine = source_grid_labels(result.volume, display_label_volume(result))
    img = nib.Nifti1Image(array, affine)
    img.set_data_dtype(np.uint8)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header["descrip"] = b"sarcoscope labels 1 muscle 2 IMAT 3 VAT 4 SAT"
    suffix = ".nii.gz" if name.endswith(".nii.gz") else ".nii"
    tmp = path.with_name(f".{name[: -len(suffix)]}.tmp{suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(img, str(tmp))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{path}: cannot write the label NIfTI ({exc.strerror or exc}).") from exc
    return path
