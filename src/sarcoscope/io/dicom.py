"""DICOM series → ``CTVolume``: discover (headers once), plan geometry, decode what is needed.

The three steps are separate so later stages can read only what they need:

* ``discover_series(path)`` reads every header once (``stop_before_pixels``) and assembles
  candidate series without touching pixel data;
* ``plan_series(candidate)`` sorts the slices along the slice normal, checks spacing, tilt and
  orientation and works out the display affine — still headers only;
* ``load_series(candidate, indices=..., workers=...)`` decodes only the requested slices
  (evenly spaced subset, e.g. every 4th slice or a range around L3) into one preallocated array,
  optionally across worker processes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarcoscope.errors import GeometryError, InputError
from sarcoscope.io.dicom_headers import FrameHeader, scan_headers
from sarcoscope.io.geometry import check_axial_plane, check_stack, display_mapping
from sarcoscope.io.patient import parse_patient
from sarcoscope.io.pixels import Placement, auto_workers, decode_into, integral_rescale
from sarcoscope.io.series import SeriesCandidate, drop_duplicate_frames, group_series, select_series
from sarcoscope.io.sources import is_nifti, list_sources, truncation_guard
from sarcoscope.types import CTVolume, SeriesInfo, SourceGrid

logger = logging.getLogger(__name__)

#: Narrower reconstructions than this are unlikely to show a whole adult abdomen.
MIN_ABDOMEN_FOV_MM = 260.0


@dataclass(frozen=True)
class Discovery:
    """Candidates found under a path, and what was skipped on the way."""

    candidates: tuple[SeriesCandidate, ...]
    warnings: tuple[str, ...]


def discover(path: Path) -> Discovery:
    """Scan every file under ``path`` once (headers only) and assemble candidate series."""
    path = Path(path)
    refs = list_sources(path)
    scan = scan_headers(refs)
    warnings: list[str] = []
    if not scan.frames:
        if len(refs) == 1 and scan.damaged:
            raise InputError(
                f"{refs[0].name}: the DICOM file is damaged or truncated and cannot be read; "
                "re-export or re-send it"
            )
        niftis = [r.name for r in refs if r.member is None and is_nifti(r.path)]
        if len(refs) == 1 and scan.not_dicom and not niftis:
            raise InputError(
                f"{refs[0].name}: not a DICOM file (no DICM marker and no DICOM tags at the start) "
                "and not NIfTI (.nii/.nii.gz); point sarcoscope at a DICOM folder, zip, DICOMDIR or NIfTI"
            )
        hint = (
            f"; it holds NIfTI file(s) such as {niftis[0]}: pass that file itself"
            if niftis
            else "; point sarcoscope at a folder holding the CT series"
        )
        raise InputError(
            f"{path}: no DICOM images found among {len(refs)} file(s) ({len(scan.not_dicom)} not "
            f"DICOM, {len(scan.damaged)} damaged, {len(scan.non_image)} DICOM without images){hint}"
        )
    if scan.not_dicom:
        warnings.append(f"{len(scan.not_dicom)} non-DICOM file(s) skipped (e.g. {scan.not_dicom[0]})")
    if scan.damaged:
        warnings.append(
            f"{len(scan.damaged)} damaged DICOM file(s) skipped (e.g. {scan.damaged[0]}); "
            "if they belong to the measured series, it will show missing slices"
        )
    if scan.non_image:
        warnings.append(f"{len(scan.non_image)} DICOM file(s) without an image skipped (DICOMDIR, SR, …)")
    frames, duplicates = drop_duplicate_frames(scan.frames)
    if duplicates:
        copy, original = duplicates[0]
        warnings.append(
            f"{len(duplicates)} duplicate image(s) skipped: the same instance (SOPInstanceUID) at the "
            f"same position as another file, e.g. {copy.source.name} repeats {original.source.name}; "
            "each image was read once"
        )
    for w in warnings:
        logger.warning("%s: %s", path, w)
    return Discovery(tuple(group_series(frames)), tuple(warnings))


def discover_series(path: Path) -> list[SeriesCandidate]:
    """Candidate series under a DICOM folder/file/zip/DICOMDIR, from headers only.

    Each candidate's ``describe()`` is one line for the user; ``rejection`` says why it cannot be
    measured (or None).
    """
    return list(discover(Path(path)).candidates)


@dataclass(frozen=True, eq=False)
class SeriesPlan:
    """Geometry of a candidate, worked out from headers: display order, affine, source grid."""

    candidate: SeriesCandidate
    frames: tuple[FrameHeader, ...]  # display slice order k (inferior → superior)
    affine: np.ndarray  # display affine of the whole stack
    source_grid: SourceGrid
    placement: Placement
    out_dtype: np.dtype
    warnings: tuple[str, ...]

    @property
    def n_slices(self) -> int:
        return len(self.frames)

    @property
    def shape(self) -> tuple[int, int, int]:
        f = self.frames[0]
        rows, cols = (f.columns, f.rows) if self.placement.transpose else (f.rows, f.columns)
        return (len(self.frames), rows, cols)

    def z_mm(self, k: float) -> float:
        """Superior coordinate of display slice ``k`` (centre of the image)."""
        _, rows, cols = self.shape
        return float((self.affine @ np.array([(cols - 1) / 2, (rows - 1) / 2, k, 1.0]))[2])


def plan_series(candidate: SeriesCandidate) -> SeriesPlan:
    """Sort, check and orient a candidate (headers only). Raises InputError/GeometryError."""
    if candidate.rejection is not None:
        raise InputError(candidate.rejection)
    frames = candidate.frames  # already sorted inferior → superior along the normal
    first = frames[0]
    what = f"series {candidate.key or '(no UID)'} ({first.source.name})"
    orientation = first.orientation
    if orientation is None or first.pixel_spacing is None:  # excluded by rejection; keeps mypy honest
        raise GeometryError(f"{what}: orientation or pixel spacing missing")
    row_cos = np.asarray(orientation[:3], dtype=float)
    col_cos = np.asarray(orientation[3:6], dtype=float)
    if abs(np.linalg.norm(row_cos) - 1) > 0.01 or abs(np.linalg.norm(col_cos) - 1) > 0.01 or abs(row_cos @ col_cos) > 0.01:
        raise GeometryError(
            f"{what}: ImageOrientationPatient {list(orientation)} is not two orthogonal unit vectors; "
            "the header is corrupt — re-export the series"
        )
    # Scanners write cosines rounded to a few digits: make them exactly orthonormal.
    row_cos = row_cos / np.linalg.norm(row_cos)
    col_cos = col_cos - (col_cos @ row_cos) * row_cos
    col_cos = col_cos / np.linalg.norm(col_cos)
    normal = np.cross(row_cos, col_cos)
    if normal[2] < 0:
        normal = -normal
    row_mm, col_mm = first.pixel_spacing
    if row_mm <= 0 or col_mm <= 0:
        raise GeometryError(f"{what}: PixelSpacing {first.pixel_spacing} is not positive; the header is corrupt")
    warnings: list[str] = []
    if candidate.grouping_note:
        warnings.append(candidate.grouping_note)
    oblique = check_axial_plane(normal, what)  # same rule as the NIfTI reader
    if oblique:
        warnings.append(oblique)
    positions = np.array([f.position for f in frames], dtype=float)
    if len(frames) == 1:
        if first.slice_thickness and first.slice_thickness > 0:
            spacing = float(first.slice_thickness)
            warnings.append(
                f"single slice: spacing between slices unknown, SliceThickness {spacing:g} mm used"
            )
        else:
            spacing = 1.0
            warnings.append("single slice without SliceThickness: slice spacing set to 1.0 mm (no effect on areas)")
        step = normal * spacing
    else:
        stack = check_stack(positions, normal, (row_mm, col_mm), what)
        step = stack.step_lps
        warnings.extend(stack.warnings)
        if stack.tilt_deg > 0.1:
            warnings.append(f"gantry tilt {stack.tilt_deg:.2f}° below half a pixel across the stack: ignored")
    # Stored array axes: 0 sorted slice, 1 row (steps along the column cosine), 2 column.
    steps = np.stack([step, col_cos * row_mm, row_cos * col_mm])
    shape = (len(frames), first.rows, first.columns)
    mapping = display_mapping(steps, positions[0], shape, what)
    if mapping.axes[0] != 0 or mapping.flips[0]:
        raise GeometryError(
            f"{what}: the slice stack does not run along the body axis (orientation "
            f"{list(orientation)}); not an axial series"
        )
    placement = Placement(
        transpose=mapping.axes[1] == 2, flip_rows=mapping.flips[1], flip_cols=mapping.flips[2]
    )
    stored_affine = np.eye(4)
    stored_affine[:3, 0], stored_affine[:3, 1], stored_affine[:3, 2] = steps[2], steps[1], steps[0]
    stored_affine[:3, 3] = positions[0]
    grid = SourceGrid(shape=shape, affine=stored_affine, axes=mapping.axes, flips=mapping.flips)
    fov = max(first.columns * col_mm, first.rows * row_mm)
    head_part = first.body_part in ("HEAD", "BRAIN", "NECK", "SKULL")
    if fov < MIN_ABDOMEN_FOV_MM or head_part:
        warnings.append(
            f"field of view {fov:.0f} mm"
            + (f", body part {first.body_part}" if head_part else "")
            + ": this looks like a head or small-part scan, not an abdominal one — body composition "
            "at L3 needs an abdominal CT"
        )
    out_dtype = np.dtype(np.int16) if integral_rescale(frames) else np.dtype(np.float32)
    return SeriesPlan(candidate, frames, mapping.affine, grid, placement, out_dtype, tuple(warnings))


def _normalise_indices(indices: Sequence[int] | slice | range | None, n: int, what: str) -> range:
    if indices is None:
        return range(n)
    if isinstance(indices, slice):
        return range(n)[indices]
    values = list(indices) if not isinstance(indices, range) else indices
    if isinstance(values, range):
        picked = values
    else:
        if not values:
            raise InputError(f"{what}: no slice indices requested")
        uniq = sorted(set(int(v) for v in values))
        step = uniq[1] - uniq[0] if len(uniq) > 1 else 1
        picked = range(uniq[0], uniq[-1] + 1, step)
        if list(picked) != uniq:
            raise InputError(
                f"{what}: slice indices {uniq[:8]}… are not evenly spaced; load_series needs a "
                "range (start:stop:step) so the volume keeps one affine"
            )
    if len(picked) == 0 or picked[0] < 0 or picked[-1] >= n or picked.step <= 0:
        raise InputError(
            f"{what}: slice indices {picked.start}…{picked.stop - 1} (step {picked.step}) fall "
            f"outside the series' 0…{n - 1}"
        )
    return picked


def load_series(
    candidate: SeriesCandidate,
    indices: Sequence[int] | slice | range | None = None,
    *,
    workers: int | None = None,
    plan: SeriesPlan | None = None,
    selection_reason: str = "",
    extra_warnings: Sequence[str] = (),
    source_path: str | None = None,
) -> CTVolume:
    """Decode a candidate (or an evenly spaced subset of its slices) into a ``CTVolume``.

    Parameters
    ----------
    indices
        Display-slice indices (sorted stack, inferior → superior) to decode: ``None`` for all,
        a ``slice``/``range`` or an evenly spaced list. The result's slice ``m`` is stack slice
        ``indices[m]`` and its affine places it there; ``source_grid`` is only set for a full load.
    workers
        Decoder processes; ``None`` picks automatically (more than one only for large compressed
        series), 1 decodes in this process.
    source_path
        What to record as ``SeriesInfo.source_path`` (``read_ct`` passes the path the user gave);
        defaults to the first slice's file or archive.
    """
    plan = plan or plan_series(candidate)
    what = f"series {candidate.key or '(no UID)'}"
    picked = _normalise_indices(indices, plan.n_slices, what)
    with truncation_guard(source_path or what):
        return _load(plan, picked, workers, selection_reason, extra_warnings, source_path, stack=False)


def load_slices(
    candidate: SeriesCandidate,
    indices: Sequence[int],
    *,
    workers: int | None = None,
    plan: SeriesPlan | None = None,
    selection_reason: str = "",
    extra_warnings: Sequence[str] = (),
    source_path: str | None = None,
) -> CTVolume:
    """Decode only the stack slices ``indices`` (any set) into a *partial* ``CTVolume``.

    Unlike ``load_series(indices=...)``, which returns a compact volume of its own, the result
    keeps the full stack's bookkeeping (see ``CTVolume.stack_indices``): affine, source grid,
    slice UIDs/files and every index count along the whole sorted series, so outputs (slice
    index, z, ``--labels`` on the full input grid) are identical to a full read's.
    """
    plan = plan or plan_series(candidate)
    what = f"series {candidate.key or '(no UID)'}"
    picked = sorted(set(int(k) for k in indices))
    if not picked:
        raise InputError(f"{what}: no slice indices requested")
    if picked[0] < 0 or picked[-1] >= plan.n_slices:
        bad = picked[0] if picked[0] < 0 else picked[-1]
        raise InputError(
            f"{what}: slice index {bad} is outside the series' 0…{plan.n_slices - 1} "
            "(sorted inferior → superior)"
        )
    with truncation_guard(source_path or what):
        if len(picked) == plan.n_slices:
            return _load(plan, range(plan.n_slices), workers, selection_reason, extra_warnings,
                         source_path, stack=False)
        return _load(plan, picked, workers, selection_reason, extra_warnings, source_path, stack=True)


def _load(
    plan: SeriesPlan,
    picked: Sequence[int],
    workers: int | None,
    selection_reason: str,
    extra_warnings: Sequence[str],
    source_path: str | None,
    *,
    stack: bool,
) -> CTVolume:
    candidate = plan.candidate
    what = f"series {candidate.key or '(no UID)'}"
    frames = [plan.frames[k] for k in picked]
    _, rows, cols = plan.shape
    out = np.empty((len(picked), rows, cols), dtype=plan.out_dtype)
    if workers is None:
        workers = auto_workers(frames)
    stats = decode_into(out, list(enumerate(frames)), plan.placement, workers=workers)
    warnings = list(extra_warnings) + list(plan.warnings)
    n_pixels = sum(s.n_pixels for s in stats) or 1
    n_pad = sum(s.n_padding for s in stats)
    inferred = [s for s in stats if s.n_inferred]
    if inferred:
        values = sorted({s.inferred_value_hu for s in inferred if s.inferred_value_hu is not None})
        warnings.append(
            f"{len(inferred)} slice(s) hold values near {', '.join(f'{v:g}' for v in values)} HU, far "
            "below air, not marked exactly by a PixelPaddingValue: treated as padding outside the "
            "reconstruction circle and set to air "
            f"({100 * sum(s.n_inferred for s in inferred) / n_pixels:.1f}% of pixels)"
        )
    clipped = sum(s.n_clipped for s in stats)
    if clipped:
        warnings.append(f"{clipped} pixel(s) beyond the int16 HU range were clipped (metal?)")
    full = not stack and picked == range(plan.n_slices)
    if stack:
        affine = plan.affine.copy()
    else:
        if not isinstance(picked, range):  # load_series normalises to a range
            raise TypeError(f"compact loads need a range of slices, got {type(picked).__name__}")
        affine = plan.affine.copy()
        affine[:3, 3] = plan.affine[:3, 3] + plan.affine[:3, 2] * picked.start
        affine[:3, 2] = plan.affine[:3, 2] * picked.step
        if not full:
            warnings.append(
                f"partial load: stack slices {picked.start}…{picked[-1]} step {picked.step} of {plan.n_slices}"
            )
    first = plan.frames[0]
    patient, patient_warnings = parse_patient(first.patient)
    warnings.extend(patient_warnings)
    if any(f.uid_from_file_meta for f in (plan.frames if stack else frames)):
        warnings.append("SOPInstanceUID empty in the data set: taken from the file meta (MediaStorageSOPInstanceUID)")
    for w in warnings:
        logger.info("%s: %s", what, w)
    info = SeriesInfo(
        source_path=source_path if source_path is not None else str(first.source.path),
        format="dicom",
        study_uid=first.study_uid,
        series_uid=first.series_uid,
        frame_of_reference_uid=first.frame_of_reference_uid,
        modality=first.modality,
        series_description=first.series_description,
        manufacturer=first.manufacturer,
        kernel=first.kernel,
        slice_thickness_mm=first.slice_thickness,
        selection_reason=selection_reason,
        warnings=tuple(dict.fromkeys(warnings)),
    )
    return CTVolume(
        hu=out,
        affine=affine,
        series=info,
        patient=patient,
        source_grid=plan.source_grid if (full or stack) else None,
        slice_uids=tuple(f.sop_uid for f in (plan.frames if stack else frames)),
        slice_files=tuple(f.source.name for f in (plan.frames if stack else frames)),
        padding_fraction=n_pad / n_pixels,
        stack_indices=tuple(picked) if stack else (),
        stack_size=plan.n_slices if stack else 0,
    )


@dataclass(frozen=True, eq=False)
class OpenedSeries:
    """A selected, planned DICOM series whose pixels are not decoded yet.

    What a stage that reads only what it needs holds: z of every slice (``plan.z_mm``) from the
    headers, then ``load(indices)`` for the slices it wants, with the selection reason and the
    discovery warnings carried into every ``CTVolume`` it returns.
    """

    path: Path
    candidate: SeriesCandidate
    plan: SeriesPlan
    reason: str
    warnings: tuple[str, ...]

    @property
    def n_slices(self) -> int:
        return self.plan.n_slices

    def _context(self) -> dict:
        """What every volume decoded from this series carries (plan, reason, warnings, path)."""
        return {"plan": self.plan, "selection_reason": self.reason, "extra_warnings": self.warnings,
                "source_path": str(self.path)}

    def load_slices(self, indices: Sequence[int], *, workers: int | None = None) -> CTVolume:
        """Decode only ``indices`` into a partial volume that keeps full-stack indices."""
        return load_slices(self.candidate, indices, workers=workers, **self._context())

    def load(self, indices: Sequence[int] | slice | range | None = None, *, workers: int | None = None) -> CTVolume:
        return load_series(self.candidate, indices, workers=workers, **self._context())


def open_dicom(path: Path, series_uid: str | None = None) -> OpenedSeries:
    """Headers only: discover, select and plan the series to measure (no pixel decoding)."""
    path = Path(path)
    with truncation_guard(path):
        found = discover(path)
    candidate, reason = select_series(list(found.candidates), series_uid, source=str(path))
    logger.info("%s: %s — %s", path, candidate.describe(), reason)
    return OpenedSeries(path, candidate, plan_series(candidate), reason, found.warnings)


def read_dicom(path: Path, series_uid: str | None = None, *, workers: int | None = None) -> CTVolume:
    """Discover, select and fully load the best axial CT series under ``path``."""
    return open_dicom(path, series_uid).load(workers=workers)
