"""Write a (phantom) CT volume as a real DICOM CT series or a NIfTI file.

The DICOM files are ordinary single-frame CT Image Storage instances with everything a
reader needs (file meta, geometry, rescale, UIDs) and a patient name that cannot be
mistaken for a person ("SARCOSCOPE^PHANTOM"). Pixels are stored the way most scanners do:
unsigned 12-bit in 16 bits with RescaleIntercept −1024.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import time
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import ExportError
from ..types import CTVolume

log = logging.getLogger(__name__)

TransferSyntax = Literal["explicit-le", "implicit-le", "rle", "jpeg2000", "jpegls"]
TRANSFER_SYNTAXES: tuple[str, ...] = ("explicit-le", "implicit-le", "rle", "jpeg2000", "jpegls")

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _seed_from(volume: CTVolume) -> str:
    m = re.search(r"seed=(\d+)", volume.series.source_path or "")
    return m.group(1) if m else "0"


def _ts_uid(name: str):
    from pydicom import uid

    table = {
        "explicit-le": uid.ExplicitVRLittleEndian,
        "implicit-le": uid.ImplicitVRLittleEndian,
        "rle": uid.RLELossless,
        "jpeg2000": uid.JPEG2000Lossless,
        "jpegls": uid.JPEGLSLossless,
    }
    if name not in table:
        raise ExportError(
            f"transfer_syntax {name!r} is not supported; choose one of {', '.join(TRANSFER_SYNTAXES)}"
        )
    return table[name]


def write_dicom_series(
    volume: CTVolume,
    out_dir: Path,
    *,
    transfer_syntax: str = "explicit-le",
    patient_position: Literal["HFS", "FFS"] = "HFS",
    study_uid: str | None = None,
    series_uid: str | None = None,
    include_patient_size: bool = True,
    include_patient_weight: bool = True,
    include_patient_sex: bool = True,
    include_patient_age: bool = True,
    patient_id: str | None = None,
    series_number: int = 1,
) -> list[Path]:
    """Write one CT Image Storage file per slice into ``out_dir``; return the paths (k order).

    ``patient_position="FFS"`` writes the feet-first layout a scanner produces (image columns
    running to the patient's right, instances numbered from the feet up); "HFS" the usual
    head-first supine one. The volume itself is the same patient anatomy in both cases.
    Compressed syntaxes ("rle", "jpeg2000", "jpegls") use pydicom's encoders and need the
    matching pylibjpeg / pyjpegls plugin.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, generate_uid

    if patient_position not in ("HFS", "FFS"):
        raise ExportError(f"patient_position {patient_position!r} is not supported; use 'HFS' or 'FFS'")
    ts = _ts_uid(transfer_syntax)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create DICOM output folder {out_dir}: {exc}") from exc
    ser = volume.series
    seed = _seed_from(volume)
    study_uid = study_uid or ser.study_uid or generate_uid()
    series_uid = series_uid or ser.series_uid or generate_uid()
    for_uid = ser.frame_of_reference_uid or generate_uid()
    pat = volume.patient
    n, rows, cols = volume.hu.shape
    row_mm, col_mm = volume.pixel_spacing_mm
    A = volume.affine
    flip = patient_position == "FFS"
    now = _dt.datetime(2026, 1, 1, 12, 0, 0)
    thickness = ser.slice_thickness_mm or volume.spacing_mm[0]
    paths: list[Path] = []
    # instance numbers: HFS scans run head → feet, FFS feet → head
    order = list(range(n - 1, -1, -1)) if not flip else list(range(n))
    inst_of = {k: i + 1 for i, k in enumerate(order)}
    for k in range(n):
        uid_k = (volume.slice_uids[k] if volume.slice_uids and volume.slice_uids[k] else generate_uid())
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = uid_k
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian if ts.is_compressed else ts
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = uid_k
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = ser.manufacturer or "sarcoscope phantom"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "sarcoscope synthetic phantom"
        ds.SeriesDescription = ser.series_description or "sarcoscope phantom"
        ds.PatientName = "SARCOSCOPE^PHANTOM"
        ds.PatientID = patient_id or f"PHANTOM-{seed}"
        ds.PatientBirthDate = ""
        if include_patient_sex and pat.sex:
            ds.PatientSex = pat.sex
        else:
            ds.PatientSex = ""
        if include_patient_age and pat.age_years is not None:
            ds.PatientAge = f"{int(pat.age_years):03d}Y"
        if include_patient_size and pat.height_m is not None:
            ds.PatientSize = f"{pat.height_m:.2f}"
        if include_patient_weight and pat.weight_kg is not None:
            ds.PatientWeight = f"{pat.weight_kg:.1f}"
        ds.BodyPartExamined = "ABDOMEN"
        ds.SliceThickness = f"{thickness:.3f}"
        ds.KVP = "120"
        ds.ConvolutionKernel = ser.kernel or "PHANTOM"
        ds.PatientPosition = patient_position
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = str(series_number)
        ds.InstanceNumber = str(inst_of[k])
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        if flip:
            ipp = A @ np.array([cols - 1, 0, k, 1.0])
            iop = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        else:
            ipp = A @ np.array([0, 0, k, 1.0])
            iop = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp[:3]]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
        ds.SliceLocation = f"{ipp[2]:.4f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.PixelSpacing = [f"{row_mm:.6f}", f"{col_mm:.6f}"]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        img = np.asarray(volume.hu[k])
        if flip:
            img = img[:, ::-1]
        stored = np.clip(np.rint(img).astype(np.int32) + 1024, 0, 4095).astype(np.uint16)
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        if ts.is_compressed:
            try:
                ds.compress(ts, stored)
            except Exception as exc:  # encoder missing or failed: say which
                raise ExportError(
                    f"cannot encode slice {k} as {transfer_syntax} ({ts.name}): {exc}; install the "
                    "pydicom encoder plugin for it (pylibjpeg-rle / pylibjpeg-openjpeg / pyjpegls) "
                    "or use transfer_syntax='explicit-le'"
                ) from exc
        path = out_dir / f"CT{inst_of[k]:05d}.dcm"
        try:
            ds.save_as(path, enforce_file_format=True)
        except OSError as exc:
            raise ExportError(f"cannot write DICOM file {path}: {exc}") from exc
        paths.append(path)
    return paths


