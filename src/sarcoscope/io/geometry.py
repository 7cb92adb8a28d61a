"""Pure geometry shared by the DICOM and NIfTI readers: stored grid → display orientation.

The display convention (see ``types.py``): ``hu[k, j, i]`` with k inferior→superior,
j anterior→posterior, i patient right→left, affine over ``(i, j, k)`` in LPS mm.

A stored array has three axes, each stepping along a vector in LPS millimetres. Each display
axis takes the stored axis whose step points mostly along its LPS direction (k: +z, j: +y,
i: +x), reversed when it points the other way. Orientations that are not close to
axis-aligned are therefore still handled (the affine keeps the true direction cosines);
only a grid where two stored axes share the same dominant LPS direction (a ~45° oblique)
cannot be assigned and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sarcoscope.errors import GeometryError

#: LPS component that display axis d (0 = k, 1 = j, 2 = i) must point along.
_DISPLAY_LPS_COMPONENT = (2, 1, 0)


@dataclass(frozen=True)
class DisplayMapping:
    """How to turn a stored array into the display-oriented one.

    ``axes[d]`` is the stored array axis that display axis ``d`` comes from and ``flips[d]``
    whether it is reversed (same meaning as ``types.SourceGrid``). ``affine`` is the display
    affine over ``(i, j, k, 1)``.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    affine: np.ndarray


def display_mapping(
    step_vectors_lps: np.ndarray, origin_lps: np.ndarray, shape: tuple[int, int, int], what: str
) -> DisplayMapping:
    """Work out the permutation/flips and display affine of a stored grid.

    Parameters
    ----------
    step_vectors_lps
        (3, 3) array; row ``a`` is the LPS step (mm) of one voxel along stored array axis ``a``.
    origin_lps
        LPS position of stored voxel (0, 0, 0).
    shape
        Stored array shape.
    what
        Name of the input, for error messages.
    """
    steps = np.asarray(step_vectors_lps, dtype=float)
    norms = np.linalg.norm(steps, axis=1)
    if np.any(norms <= 0) or not np.all(np.isfinite(steps)):
        raise GeometryError(
            f"{what}: voxel spacing is zero or undefined (steps {steps.round(4).tolist()} mm); "
            "the geometry in the header is broken — re-export the series from the scanner/PACS"
        )
    unit = steps / norms[:, None]
    gram = unit @ unit.T
    if not np.allclose(gram, np.eye(3), atol=1e-3):
        raise GeometryError(
            f"{what}: the voxel axes are not orthogonal (direction cosines {unit.round(4).tolist()}): "
            "a sheared grid, typically from gantry tilt; resample it to an orthogonal grid first"
        )
    dominant = np.argmax(np.abs(unit), axis=1)  # LPS component of each stored axis
    if sorted(dominant.tolist()) != [0, 1, 2]:
        raise GeometryError(
            f"{what}: the voxel axes are too oblique to tell which is axial "
            f"(direction cosines {unit.round(3).tolist()}); resample to an axis-aligned grid first"
        )
    axes: list[int] = []
    flips: list[bool] = []
    for comp in _DISPLAY_LPS_COMPONENT:
        a = int(np.where(dominant == comp)[0][0])
        axes.append(a)
        flips.append(bool(unit[a, comp] < 0))
    origin = np.asarray(origin_lps, dtype=float).copy()
    cols = []
    for d in (2, 1, 0):  # affine columns are (i, j, k) = display axes 2, 1, 0
        a = axes[d]
        if flips[d]:
            cols.append(-steps[a])
        else:
            cols.append(steps[a])
    for d in range(3):
        if flips[d]:
            origin = origin + steps[axes[d]] * (shape[axes[d]] - 1)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = cols
    affine[:3, 3] = origin
    return DisplayMapping(tuple(axes), tuple(flips), affine)  # type: ignore[arg-type]


def to_display(stored: np.ndarray, mapping: DisplayMapping) -> np.ndarray:
    """Permute and flip a stored array into display order (a view when possible)."""
    arr = np.transpose(stored, mapping.axes)
    index = tuple(slice(None, None, -1) if f else slice(None) for f in mapping.flips)
    return arr[index]


def slice_normal(orientation: tuple[float, ...]) -> np.ndarray:
    """Unit normal of an image plane from ImageOrientationPatient (row cosine × column cosine)."""
    row = np.asarray(orientation[:3], dtype=float)
    col = np.asarray(orientation[3:6], dtype=float)
    n = np.cross(row, col)
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else n


#: |cos| between the slice normal and the body axis below which a plane is not axial (~37°).
AXIAL_MIN_COS = 0.8
#: Tilt from axial (degrees) above which the readers warn that areas are measured obliquely
#: (5° enlarges the cross-section of a structure running along the body by 0.4 %).
OBLIQUE_WARN_DEG = 5.0


def is_axial(orientation: tuple[float, ...], min_cos: float = AXIAL_MIN_COS) -> bool:
    """True when the image plane is within ~37° of axial (its normal close to the z axis)."""
    return abs(float(slice_normal(orientation)[2])) >= min_cos


def tilt_from_axial_deg(normal: np.ndarray) -> float:
    """Angle (degrees) between a slice normal and the body (z) axis; 0 for a true axial plane."""
    n = np.asarray(normal, dtype=float)
    norm = float(np.linalg.norm(n))
    if norm == 0:
        return 90.0
    return float(np.degrees(np.arccos(min(1.0, abs(float(n[2])) / norm))))


