"""DICOM SEG as a reference mask: segments → our tissues, frames → the CT's display slices.

Used through ``train.annotations.load_reference`` (the one loader of reference formats).

Segments to tissues, in this order:

1. ``--label-map`` (``value_map``): segment number → label 0..4 (0 ignores a segment); segments
   not in it are ignored, a number that is not a segment of the file is an error.
2. Otherwise the segmented property type code: the tissue-specific SNOMED CT codes of
   ``tissues.py`` (the ones our own ``export/dicom_seg.py`` writes). The generic "Adipose
   tissue" code does not say which fat, so such a segment goes on to the label.
3. Otherwise the segment label, case-insensitive ("muscle", "skeletal muscle…", "imat",
   "intermuscular…", "vat", "visceral…", "sat", "subcutaneous…"). A segment that none of these
   places is an error that lists the segments and suggests ``--label-map``.

Frames to slices: by the frame's referenced SOP Instance UID when both the frame and the CT
have one, else by the frame's position (Plane Position/Orientation against the CT's affine).
Pixels are placed geometrically on the CT's display grid, so flipped or transposed source
images come out right; a frame that is not on the CT's pixel grid is an error. FRACTIONAL
frames count a pixel from half the maximum fractional value. Two segments of *different*
tissues on one pixel are an error (a label map is exclusive); segments mapped to the *same*
tissue are merged. A LABELMAP SEG (pixel value = segment number) is read the same way; its
background segment is never a tissue. Every CT slice with a labelled pixel is one reference slice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarcoscope.errors import InputError
from sarcoscope.tissues import TISSUE_INFO, Tissue
from sarcoscope.train.annotations import REFERENCE_FORMATS, ReferenceSlice
from sarcoscope.types import CTVolume

logger = logging.getLogger(__name__)

SEG_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation Storage",
}

#: Codes that name exactly one of our tissues (SNOMED CT; "SRT" is its legacy designator).
_GENERIC_ADIPOSE = "55603005"
TISSUE_BY_CODE: dict[str, Tissue] = {
    TISSUE_INFO[t].type_code[0]: t for t in Tissue if TISSUE_INFO[t].type_code[0] != _GENERIC_ADIPOSE
}
_SNOMED_SCHEMES = ("SCT", "SRT")

#: Segment label (normalised: lower case, ``_``/``-`` as spaces) → tissue: exact words …
_LABEL_EXACT: dict[str, Tissue] = {"muscle": Tissue.MUSCLE, "imat": Tissue.IMAT, "vat": Tissue.VAT, "sat": Tissue.SAT}
#: … or a label starting with these words.
_LABEL_PREFIX: tuple[tuple[str, Tissue], ...] = (
    ("skeletal muscle", Tissue.MUSCLE),
    ("intermuscular", Tissue.IMAT),
    ("visceral", Tissue.VAT),
    ("subcutaneous", Tissue.SAT),
)

#: Tolerances in voxels: in-plane alignment to the CT grid, and slice position when matched by position.
_GRID_TOL = 0.1
_SLICE_TOL = 0.25


@dataclass(frozen=True)
class SegmentInfo:
    """One segment of a SEG: number, label and segmented property type (code value, scheme)."""

    number: int
    label: str
    type_code: tuple[str, str]

    @property
    def is_background(self) -> bool:
        """A LABELMAP's background segment (number 0 or DCM 125040 "Background"): never a tissue."""
        return self.number == 0 or self.type_code == ("125040", "DCM")

    def describe(self) -> str:
        return f"{self.number} '{self.label}' ({self.type_code[1]} {self.type_code[0]})"


def tissue_of_segment(segment: SegmentInfo) -> Tissue | None:
    """Our tissue for a segment by its property type code, then by its label; None if neither says."""
    value, scheme = segment.type_code
    if scheme.upper() in _SNOMED_SCHEMES and value in TISSUE_BY_CODE:
        return TISSUE_BY_CODE[value]
    text = " ".join(re.sub(r"[_\-]", " ", segment.label.lower()).split())
    if text in _LABEL_EXACT:
        return _LABEL_EXACT[text]
    for prefix, tissue in _LABEL_PREFIX:
        if text.startswith(prefix):
            return tissue
    return None


