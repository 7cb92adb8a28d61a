"""Synthetic DICOM writer for the io tests (pydicom only), plus checks of the writer itself.

The pixel values are a known function of the LPS position, ``world_hu(x, y, z)``, so a test
can check any orientation by comparing ``volume.hu[k, j, i]`` with the function evaluated at
``volume.affine @ (i, j, k, 1)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def world_hu(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Integer HU that differ along each LPS axis (x by 3, y by 5, z by 7 per mm step)."""
    return np.rint(3 * x + 5 * y + 7 * z).astype(np.int32)


def make_slice(
    *,
    position: Sequence[float],
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    rows: int = 16,
    cols: int = 20,
    spacing: tuple[float, float] = (1.0, 1.0),
    thickness: float | None = 1.0,
    series_uid: str = "1.2.3.4",
    study_uid: str = "1.2.3",
    frame_of_reference_uid: str = "1.2.3.9",
    modality: str = "CT",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    slope: float = 1.0,
    intercept: float = -1024.0,
    pixel_representation: int = 0,
    padding_value: int | None = None,
    hu_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] = world_hu,
    instance_number: int = 1,
    kernel: str = "B30f",
    description: str = "synthetic",
    patient: dict[str, str] | None = None,
    sop_uid: str | None = None,
) -> Dataset:
    """One CT slice whose pixel (r, c) holds ``hu_fn`` at its LPS position."""
    row_cos = np.asarray(orientation[:3], float)
    col_cos = np.asarray(orientation[3:], float)
    r, c = np.mgrid[0:rows, 0:cols]
    pos = (
        np.asarray(position, float)[:, None, None]
        + row_cos[:, None, None] * c * spacing[1]
        + col_cos[:, None, None] * r * spacing[0]
    )
    hu = hu_fn(pos[0], pos[1], pos[2]).astype(np.float64)
    stored = np.rint((hu - intercept) / slope)
    if padding_value is not None:
        stored[:2, :2] = padding_value  # a padded corner
    dtype = np.int16 if pixel_representation else np.uint16
    stored = stored.astype(dtype)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    sop = sop_uid if sop_uid is not None else generate_uid()
    meta.MediaStorageSOPInstanceUID = sop or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.Modality = modality
    ds.ImageType = list(image_type)
    ds.PatientName = "Secret^Name"
    ds.PatientID = "SECRET-ID-123"
    for key, value in (patient or {}).items():
        setattr(ds, key, value)
    ds.SeriesDescription = description
    ds.ConvolutionKernel = kernel
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    if thickness is not None:
        ds.SliceThickness = thickness
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = pixel_representation
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    if padding_value is not None:
        ds.PixelPaddingValue = int(padding_value)
    ds.PixelData = stored.tobytes()
    return ds


def write_series(
    folder: Path,
    n: int = 5,
    *,
    z0: float = -100.0,
    dz: float = 2.0,
    origin_xy: tuple[float, float] = (-10.0, -8.0),
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    shuffle_instance_numbers: bool = True,
    positions: Sequence[Sequence[float]] | None = None,
    name: str = "slice",
    **kwargs,
) -> list[Path]:
    """Write ``n`` slices stepping ``dz`` mm along the slice normal; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    row_cos = np.asarray(orientation[:3], float)
    col_cos = np.asarray(orientation[3:], float)
    normal = np.cross(row_cos, col_cos)
    paths = []
    rng = np.random.default_rng(0)
    numbers = rng.permutation(n) + 1 if shuffle_instance_numbers else np.arange(n) + 1
    for s in range(n):
        if positions is not None:
            pos = positions[s]
        else:
            pos = np.array([origin_xy[0], origin_xy[1], 0.0]) + normal * (z0 + s * dz)
            if abs(normal[2]) < 0.5:  # not axial: keep z0 on the z axis
                pos = pos + np.array([0, 0, z0])
        ds = make_slice(position=pos, orientation=orientation, instance_number=int(numbers[s]), **kwargs)
        path = folder / f"{name}{s:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def expected_display_hu(volume) -> np.ndarray:
    """``world_hu`` evaluated at every display voxel centre through the volume's affine."""
    k, j, i = np.meshgrid(*(np.arange(s) for s in volume.hu.shape), indexing="ij")
    ijk1 = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    xyz = ijk1 @ volume.affine.T
    return world_hu(xyz[..., 0], xyz[..., 1], xyz[..., 2])


# --- checks of the factory itself -------------------------------------------------------------


def test_written_slice_reads_back_with_pydicom(tmp_path: Path) -> None:
    paths = write_series(tmp_path, n=2)
    ds = pydicom.dcmread(paths[0])
    hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(float(ds.RescaleIntercept))
    x0, y0, z0 = (float(v) for v in ds.ImagePositionPatient)
    assert hu[0, 0] == world_hu(np.array(x0), np.array(y0), np.array(z0))
    # one column to the right is +1 mm in x → +3 HU; one row down +1 mm in y → +5 HU
    assert hu[0, 1] - hu[0, 0] == 3
    assert hu[1, 0] - hu[0, 0] == 5


def test_world_function_distinguishes_axes() -> None:
    zero = np.zeros(1)
    one = np.ones(1)
    values = {int(world_hu(one, zero, zero)[0]), int(world_hu(zero, one, zero)[0]), int(world_hu(zero, zero, one)[0])}
    assert values == {3, 5, 7}