def plane_name(orientation: tuple[float, ...]) -> str:
    """'axial', 'coronal' or 'sagittal' from the dominant component of the plane normal.

    A plane whose normal is mostly along z but too far from it to count as axial
    (``is_axial``) is named 'oblique, N° from axial'.
    """
    normal = slice_normal(orientation)
    name = ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]
    if name == "axial" and not is_axial(orientation):
        return f"oblique, {tilt_from_axial_deg(normal):.0f}° from axial"
    return name


def check_axial_plane(normal: np.ndarray, what: str) -> str | None:
    """The one rule for how far slices may lean from axial, shared by the DICOM and NIfTI readers.

    Refuses (``GeometryError``) a plane more than ~37° from axial (``AXIAL_MIN_COS``, the
    DICOM series rule ``is_axial``); returns a warning for a plane more than
    ``OBLIQUE_WARN_DEG`` from axial, since areas are then measured across a tilted cut
    (larger than the true axial cross-section by about 1/cos(angle)) and the slice chosen
    as L3 cuts the vertebra obliquely; ``None`` otherwise.
    """
    angle = tilt_from_axial_deg(normal)
    if angle > float(np.degrees(np.arccos(AXIAL_MIN_COS))):
        raise GeometryError(
            f"{what}: the slices are oblique, angled {angle:.0f}° from axial; body composition is "
            "measured on axial slices — reformat the scan to axial slices first"
        )
    if angle > OBLIQUE_WARN_DEG:
        excess = 100.0 * (1.0 / np.cos(np.radians(angle)) - 1.0)
        return (
            f"the slices are oblique, angled {angle:.1f}° from axial: areas are measured across the "
            f"oblique plane (up to about {excess:.0f}% larger than on true axial slices) — reformat "
            "to axial slices for exact areas"
        )
    return None


@dataclass(frozen=True)
class StackSpacing:
    """Result of checking the positions of a sorted stack of parallel slices."""

    step_lps: np.ndarray  # mean step between consecutive slices (LPS mm)
    spacing_mm: float  # mean distance between slices along the normal
    min_gap_mm: float
    max_gap_mm: float
    tilt_deg: float
    warnings: tuple[str, ...]


def check_stack(
    positions_lps: np.ndarray,
    normal: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    what: str,
    *,
    max_uneven_ratio: float = 1.5,
) -> StackSpacing:
    """Check that sorted slice positions form a regular, untilted stack.

    Positions must already be sorted by their distance along ``normal``. Refuses (with a
    ``GeometryError``) duplicate positions, gaps larger than ``max_uneven_ratio`` × the median
    gap (missing slices) and gantry tilt that shifts the stack in-plane by more than half a
    pixel; reports smaller unevenness as a warning. Gantry tilt is refused rather than
    resampled: resampling would invent pixels, and tilted abdominal CT is rare.
    """
    pos = np.asarray(positions_lps, dtype=float)
    n = pos.shape[0]
    if n < 2:
        raise ValueError("check_stack needs at least two slices")
    along = pos @ normal
    gaps = np.diff(along)
    median = float(np.median(gaps))
    if median <= 1e-3 or np.any(gaps <= 1e-3):
        dup = int(np.sum(gaps <= 1e-3))
        raise GeometryError(
            f"{what}: {dup} pair(s) of slices share the same position along the slice normal; "
            "the series mixes several acquisitions or repeats slices — pick one series/acquisition "
            "(e.g. --series UID) or remove the duplicates"
        )
    warnings: list[str] = []
    gmin, gmax = float(gaps.min()), float(gaps.max())
    if gmax > max_uneven_ratio * median:
        worst = int(np.argmax(gaps))
        raise GeometryError(
            f"{what}: missing slices — a gap of {gmax:.2f} mm between slices {worst} and "
            f"{worst + 1} where the spacing is otherwise {median:.2f} mm; the series is "
            "incomplete: re-send or re-export the whole series"
        )
    if gmax - gmin > max(0.01 * median, 0.02):
        spread = float(np.max(np.abs((along - along[0]) - median * np.arange(n))))
        warnings.append(
            f"uneven slice spacing: {gmin:.3f}–{gmax:.3f} mm (mean {np.mean(gaps):.3f} mm); "
            f"slice positions deviate from a regular grid by up to {spread:.2f} mm"
        )
    step = (pos[-1] - pos[0]) / (n - 1)
    # Gantry tilt: the step between slices is not along the plane normal.
    offset = step - (step @ normal) * normal
    shift_total_mm = float(np.linalg.norm(offset)) * (n - 1)
    tilt_deg = float(np.degrees(np.arctan2(np.linalg.norm(offset), abs(step @ normal))))
    if shift_total_mm > 0.5 * min(pixel_spacing_mm):
        raise GeometryError(
            f"{what}: gantry tilt of {tilt_deg:.1f}° (slice positions move {shift_total_mm:.1f} mm "
            "sideways across the stack instead of along the slice normal); sarcoscope refuses "
            "tilted series rather than resampling them — reconstruct without tilt or use a "
            "tilt-corrected export"
        )
    # Keep an orthogonal grid: the step is the normal times the mean spacing.
    spacing = float(step @ normal)
    return StackSpacing(
        step_lps=normal * spacing,
        spacing_mm=spacing,
        min_gap_mm=gmin,
        max_gap_mm=gmax,
        tilt_deg=tilt_deg,
        warnings=tuple(warnings),
    )