def map_segments(
    segments: list[SegmentInfo], value_map: dict[int, int] | None, what: str
) -> dict[int, Tissue]:
    """Segment number → tissue for the segments that count (see the module docstring)."""
    numbers = {s.number for s in segments}
    listing = "; ".join(s.describe() for s in segments)
    if value_map:
        unknown = sorted(set(value_map) - numbers)
        if unknown:
            raise InputError(
                f"{what}: --label-map names segment(s) {unknown}, but the SEG holds segments {listing}; "
                "use the segment numbers of this file"
            )
        out: dict[int, Tissue] = {}
        for src, dst in value_map.items():
            if not 0 <= int(dst) <= 4:
                raise InputError(f"{what}: --label-map {src}={dst}: target must be 0 (ignore) or a label 1..4")
            if dst:
                out[int(src)] = Tissue(int(dst))
        ignored = [s.describe() for s in segments if s.number not in value_map]
        if ignored:
            logger.info("%s: segments not in --label-map are ignored: %s", what, "; ".join(ignored))
        return out
    out = {}
    unknown_segments = []
    for s in segments:
        tissue = tissue_of_segment(s)
        if tissue is None:
            unknown_segments.append(s)
        else:
            out[s.number] = tissue
    if unknown_segments:
        example = ",".join(f"{s.number}={int(out.get(s.number, 0))}" for s in segments)
        raise InputError(
            f"{what}: cannot tell which tissue segment(s) {'; '.join(s.describe() for s in unknown_segments)} "
            f"hold (segments: {listing}). Name them by SNOMED code or label (muscle, IMAT, VAT, SAT), or map "
            f"segment numbers with --label-map, e.g. '{example}' (0 ignores a segment)"
        )
    return out


def _item(ds, sequence: str):
    seq = ds.get(sequence)
    return seq[0] if seq else None


def _frame_value(per_frame, shared, sequence: str, keyword: str):
    """A functional-group attribute of one frame: per-frame first, then shared."""
    for groups in (per_frame, shared):
        item = _item(groups, sequence) if groups is not None else None
        if item is not None and keyword in item:
            return item.get(keyword)
    return None


@dataclass(frozen=True)
class _Frame:
    segment: int | None  # None in a LABELMAP SEG, whose pixel values are segment numbers
    source_uid: str
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    spacing: tuple[float, ...] | None


