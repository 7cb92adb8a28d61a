"""One pass over the headers (``stop_before_pixels``): what each image frame is and where.

Every frame becomes a small immutable ``FrameHeader``; pydicom datasets are not kept, so the
header pass of a 1000-file series holds kilobytes, not the pixel data. Enhanced (multi-frame)
CT yields one ``FrameHeader`` per frame with geometry and rescale taken from the per-frame or
shared functional groups.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from sarcoscope.errors import InputError
from sarcoscope.io.patient import RawPatient
from sarcoscope.io.raw_header import RawHeader, read_raw_header
from sarcoscope.io.sources import DICOMDIR_SOP_CLASS, Opener, SourceRef

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameHeader:
    """Everything the reader needs about one image frame (no patient names or IDs)."""

    source: SourceRef
    frame_index: int | None  # index inside a multi-frame file; None for single-frame files
    sop_uid: str
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    modality: str
    image_type: tuple[str, ...]
    orientation: tuple[float, ...] | None
    position: tuple[float, float, float] | None
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) mm
    slice_thickness: float | None
    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    samples_per_pixel: int
    photometric: str
    slope: float
    intercept: float
    padding_value: int | None
    padding_limit: int | None
    transfer_syntax: str
    kernel: str = ""
    series_description: str = ""
    manufacturer: str = ""
    series_number: int | None = None
    instance_number: int | None = None
    body_part: str = ""
    reconstruction_diameter_mm: float | None = None
    patient: RawPatient = field(default_factory=RawPatient)
    uid_from_file_meta: bool = False
    #: Byte offset of the PixelData element in the stream, recorded by the header pass so that
    #: uncompressed frames can be read later with one seek instead of a second parse.
    pixel_offset: int | None = None
    #: Opaque digest of PatientID ("" when absent), only to tell whether series belong to
    #: different patients; the ID itself is never kept, logged or shown.
    patient_key: str = field(default="", repr=False)


#: Key of the PatientID digest, new in every process: a digest cannot be looked up against a
#: list of patient numbers, nor compared across runs. Headers are scanned in one process.
_PATIENT_KEY = os.urandom(16)


def patient_key(patient_id: str) -> str:
    """A keyed one-way digest of a PatientID ("" for an empty ID), comparable within this process."""
    pid = patient_id.strip()
    return hashlib.blake2b(pid.encode("utf-8"), key=_PATIENT_KEY, digest_size=8).hexdigest() if pid else ""


@dataclass(frozen=True)
class HeaderScan:
    """Result of scanning a set of sources."""

    frames: tuple[FrameHeader, ...]
    not_dicom: tuple[str, ...]  # files that are not DICOM at all
    damaged: tuple[str, ...]  # files that claim to be DICOM but cannot be parsed
    non_image: tuple[str, ...]  # DICOM without an image (SR, DICOMDIR, presentation state…)


def _looks_like_raw_dataset(head: bytes) -> bool:
    """A DICOM data set written without the 128-byte preamble and 'DICM' magic.

    Such files start directly with a little-endian tag of group 0x0002 (file meta) or
    0x0008 (identification); anything else is treated as non-DICOM.
    """
    if len(head) < 8:
        return False
    group = int.from_bytes(head[0:2], "little")
    if group not in (0x0002, 0x0008):
        return False
    vr = head[4:6]
    explicit = vr.isalpha() and vr.isupper()
    implicit_len = int.from_bytes(head[4:8], "little")
    return explicit or implicit_len < 0x10000


#: Image storage SOP classes we expect to hold Rows/Columns (CT, enhanced/legacy CT, MR, SC).
_IMAGE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",
        "1.2.840.10008.5.1.4.1.1.2.1",
        "1.2.840.10008.5.1.4.1.1.2.2",
        "1.2.840.10008.5.1.4.1.1.4",
        "1.2.840.10008.5.1.4.1.1.4.1",
        "1.2.840.10008.5.1.4.1.1.7",
    }
)


def read_dataset(fh: BinaryIO, name: str, *, stop_before_pixels: bool) -> Dataset | RawHeader | None:
    """Read one DICOM stream; ``None`` when it is not DICOM.

    With ``stop_before_pixels`` a plain single-frame file is read by ``io.raw_header`` (only
    the tags the reader uses; a ``RawHeader``), anything else by pydicom. Either way the
    stream is left at the PixelData tag.
    """
    if stop_before_pixels:
        start = fh.tell()
        fast = read_raw_header(fh)
        if fast is not None:
            header, offset = fast
            fh.seek(offset)
            return header
        fh.seek(start)
    return read_pydicom(fh, name, stop_before_pixels=stop_before_pixels)


def read_pydicom(fh: BinaryIO, name: str, *, stop_before_pixels: bool) -> Dataset | None:
    """Read one DICOM stream with pydicom; ``None`` when it is not DICOM.

    Files without a preamble are force-read only when their first bytes look like a DICOM tag,
    so random junk is never "parsed" into a nonsense dataset. Raises ``InputError`` for a file
    that claims to be DICOM but cannot be parsed (truncated or corrupt).
    """
    start = fh.tell()
    head = fh.read(132)
    fh.seek(start)
    has_magic = len(head) >= 132 and head[128:132] == b"DICM"
    raw = not has_magic and _looks_like_raw_dataset(head)
    if not has_magic and not raw:
        return None
    try:
        ds = pydicom.dcmread(fh, stop_before_pixels=stop_before_pixels, force=raw)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, IndexError, zlib.error) as exc:
        raise InputError(
            f"{name}: the DICOM file is damaged or truncated and cannot be read ({exc}); "
            "re-export or re-send it"
        ) from exc
    meta_class = str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", ""))
    if "Rows" not in ds and meta_class in _IMAGE_SOP_CLASSES:
        raise InputError(
            f"{name}: the DICOM file is damaged or truncated: it is an image (SOP class {meta_class}) "
            "but its header ends before the image attributes; re-export or re-send it"
        )
    if raw:
        if "Rows" not in ds and "SOPClassUID" not in ds and "Modality" not in ds:
            return None
        meta = getattr(ds, "file_meta", None)
        if meta is None or "TransferSyntaxUID" not in meta:
            implicit = ds.original_encoding[0] if hasattr(ds, "original_encoding") else True
            ds.file_meta = ds.file_meta if meta is not None else pydicom.dataset.FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    return ds


_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "SH", "TM", "UI"})
_TAGS: dict[str, int] = {}


class FastHeader:
    """Read simple header values straight from pydicom's raw elements.

    pydicom converts each element through its hook machinery on first access (~0.1 ms each);
    a CT header pass touches ~35 elements per file, which doubled the cost of the header pass.
    Text and US values of little-endian data sets are decoded here directly; anything else
    (sequences, big endian, unusual VRs, already converted elements) goes through pydicom.
    """

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        encoding = getattr(ds, "original_encoding", (None, True))
        self.little = encoding[1] is not False

    def get(self, keyword: str) -> Any:
        from pydicom.datadict import dictionary_VR, tag_for_keyword
        from pydicom.dataelem import RawDataElement

        tag = _TAGS.get(keyword)
        if tag is None:
            tag = tag_for_keyword(keyword)
            if tag is None:
                return None
            _TAGS[keyword] = tag
        if tag not in self.ds:
            return None
        elem = self.ds.get_item(tag)
        if not isinstance(elem, RawDataElement) or not self.little:
            return self.ds.get(keyword)
        raw = elem.value
        if raw is None or len(raw) == 0:
            return None
        vr = elem.VR
        if vr in (None, "UN"):
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                return self.ds.get(keyword)
        if vr in _TEXT_VRS:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            text = text.rstrip(" \x00")
            parts = [p.strip() for p in text.split("\\")]
            return parts if len(parts) > 1 else parts[0]
        if vr in ("US", "US or SS") and len(raw) % 2 == 0:
            values = np.frombuffer(raw, dtype="<u2").tolist()
            return values if len(values) > 1 else values[0]
        return self.ds.get(keyword)


def _str(ds: Any, keyword: str) -> str:
    value = ds.get(keyword) if ds is not None else None
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None


def _int_or_none(value: Any) -> int | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            return None
        return int(as_float) if as_float.is_integer() else None


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        value = str(value).split("\\")
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _group_value(groups: list[Dataset], sequence: str, keyword: str) -> Any:
    """First value of ``keyword`` inside ``sequence`` among the given functional groups."""
    for g in groups:
        if g is None:
            continue
        seq = g.get(sequence)
        if seq:
            value = seq[0].get(keyword)
            if value is not None:
                return value
    return None


_CT_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")


def _modality(ds: Any, meta: Any) -> str:
    """Modality, or CT when the tag is missing but the SOP class is a CT image storage class."""
    modality = _str(ds, "Modality").upper()
    if modality:
        return modality
    sop_class = _str(ds, "SOPClassUID") or (_str(meta, "MediaStorageSOPClassUID") if meta is not None else "")
    return "CT" if sop_class in _CT_SOP_CLASSES else ""


def _padding(ds: Any, bits_allocated: int, pixel_rep: int) -> tuple[int | None, int | None]:
    """PixelPaddingValue / RangeLimit as stored integers with the pixel's own signedness.

    The VR of these tags is US or SS depending on PixelRepresentation; a value read with the
    wrong signedness is folded back (e.g. 63536 → −2000 for signed 16-bit pixels).
    """

    def fix(value: Any) -> int | None:
        v = _int_or_none(value)
        if v is None:
            return None
        if pixel_rep == 1 and v >= 2 ** (bits_allocated - 1):
            v -= 2**bits_allocated
        elif pixel_rep == 0 and v < 0:
            v += 2**bits_allocated
        return v

    return fix(ds.get("PixelPaddingValue")), fix(ds.get("PixelPaddingRangeLimit"))


def frames_from_dataset(
    ds: Dataset | RawHeader, ref: SourceRef, pixel_offset: int | None = None
) -> list[FrameHeader]:
    """One ``FrameHeader`` per image frame of a dataset (empty for non-image DICOM).

    ``ds`` is a pydicom data set or, for the common single-frame case, the ``RawHeader`` of
    ``io.raw_header`` (same values, read ~20× faster).
    """
    h: Any = ds if isinstance(ds, RawHeader) else FastHeader(ds)
    rows = _int_or_none(h.get("Rows"))
    cols = _int_or_none(h.get("Columns"))
    if not rows or not cols:
        return []
    meta = getattr(ds, "file_meta", None)
    sop_uid = _str(h, "SOPInstanceUID")
    from_meta = False
    if not sop_uid and meta is not None:
        sop_uid = _str(meta, "MediaStorageSOPInstanceUID")
        from_meta = bool(sop_uid)
    bits_allocated = _int_or_none(h.get("BitsAllocated")) or 16
    pixel_rep = _int_or_none(h.get("PixelRepresentation")) or 0
    pad_value, pad_limit = _padding(h, bits_allocated, pixel_rep)
    kernel = _str(h, "ConvolutionKernel")
    raw_patient = RawPatient(
        sex=_str(h, "PatientSex"),
        size=_str(h, "PatientSize"),
        weight=_str(h, "PatientWeight"),
        age=_str(h, "PatientAge"),
    )
    common: dict[str, Any] = dict(
        source=ref,
        sop_uid=sop_uid,
        series_uid=_str(h, "SeriesInstanceUID"),
        study_uid=_str(h, "StudyInstanceUID"),
        frame_of_reference_uid=_str(h, "FrameOfReferenceUID"),
        modality=_modality(h, meta),
        image_type=tuple(v.strip().upper() for v in _str(h, "ImageType").split("\\") if v.strip()),
        rows=rows,
        columns=cols,
        bits_allocated=bits_allocated,
        bits_stored=_int_or_none(h.get("BitsStored")) or bits_allocated,
        pixel_representation=pixel_rep,
        samples_per_pixel=_int_or_none(h.get("SamplesPerPixel")) or 1,
        photometric=_str(h, "PhotometricInterpretation").upper(),
        padding_value=pad_value,
        padding_limit=pad_limit,
        transfer_syntax=_str(meta, "TransferSyntaxUID") if meta is not None else "",
        kernel=kernel,
        series_description=_str(h, "SeriesDescription"),
        manufacturer=_str(h, "Manufacturer"),
        series_number=_int_or_none(h.get("SeriesNumber")),
        instance_number=_int_or_none(h.get("InstanceNumber")),
        body_part=_str(h, "BodyPartExamined").upper(),
        reconstruction_diameter_mm=_float_or_none(h.get("ReconstructionDiameter")),
        patient=raw_patient,
        uid_from_file_meta=from_meta,
        pixel_offset=pixel_offset,
        patient_key=patient_key(_str(h, "PatientID")),
    )
    n_frames = _int_or_none(h.get("NumberOfFrames")) or 1
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    per_frame_seq = ds.get("PerFrameFunctionalGroupsSequence")
    if n_frames == 1 and not per_frame_seq and not shared_seq:
        slope = _float_or_none(h.get("RescaleSlope"))
        intercept = _float_or_none(h.get("RescaleIntercept"))
        return [
            FrameHeader(
                frame_index=None,
                orientation=_floats(h.get("ImageOrientationPatient"), 6),
                position=_floats(h.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
                pixel_spacing=_floats(h.get("PixelSpacing"), 2),  # type: ignore[arg-type]
                slice_thickness=_float_or_none(h.get("SliceThickness")),
                slope=slope if slope is not None else 1.0,
                intercept=intercept if intercept is not None else 0.0,
                **common,
            )
        ]
    shared = shared_seq[0] if shared_seq else None
    frames: list[FrameHeader] = []
    for f in range(n_frames):
        per = per_frame_seq[f] if per_frame_seq and f < len(per_frame_seq) else None
        groups = [per, shared]
        orientation = _floats(
            _group_value(groups, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
        ) or _floats(h.get("ImageOrientationPatient"), 6)
        position = _floats(_group_value(groups, "PlanePositionSequence", "ImagePositionPatient"), 3)
        if position is None and n_frames == 1:
            position = _floats(h.get("ImagePositionPatient"), 3)
        spacing = _floats(_group_value(groups, "PixelMeasuresSequence", "PixelSpacing"), 2) or _floats(
            h.get("PixelSpacing"), 2
        )
        thickness = _float_or_none(_group_value(groups, "PixelMeasuresSequence", "SliceThickness"))
        if thickness is None:
            thickness = _float_or_none(h.get("SliceThickness"))
        slope = _float_or_none(_group_value(groups, "PixelValueTransformationSequence", "RescaleSlope"))
        intercept = _float_or_none(
            _group_value(groups, "PixelValueTransformationSequence", "RescaleIntercept")
        )
        if slope is None:
            slope = _float_or_none(h.get("RescaleSlope"))
        if intercept is None:
            intercept = _float_or_none(h.get("RescaleIntercept"))
        frame_type = _group_value(groups, "CTImageFrameTypeSequence", "FrameType")
        fields = dict(common)
        if frame_type is not None and not common["image_type"]:
            fields["image_type"] = tuple(str(v).strip().upper() for v in frame_type)
        frames.append(
            FrameHeader(
                frame_index=f,
                orientation=orientation,
                position=position,  # type: ignore[arg-type]
                pixel_spacing=spacing,  # type: ignore[arg-type]
                slice_thickness=thickness,
                slope=slope if slope is not None else 1.0,
                intercept=intercept if intercept is not None else 0.0,
                **fields,
            )
        )
    return frames


def scan_headers(refs: list[SourceRef], *, use_raw: bool = True) -> HeaderScan:
    """Read the header of every source once (``stop_before_pixels``).

    Plain single-frame files go through ``io.raw_header`` (the wanted tags only); anything it
    does not handle exactly — and ``use_raw=False`` — through ``pydicom.dcmread``.
    """
    frames: list[FrameHeader] = []
    not_dicom: list[str] = []
    damaged: list[str] = []
    non_image: list[str] = []
    with Opener() as opener:
        for ref in refs:
            try:
                with opener.open(ref) as fh:
                    ds: Dataset | RawHeader | None
                    if use_raw:
                        ds = read_dataset(fh, ref.name, stop_before_pixels=True)
                    else:
                        ds = read_pydicom(fh, ref.name, stop_before_pixels=True)
                    pixel_offset = fh.tell()
            except InputError as exc:
                logger.warning("%s", exc)
                damaged.append(ref.name)
                continue
            except (OSError, EOFError) as exc:
                logger.warning("%s: cannot be opened (%s)", ref.name, exc)
                damaged.append(ref.name)
                continue
            if ds is None:
                not_dicom.append(ref.name)
                continue
            sop_class = _str(ds, "SOPClassUID") or _str(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID")
            if sop_class == DICOMDIR_SOP_CLASS:
                non_image.append(ref.name)
                continue
            try:
                got = frames_from_dataset(ds, ref, pixel_offset)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                logger.warning("%s: header values cannot be interpreted (%s)", ref.name, exc)
                damaged.append(ref.name)
                continue
            if not got:
                non_image.append(ref.name)
            frames.extend(got)
    return HeaderScan(tuple(frames), tuple(not_dicom), tuple(damaged), tuple(non_image))