def write_nifti(volume: CTVolume, path: Path, labels: np.ndarray | None = None) -> Path:
    """Write the volume as NIfTI (int16 HU, RAS affine as NIfTI expects); returns ``path``.

    The voxel array is written as (i, j, k) = (column, row, slice) of the display array,
    so the NIfTI voxel axes are patient left, posterior, superior; the affine converts
    our LPS millimetres to RAS by negating x and y. With ``labels`` (k, j, i uint8) the
    label map is written instead (uint8, same grid).
    """
    import nibabel as nib

    path = Path(path)
    if labels is not None:
        if labels.shape != volume.hu.shape:
            raise ExportError(f"labels shape {labels.shape} does not match volume {volume.hu.shape}")
        data = np.transpose(labels, (2, 1, 0)).astype(np.uint8)
    else:
        data = np.transpose(np.rint(volume.hu).astype(np.int16), (2, 1, 0))
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    aff = lps_to_ras @ volume.affine
    img = nib.Nifti1Image(np.ascontiguousarray(data), aff)
    img.header.set_xyzt_units("mm")
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    if labels is None:
        img.header["scl_slope"] = 1.0
        img.header["scl_inter"] = 0.0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(img, str(path))
    except OSError as exc:
        raise ExportError(f"cannot write NIfTI file {path}: {exc}") from exc
    return path


def make_demo_study(out_dir: Path, seed: int = 0) -> Path:
    """Write a small phantom DICOM series (512×512, ~60 slices, L2–L4) into ``out_dir``.

    Returns the folder holding the series. Fast (~1–2 s): meant for the demo and tests.
    """
    from .params import random_params
    from .volume import make_volume

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    params = random_params(rng, matrix=(512, 512), pixel_spacing_mm=0.78, fov_offset_mm=(0.0, 0.0),
                           arms="raised", metal_implant=False, recon_circle=False, seed=seed,
                           body_lateral_mm=float(rng.uniform(300, 360)), body_ap_mm=float(rng.uniform(220, 260)),
                           sat_mm=float(rng.uniform(12, 30)))
    from .anatomy import Subject

    sp = Subject(params).spine
    lo = sp.by_name("L4").z_mm - 10.0
    hi = sp.by_name("L2").z_mm + 10.0
    pv = make_volume(params, z_range_mm=(lo, hi), n_slices=60, slice_thickness_mm=2.5)
    folder = Path(out_dir)
    write_dicom_series(pv.volume, folder)
    log.debug("demo study written to %s in %.2f s", folder, time.perf_counter() - t0)
    return folder