def _frames(seg) -> list[_Frame]:
    shared = _item(seg, "SharedFunctionalGroupsSequence")
    out = []
    for item in seg.get("PerFrameFunctionalGroupsSequence", []):
        ident = _frame_value(item, shared, "SegmentIdentificationSequence", "ReferencedSegmentNumber")
        deriv = _item(item, "DerivationImageSequence")
        src = _item(deriv, "SourceImageSequence") if deriv is not None else None
        ipp = _frame_value(item, shared, "PlanePositionSequence", "ImagePositionPatient")
        iop = _frame_value(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = _frame_value(item, shared, "PixelMeasuresSequence", "PixelSpacing")
        out.append(_Frame(
            segment=int(ident) if ident is not None else None,
            source_uid=str(src.get("ReferencedSOPInstanceUID", "")) if src is not None else "",
            position=tuple(float(v) for v in ipp) if ipp is not None else None,
            orientation=tuple(float(v) for v in iop) if iop is not None else None,
            spacing=tuple(float(v) for v in spacing) if spacing is not None else None,
        ))
    return out


def _display_indices(frame: _Frame, rows: int, cols: int, volume: CTVolume, what: str):
    """Display (k, j, i) of every pixel centre of a frame; k as float (constant across the frame)."""
    if frame.position is None or frame.orientation is None or frame.spacing is None:
        raise InputError(
            f"{what}: its frames carry no plane position/orientation/pixel spacing, so they cannot be placed "
            "on the CT; export the SEG from the CT images (derived segmentation with geometry)"
        )
    ipp, iop = np.array(frame.position), np.array(frame.orientation)
    row_mm, col_mm = frame.spacing
    r, c = np.mgrid[0:rows, 0:cols]
    # DICOM: first IOP triplet = direction of increasing column index, second = increasing row.
    pts = ipp[:, None, None] + iop[:3, None, None] * (c * col_mm) + iop[3:, None, None] * (r * row_mm)
    inv = np.linalg.inv(volume.affine)
    ijk = np.tensordot(inv[:3, :3], pts, axes=1) + inv[:3, 3][:, None, None]
    ij = np.rint(ijk[:2])
    if np.max(np.abs(ijk[:2] - ij)) > _GRID_TOL or np.ptp(ijk[2]) > _GRID_TOL:
        raise InputError(
            f"{what}: its frames are not on the CT's pixel grid (SEG pixel spacing {row_mm}x{col_mm} mm, "
            f"CT {volume.pixel_spacing_mm[0]:g}x{volume.pixel_spacing_mm[1]:g} mm, or a different position/"
            "orientation); export the SEG on the grid of the CT images given with --images"
        )
    return float(ijk[2].mean()), ij[1].astype(np.int64), ij[0].astype(np.int64)


def _read(path: Path):
    """The SEG dataset (highdicom), or InputError saying what the file is instead."""
    import highdicom as hd
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        head = dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        raise InputError(f"{path}: unknown reference format; --references takes {REFERENCE_FORMATS}") from None
    except Exception as exc:  # noqa: BLE001 - any read failure is an input problem here
        raise InputError(f"{path}: cannot read the DICOM file ({exc})") from exc
    sop_class = str(head.get("SOPClassUID", ""))
    if sop_class not in SEG_SOP_CLASSES:
        kind = getattr(head.get("SOPClassUID"), "name", "") or sop_class or "unknown SOP class"
        raise InputError(
            f"{path}: a DICOM {head.get('Modality', '')} object ({kind}), not a Segmentation; --references "
            f"takes {REFERENCE_FORMATS} — export the reference from your annotation tool as DICOM SEG"
        )
    try:
        return hd.seg.segread(path)
    except Exception as exc:  # noqa: BLE001 - highdicom validates the SEG structure
        raise InputError(f"{path}: not a valid DICOM SEG ({exc}); re-export it from the annotation tool") from exc


def read_seg_reference(path: Path, volume: CTVolume, value_map: dict[int, int] | None = None) -> list[ReferenceSlice]:
    """Reference slices of ``volume`` from a DICOM SEG file (see the module docstring)."""
    path = Path(path)
    what = str(path)
    seg = _read(path)
    seg_type = str(seg.get("SegmentationType", "BINARY")).upper()
    segments = [
        SegmentInfo(
            int(s.SegmentNumber), str(s.get("SegmentLabel", "")),
            (str(s.SegmentedPropertyTypeCodeSequence[0].CodeValue),
             str(s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator))
            if s.get("SegmentedPropertyTypeCodeSequence") else ("", ""),
        )
        for s in seg.get("SegmentSequence", [])
    ]
    segments = [s for s in segments if not s.is_background]
    if not segments:
        raise InputError(f"{what}: the SEG describes no segment")
    tissue_of = map_segments(segments, value_map, what)
    if not tissue_of:
        raise InputError(f"{what}: no segment maps to a tissue (segments: {'; '.join(s.describe() for s in segments)})")
    annotated = frozenset(tissue_of.values())
    missing = [TISSUE_INFO[t].key for t in Tissue if t not in annotated]
    if missing:
        logger.warning("%s: no segment for %s; not annotated there (NaN in the evaluation, listed in the CSV "
                       "column reference_missing)", what, ", ".join(missing))
    by_number = {s.number: s for s in segments}

    frames = _frames(seg)
    rows, cols = int(seg.Rows), int(seg.Columns)
    try:
        pixels = np.asarray(seg.pixel_array).reshape(len(frames), rows, cols)
    except Exception as exc:  # noqa: BLE001 - undecodable or inconsistent pixel data is an input problem
        raise InputError(
            f"{what}: cannot decode its {len(frames)} frame(s) of {cols}x{rows} pixels ({exc}); re-export the SEG "
            "uncompressed from the annotation tool"
        ) from exc
    max_fraction = float(seg.get("MaximumFractionalValue", 1) or 1)
    uid_to_k = {uid: k for k, uid in enumerate(volume.slice_uids) if uid}
    seg_for = str(seg.get("FrameOfReferenceUID", ""))
    ct_for = volume.series.frame_of_reference_uid
    h, w = volume.shape[1:]

    owner: dict[int, np.ndarray] = {}  # display slice → segment number owning each pixel (0 none)
    unmatched: set[str] = set()
    by_position = 0
    placed: dict[tuple, tuple[float, np.ndarray, np.ndarray]] = {}  # frame geometry → display indices

    def place(frame: _Frame) -> tuple[float, np.ndarray, np.ndarray]:
        key = (frame.position, frame.orientation, frame.spacing)
        if key not in placed:
            placed[key] = _display_indices(frame, rows, cols, volume, what)
        return placed[key]

    for n, frame in enumerate(frames):
        if seg_type == "LABELMAP":
            lut = np.zeros(int(pixels[n].max()) + 1, dtype=np.int64)
            for number in tissue_of:
                if number < lut.size:
                    lut[number] = number
            seg_numbers = lut[pixels[n]]
        elif frame.segment in tissue_of:
            hit = pixels[n] >= 0.5 * max_fraction if seg_type == "FRACTIONAL" else pixels[n] != 0
            seg_numbers = np.where(hit, frame.segment, 0)
        else:
            continue  # a segment that is not one of our tissues
        set_px = seg_numbers != 0
        if frame.source_uid and uid_to_k:
            if frame.source_uid not in uid_to_k:
                unmatched.add(frame.source_uid)
                continue
            if not set_px.any():
                continue
            k = uid_to_k[frame.source_uid]
            k_geom, jj, ii = place(frame)
            if abs(k_geom - k) > 0.5:
                raise InputError(
                    f"{what}: frame {n + 1} references CT image {frame.source_uid} (slice {k}) but lies at slice "
                    f"position {k_geom:.2f}; the SEG geometry does not match the images — re-export it"
                )
        else:
            if seg_for and ct_for and seg_for != ct_for:
                raise InputError(
                    f"{what}: the SEG is in frame of reference {seg_for}, the CT in {ct_for}; it was made on "
                    "another scan — give --images the CT series it was made on"
                )
            if not set_px.any():
                continue
            k_geom, jj, ii = place(frame)
            k = int(round(k_geom))
            if abs(k_geom - k) > _SLICE_TOL or not 0 <= k < volume.n_slices:
                unmatched.add(f"frame at position {list(frame.position or ())}")
                continue
            by_position += 1
        j, i = jj[set_px], ii[set_px]
        if j.min() < 0 or i.min() < 0 or j.max() >= h or i.max() >= w:
            raise InputError(
                f"{what}: frame {n + 1} has labelled pixels outside the CT image ({w}x{h}); export the SEG on the "
                "grid of the CT images given with --images"
            )
        slice_owner = owner.setdefault(k, np.zeros((h, w), dtype=np.int64))
        new = seg_numbers[set_px]
        old = slice_owner[j, i]
        clash = (old != 0) & (old != new)
        if clash.any():
            a, b = int(old[clash][0]), int(new[clash][0])
            if tissue_of[a] != tissue_of[b]:
                raise InputError(
                    f"{what}: segments {by_number[a].describe()} and {by_number[b].describe()} overlap on "
                    f"{int(clash.sum())} pixels of CT slice {k}; a tissue map needs each pixel in one class — "
                    "remove the overlap in the annotation tool, or ignore one segment with --label-map (N=0)"
                )
        slice_owner[j, i] = np.where(old != 0, old, new)
    if unmatched:
        listed = ", ".join(sorted(unmatched)[:3]) + (" …" if len(unmatched) > 3 else "")
        if not owner:
            raise InputError(
                f"{what}: none of the CT images the SEG refers to ({listed}) is among the images read from "
                f"{volume.series.source_path or 'the --images input'}; give --images the CT series the segmentation "
                "was made on"
            )
        logger.warning("%s: %d frame(s) refer to CT images not in %s (%s); those are skipped",
                       what, len(unmatched), volume.series.source_path, listed)
    if by_position:
        logger.info("%s: %d frame(s) matched to CT slices by position (no SOP Instance UID to match)",
                    what, by_position)
    if not owner:
        raise InputError(f"{what}: no labelled pixel of a tissue segment on the CT's slices; the SEG is empty")
    lut = np.zeros(max(by_number) + 1, dtype=np.uint8)
    for number, tissue in tissue_of.items():
        lut[number] = int(tissue)
    return [ReferenceSlice(k, lut[owner[k]], annotated) for k in sorted(owner)]
