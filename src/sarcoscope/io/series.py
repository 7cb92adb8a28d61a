"""Series assembly from frame headers and choice of the series to measure.

Frames are grouped by SeriesInstanceUID, split further when one UID mixes orientations or
image sizes. When the UID is empty (crudely de-identified data) frames are grouped by
FrameOfReferenceUID, orientation, size, series number, description and kernel instead.

Selection (``select_series``): unusable candidates carry a ``rejection`` (not CT, localizer,
not axial, projection/MIP, no geometry, colour); among the rest the reader prefers the one
covering the longest body extent, then a soft-tissue kernel, then original over derived
images, then the thinnest slices, then the most slices.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sarcoscope.errors import InputError
from sarcoscope.io.dicom_headers import FrameHeader
from sarcoscope.io.geometry import is_axial, plane_name, slice_normal

_PROJECTION_TYPES = ("MIP", "MINIP", "MINIMUM", "MAXIMUM", "PROJECTION IMAGE", "VOLUME", "CURVED", "AVERAGE")
_LOCALIZER_TYPES = ("LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW", "SCANOGRAM")

_TS_NAMES = {
    "1.2.840.10008.1.2": "implicit VR",
    "1.2.840.10008.1.2.1": "explicit VR",
    "1.2.840.10008.1.2.2": "explicit VR big endian",
    "1.2.840.10008.1.2.5": "RLE",
    "1.2.840.10008.1.2.4.50": "JPEG baseline",
    "1.2.840.10008.1.2.4.51": "JPEG extended",
    "1.2.840.10008.1.2.4.57": "JPEG lossless",
    "1.2.840.10008.1.2.4.70": "JPEG lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.4.201": "HTJ2K lossless",
    "1.2.840.10008.1.2.4.202": "HTJ2K lossless RPCL",
    "1.2.840.10008.1.2.4.203": "HTJ2K",
    "1.2.840.10008.1.2.8.1": "deflated",
}


def transfer_syntax_name(uid: str) -> str:
    return _TS_NAMES.get(uid, uid or "unknown transfer syntax")


def kernel_class(kernel: str) -> int:
    """2 soft-tissue, 1 unknown, 0 sharp (bone/lung) reconstruction kernel.

    Vendor conventions: Siemens ``B30f``/``Br38``/``I31f`` (number < 50 soft), GE ``STANDARD``/
    ``SOFT`` vs ``BONE``/``LUNG``/``EDGE``, Canon/Toshiba ``FC08`` (< 30 soft), Philips ``B``/``C``
    soft vs ``D``/``E``/``L``/``Y`` sharp.
    """
    k = kernel.upper().split("\\")[0].strip()
    if not k:
        return 1
    if any(w in k for w in ("BONE", "LUNG", "SHARP", "EDGE", "DETAIL", "HIGH", "ULTRA")):
        return 0
    if any(w in k for w in ("STANDARD", "SOFT", "SMOOTH", "BODY", "ABDOMEN", "STND")):
        return 2
    m = re.fullmatch(r"FC(\d+)", k)
    if m:
        return 2 if int(m.group(1)) < 30 else 0
    m = re.fullmatch(r"[A-Z]{1,2}(\d{2})[A-Z]?", k)
    if m:
        return 2 if int(m.group(1)) < 50 else 0
    if k in ("A", "B", "C"):
        return 2
    if k in ("D", "E", "L", "Y", "YA", "YB", "YC"):
        return 0
    return 1


def _round(values: tuple[float, ...] | None, digits: int) -> tuple[float, ...] | None:
    return None if values is None else tuple(round(v, digits) + 0.0 for v in values)


@dataclass(frozen=True)
class SeriesCandidate:
    """One assembled stack of frames that could be measured (headers only, no pixels).

    ``frames`` are sorted inferior → superior along the slice normal when positions are known.
    ``key`` identifies the candidate: the SeriesInstanceUID, suffixed ``#n`` when one UID was
    split, or ``noUID:<n>`` when the UID was empty.
    """

    key: str
    frames: tuple[FrameHeader, ...]
    grouping_note: str = ""

    @property
    def first(self) -> FrameHeader:
        return self.frames[0]

    @property
    def series_uid(self) -> str:
        return self.first.series_uid

    @property
    def modality(self) -> str:
        return self.first.modality

    @property
    def image_type(self) -> tuple[str, ...]:
        return self.first.image_type

    @property
    def orientation(self) -> tuple[float, ...] | None:
        return self.first.orientation

    @property
    def n_slices(self) -> int:
        return len(self.frames)

    @property
    def kernel(self) -> str:
        return self.first.kernel

    @cached_property
    def z_range_mm(self) -> tuple[float, float] | None:
        zs = [f.position[2] for f in self.frames if f.position is not None]
        return (min(zs), max(zs)) if zs else None

    @cached_property
    def spacing_mm(self) -> float | None:
        """Median distance between consecutive slices along the normal (None: single slice)."""
        if self.orientation is None or self.n_slices < 2:
            return None
        if any(f.position is None for f in self.frames):
            return None
        n = slice_normal(self.orientation)
        along = np.array([np.dot(f.position, n) for f in self.frames])  # type: ignore[arg-type]
        return float(np.median(np.abs(np.diff(along))))

    @property
    def extent_mm(self) -> float:
        """Body length covered along the slice normal (slice count × spacing or thickness)."""
        step = self.spacing_mm or self.first.slice_thickness or 0.0
        return step * self.n_slices

    @cached_property
    def rejection(self) -> str | None:
        """Why this candidate cannot be measured, or None when it can."""
        f = self.first
        where = f"series {self.key or '(no UID)'} ({f.source.name})"
        if f.modality != "CT":
            return (
                f"{where} is not CT (modality {f.modality or 'missing'}): sarcoscope measures body "
                "composition on CT only — choose a CT series"
            )
        if any(t in _LOCALIZER_TYPES for t in f.image_type):
            return (
                f"{where} is a CT localizer (scout, ImageType {'/'.join(f.image_type)}): a scout is "
                "not a cross-section — choose the axial CT series of the same study"
            )
        if f.samples_per_pixel != 1 or not f.photometric.startswith("MONOCHROME"):
            return (
                f"{where} is a colour image ({f.photometric}, secondary capture or screenshot): it "
                "holds no Hounsfield units — choose the original CT series"
            )
        if f.orientation is None or any(fr.position is None for fr in self.frames):
            return (
                f"{where} has no patient geometry (ImageOrientationPatient/ImagePositionPatient "
                "missing): it cannot be placed in the body — choose the original CT series"
            )
        if not is_axial(f.orientation):
            derived = "/".join(f.image_type) or "no ImageType"
            return (
                f"{where} is not an axial CT: its slices are {plane_name(f.orientation)} "
                f"(ImageType {derived}); body composition is measured on axial slices — choose the "
                "axial series"
            )
        if any(t in _PROJECTION_TYPES for t in f.image_type[2:]):
            return (
                f"{where} is a projection/derived image (ImageType {'/'.join(f.image_type)}): it does "
                "not hold the HU of one slice — choose the original axial series"
            )
        if f.pixel_spacing is None:
            return f"{where} has no PixelSpacing: areas cannot be measured in cm²"
        return None

    @property
    def is_derived(self) -> bool:
        return bool(self.image_type) and self.image_type[0] == "DERIVED" or "SECONDARY" in self.image_type[1:2]

    def describe(self) -> str:
        """One line a user can read to pick a series with ``--series``."""
        f = self.first
        plane = plane_name(f.orientation) if f.orientation is not None else "no geometry"
        parts = [
            self.key or "(no UID)",
            f.modality or "?",
            plane,
            "/".join(f.image_type) or "-",
            repr(f.series_description) if f.series_description else "no description",
            f"kernel {self.kernel}" if self.kernel else "kernel ?",
            f"{self.n_slices} slice{'s' if self.n_slices != 1 else ''} {f.rows}x{f.columns}",
        ]
        if f.pixel_spacing:
            parts.append(f"{f.pixel_spacing[0]:.3g} mm pixels")
        if f.slice_thickness:
            parts.append(f"{f.slice_thickness:.3g} mm thick")
        if self.spacing_mm:
            parts.append(f"every {self.spacing_mm:.3g} mm")
        if self.z_range_mm:
            parts.append(f"z {self.z_range_mm[0]:.1f}…{self.z_range_mm[1]:.1f} mm")
        parts.append(transfer_syntax_name(f.transfer_syntax))
        return " | ".join(parts)


def drop_duplicate_frames(
    frames: tuple[FrameHeader, ...] | list[FrameHeader],
) -> tuple[tuple[FrameHeader, ...], tuple[tuple[FrameHeader, FrameHeader], ...]]:
    """Keep one copy of each image that occurs more than once (a folder copied into itself,
    the same study exported twice).

    Two frames are the same image when they share SOPInstanceUID and frame number *and* sit at
    the same place in the same series — a non-empty SOPInstanceUID names one image
    worldwide. Frames without a UID, or sharing one (crude de-identification) while differing
    in place, are all kept, so genuinely different images at one position are still refused
    by the geometry check. Returns the frames kept (first copy, in input order) and the
    ``(dropped, kept)`` pairs.
    """
    kept: list[FrameHeader] = []
    seen: dict[tuple, FrameHeader] = {}
    dropped: list[tuple[FrameHeader, FrameHeader]] = []
    for f in frames:
        if not f.sop_uid:
            kept.append(f)
            continue
        key = (
            f.sop_uid,
            f.frame_index,
            f.series_uid,
            _round(f.position, 3),
            _round(f.orientation, 4),
            f.rows,
            f.columns,
        )
        first = seen.get(key)
        if first is None:
            seen[key] = f
            kept.append(f)
        else:
            dropped.append((f, first))
    return tuple(kept), tuple(dropped)


def _sort_frames(frames: list[FrameHeader]) -> list[FrameHeader]:
    """Sort along the slice normal, inferior → superior (never by InstanceNumber)."""
    orientation = frames[0].orientation
    if orientation is None or any(f.position is None for f in frames):
        return sorted(frames, key=lambda f: (f.instance_number or 0, f.source, f.frame_index or 0))
    n = slice_normal(orientation)
    if n[2] < 0:
        n = -n
    return sorted(frames, key=lambda f: (float(np.dot(f.position, n)), f.source, f.frame_index or 0))  # type: ignore[arg-type]


def group_series(frames: tuple[FrameHeader, ...] | list[FrameHeader]) -> list[SeriesCandidate]:
    """Assemble frames into candidate series (see module docstring)."""
    groups: dict[tuple, list[FrameHeader]] = defaultdict(list)
    for f in frames:
        shape_key = (
            _round(f.orientation, 3),
            f.rows,
            f.columns,
            _round(f.pixel_spacing, 4),
        )
        if f.series_uid:
            key: tuple = ("uid", f.series_uid, f.modality) + shape_key
        else:
            key = (
                "nouid",
                f.study_uid,
                f.frame_of_reference_uid,
                f.modality,
                f.series_number,
                f.series_description,
                f.kernel,
                f.image_type,
                round(f.slice_thickness, 3) if f.slice_thickness else None,
            ) + shape_key
        groups[key].append(f)

    per_uid: dict[str, int] = defaultdict(int)
    for key in groups:
        if key[0] == "uid":
            per_uid[key[1]] += 1
    candidates: list[SeriesCandidate] = []
    seen_uid: dict[str, int] = defaultdict(int)
    n_nouid = 0
    for key, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        ordered = tuple(_sort_frames(members))
        if key[0] == "uid":
            uid = key[1]
            if per_uid[uid] > 1:
                seen_uid[uid] += 1
                name = f"{uid}#{seen_uid[uid]}"
                note = (
                    f"series {uid} mixes {per_uid[uid]} different orientations or image sizes; "
                    f"split into separate stacks, this is stack #{seen_uid[uid]}"
                )
            else:
                name, note = uid, ""
        else:
            n_nouid += 1
            name = f"noUID:{n_nouid}"
            note = (
                "SeriesInstanceUID is empty: slices grouped by FrameOfReferenceUID, orientation, "
                "image size, series number, description and kernel"
            )
        candidates.append(SeriesCandidate(key=name, frames=ordered, grouping_note=note))
    return candidates


def find_candidate(candidates: list[SeriesCandidate], series_uid: str) -> list[SeriesCandidate]:
    """Candidates matching a user-given UID (exact key, or the UID of a split series)."""
    wanted = series_uid.strip()
    return [c for c in candidates if c.key == wanted or (c.series_uid and c.series_uid == wanted)]


def _rank(c: SeriesCandidate, max_extent: float) -> tuple:
    covers = c.extent_mm >= 0.9 * max_extent
    step = c.spacing_mm or c.first.slice_thickness or 99.0
    return (covers, kernel_class(c.kernel), not c.is_derived, -step, c.n_slices)


def _refuse_mixed_origins(usable: list[SeriesCandidate], source: str) -> None:
    """Refuse to choose among series of different patients or studies.

    The ranking in ``select_series`` compares series of *one* examination; across patients
    it would silently measure one of them and take sex, height and weight from that one, and
    across studies it would pick a date. Patients are told apart by a digest of PatientID
    and studies by StudyInstanceUID (empty values count as unknown, not as different);
    the message numbers them ("patient 1", "study 2") and never shows an identifier.
    """
    if len(usable) < 2:
        return
    patients: dict[str, int] = {}
    studies: dict[str, int] = {}
    for c in usable:
        if c.first.patient_key:
            patients.setdefault(c.first.patient_key, len(patients) + 1)
        if c.first.study_uid:
            studies.setdefault(c.first.study_uid, len(studies) + 1)
    if len(patients) < 2 and len(studies) < 2:
        return

    def origin(c: SeriesCandidate) -> str:
        p = patients.get(c.first.patient_key)
        st = studies.get(c.first.study_uid)
        return f"patient {p or '?'}, study {st or '?'}"

    listing = "\n".join(f"  - [{origin(c)}] {c.describe()}" for c in usable)
    if len(patients) > 1:
        what = f"{len(patients)} different patients (PatientID differs)"
        advice = "keep one patient's images per folder, or choose the series to measure with --series UID"
    else:
        what = f"{len(studies)} different studies (StudyInstanceUID differs)"
        advice = "choose the series to measure with --series UID"
    raise InputError(
        f"{source}: the {len(usable)} axial CT series in the input come from {what}; sarcoscope "
        "does not guess which one to measure (the patient's sex, height and weight would come "
        f"from whichever it picked) — {advice}. Series found:\n{listing}"
    )


def select_series(
    candidates: list[SeriesCandidate], series_uid: str | None = None, *, source: str = ""
) -> tuple[SeriesCandidate, str]:
    """Pick the series to measure and say why.

    Raises ``InputError`` when the requested UID is absent (listing what is there), when no
    candidate can be measured (with each candidate's specific reason), or when no UID is given
    and the measurable candidates come from different patients or studies.
    """
    listing = "\n".join(f"  - {c.describe()}" for c in candidates)
    if series_uid:
        matches = find_candidate(candidates, series_uid)
        if not matches:
            raise InputError(
                f"{source}: series {series_uid} is not in the input; available series:\n{listing}"
            )
        usable = [c for c in matches if c.rejection is None]
        if not usable:
            raise InputError(matches[0].rejection or "")
        if len(usable) == 1:
            return usable[0], f"series {series_uid} requested with --series"
        max_extent = max(c.extent_mm for c in usable)
        best = max(usable, key=lambda c: _rank(c, max_extent))
        return best, (
            f"series {series_uid} requested with --series; it holds {len(usable)} stacks, picked "
            f"{best.key} ({best.n_slices} slices)"
        )
    usable = [c for c in candidates if c.rejection is None]
    if not usable:
        if len(candidates) == 1:
            raise InputError(candidates[0].rejection or "")
        reasons = "\n".join(f"  - {c.rejection}" for c in candidates)
        raise InputError(f"{source}: none of the {len(candidates)} series is an axial CT that can be measured:\n{reasons}")
    _refuse_mixed_origins(usable, source)
    if len(usable) == 1:
        c = usable[0]
        skipped = len(candidates) - 1
        reason = "the only axial CT series in the input"
        if skipped:
            reason += f" ({skipped} other series skipped: not axial CT / localizer / not CT)"
        return c, reason
    max_extent = max(c.extent_mm for c in usable)
    ranked = sorted(usable, key=lambda c: _rank(c, max_extent), reverse=True)
    best = ranked[0]
    why = [f"covers {best.extent_mm:.0f} mm"]
    why.append(
        {2: f"soft-tissue kernel {best.kernel}", 1: "kernel unknown", 0: f"sharp kernel {best.kernel}"}[
            kernel_class(best.kernel)
        ]
    )
    why.append("derived images" if best.is_derived else "original images")
    step = best.spacing_mm or best.first.slice_thickness
    if step:
        why.append(f"{step:.3g} mm slices")
    why.append(f"{best.n_slices} slices")
    return best, (
        f"picked {best.key} of {len(usable)} axial CT series ({', '.join(why)}); ranking: longest "
        "coverage, then soft-tissue kernel, original over derived, thinnest slices, most slices"
    )
