"""Typed objects that flow between the pipeline stages (read → locate → segment → measure → export).

Numpy only; nothing of ours is imported here. Every object is valid once constructed: the
constructor checks its invariants and raises ``ValueError`` naming the offending value.

Geometry convention (one, converted at the readers):

* ``CTVolume.hu`` is indexed ``hu[k, j, i]`` = ``[slice, row, column]``.
* The array is stored in *display orientation*: slices run inferior → superior (k), rows run
  anterior → posterior (j), columns run from the patient's right to the patient's left (i).
  ``hu[k]`` is therefore already an axial image in radiological convention (anterior up,
  patient's right on the image left). Readers flip/permute to reach this.
* ``CTVolume.affine`` maps ``(i, j, k, 1)`` (column, row, slice — note the order) to patient
  coordinates in millimetres, DICOM LPS (x → patient left, y → posterior, z → superior).
* ``SourceGrid`` remembers how the stored file was laid out, so outputs (label NIfTI, slice
  indices the user typed) can be mapped back onto the input's own voxel grid.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Sex = Literal["M", "F"]


def _check_affine(affine: np.ndarray, name: str) -> None:
    if affine.shape != (4, 4):
        raise ValueError(f"{name} must be 4x4, got shape {affine.shape}")
    if not np.all(np.isfinite(affine)):
        raise ValueError(f"{name} contains non-finite values: {affine.tolist()}")
    if not np.allclose(affine[3], [0, 0, 0, 1]):
        raise ValueError(f"{name} last row must be [0, 0, 0, 1], got {affine[3].tolist()}")
    cols = affine[:3, :3]
    norms = np.linalg.norm(cols, axis=0)
    if np.any(norms <= 0):
        raise ValueError(f"{name} has a zero-length axis (spacing {norms.tolist()})")
    unit = cols / norms
    gram = unit.T @ unit
    if not np.allclose(gram, np.eye(3), atol=1e-3):
        raise ValueError(
            f"{name} axes are not orthogonal (direction cosines {unit.T.round(4).tolist()}); "
            "sheared grids (gantry tilt) must be resampled or refused by the reader"
        )


@dataclass(frozen=True)
class PatientInfo:
    """What the input carried about the patient that body composition needs. No names or IDs."""

    sex: Sex | None = None
    height_m: float | None = None
    weight_kg: float | None = None
    age_years: float | None = None

    def __post_init__(self) -> None:
        if self.sex not in (None, "M", "F"):
            raise ValueError(f"sex must be 'M', 'F' or None, got {self.sex!r}")
        if self.height_m is not None and not (0.5 <= self.height_m <= 2.6):
            raise ValueError(f"height_m {self.height_m} is outside 0.5–2.6 m")
        if self.weight_kg is not None and not (2.0 <= self.weight_kg <= 400.0):
            raise ValueError(f"weight_kg {self.weight_kg} is outside 2–400 kg")
        if self.age_years is not None and not (0 <= self.age_years <= 130):
            raise ValueError(f"age_years {self.age_years} is outside 0–130")

    @property
    def bmi(self) -> float | None:
        """Body-mass index in kg/m² when both height and weight are known."""
        if self.height_m is None or self.weight_kg is None:
            return None
        return self.weight_kg / (self.height_m**2)


@dataclass(frozen=True)
class SeriesInfo:
    """Where the pixels came from: identifiers to reference in outputs, and why this series."""

    source_path: str
    format: Literal["dicom", "nifti", "phantom"]
    study_uid: str = ""
    series_uid: str = ""
    frame_of_reference_uid: str = ""
    modality: str = "CT"
    series_description: str = ""
    manufacturer: str = ""
    kernel: str = ""
    slice_thickness_mm: float | None = None
    selection_reason: str = ""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceGrid:
    """How the input file stored its voxels, relative to the display-oriented array.

    ``axes[d]`` is the stored axis that display axis ``d`` (0=k slice, 1=j row, 2=i column)
    came from, and ``flips[d]`` says whether it was reversed. ``shape`` and ``affine`` are the
    stored array's shape and its native affine (NIfTI: RAS as in the file; DICOM: LPS over
    (column, row, sorted slice)).
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    axes: tuple[int, int, int] = (0, 1, 2)
    flips: tuple[bool, bool, bool] = (False, False, False)

    def __post_init__(self) -> None:
        if sorted(self.axes) != [0, 1, 2]:
            raise ValueError(f"axes must be a permutation of (0, 1, 2), got {self.axes}")
        _check_affine(np.asarray(self.affine, dtype=float), "SourceGrid.affine")

    def to_source(self, display: np.ndarray) -> np.ndarray:
        """Map a display-oriented (k, j, i) array back onto the stored voxel order."""
        arr = display
        for d, flip in enumerate(self.flips):
            if flip:
                arr = np.flip(arr, axis=d)
        # display axis d holds stored axis axes[d]; invert the permutation.
        inverse = np.argsort(self.axes)
        return np.ascontiguousarray(np.transpose(arr, inverse))


@dataclass(frozen=True, eq=False)
class CTVolume:
    """A CT series in Hounsfield units, display-oriented, with its geometry.

    ``hu`` is int16 or float32 (k, j, i). Pixel padding (PixelPaddingValue, outside the
    reconstruction circle) has already been replaced by ``AIR_HU`` by the reader, so it can
    never be counted as tissue; ``padding_fraction`` records how much was replaced.
    ``slice_uids[k]`` is the SOPInstanceUID of display slice ``k`` ("" when unknown) and
    ``slice_files[k]`` the file it came from ("" for NIfTI and phantoms).

    **Partial reads.** When ``stack_indices`` is non-empty only those slices of a stack of
    ``stack_size`` slices were decoded (e.g. ``--slices K`` on a 300-file series): ``hu[m]``
    is stack slice ``stack_indices[m]``. Every *index* of such a volume still counts along the
    full stack — ``n_slices``, ``shape``, ``z_mm(k)``, ``slice_hu(k)``, the affine's third
    axis, ``slice_uids``/``slice_files`` (one per stack slice), ``source_grid`` and the indices
    in ``SliceChoice``/``LabelMap`` — so outputs report the same numbers as after a full read.
    Only ``hu`` is short; code that walks ``hu`` itself (the L3 finder) needs a full volume
    (``is_partial`` False).
    """

    hu: np.ndarray
    affine: np.ndarray
    series: SeriesInfo
    patient: PatientInfo = field(default_factory=PatientInfo)
    source_grid: SourceGrid | None = None
    slice_uids: tuple[str, ...] = ()
    slice_files: tuple[str, ...] = ()
    padding_fraction: float = 0.0
    stack_indices: tuple[int, ...] = ()
    stack_size: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.hu, np.ndarray) or self.hu.ndim != 3:
            shape = getattr(self.hu, "shape", None)
            raise ValueError(f"CTVolume.hu must be a 3-D array (slice, row, column), got {shape}")
        if self.hu.dtype not in (np.int16, np.float32):
            raise ValueError(f"CTVolume.hu must be int16 or float32, got {self.hu.dtype}")
        if min(self.hu.shape) < 1:
            raise ValueError(f"CTVolume.hu is empty: shape {self.hu.shape}")
        affine = np.asarray(self.affine, dtype=float)
        _check_affine(affine, "CTVolume.affine")
        object.__setattr__(self, "affine", affine)
        n = self.hu.shape[0]
        if self.stack_indices:
            idx = tuple(int(k) for k in self.stack_indices)
            object.__setattr__(self, "stack_indices", idx)
            if len(idx) != n:
                raise ValueError(f"stack_indices has {len(idx)} entries for {n} decoded slices")
            if self.stack_size < 1:
                raise ValueError(f"stack_size must be >= 1 for a partial volume, got {self.stack_size}")
            if idx[0] < 0 or idx[-1] >= self.stack_size:
                raise ValueError(f"stack_indices {idx[0]}…{idx[-1]} fall outside 0…{self.stack_size - 1}")
            if any(b <= a for a, b in zip(idx, idx[1:])):
                raise ValueError(f"stack_indices must be strictly increasing, got {idx[:8]}")
            n = self.stack_size
        elif self.stack_size not in (0, n):
            raise ValueError(
                f"stack_size {self.stack_size} given for a full volume of {n} slices "
                "(a partial volume needs stack_indices)"
            )
        if self.slice_uids and len(self.slice_uids) != n:
            raise ValueError(f"slice_uids has {len(self.slice_uids)} entries for {n} slices")
        if self.slice_files and len(self.slice_files) != n:
            raise ValueError(f"slice_files has {len(self.slice_files)} entries for {n} slices")

    @property
    def is_partial(self) -> bool:
        """True when only some slices of the stack were decoded (see ``stack_indices``)."""
        return bool(self.stack_indices)

    @property
    def n_slices(self) -> int:
        """Slices in the (full) stack; for a partial volume more than ``hu`` holds."""
        return int(self.stack_size) if self.stack_indices else int(self.hu.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(slice, row, column) shape of the full stack (``hu.shape`` unless partial)."""
        return (self.n_slices, int(self.hu.shape[1]), int(self.hu.shape[2]))

    def loaded_position(self, k: int) -> int | None:
        """Position in ``hu`` of stack slice ``k``, or None when it was not decoded."""
        if not self.stack_indices:
            return int(k) if 0 <= k < self.hu.shape[0] else None
        m = bisect.bisect_left(self.stack_indices, int(k))
        return m if m < len(self.stack_indices) and self.stack_indices[m] == k else None

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """(slice, row, column) spacing in mm, matching the array's axis order."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)  # (i, j, k)
        return (float(norms[2]), float(norms[1]), float(norms[0]))

    @property
    def pixel_spacing_mm(self) -> tuple[float, float]:
        """(row, column) in-plane spacing in mm."""
        s = self.spacing_mm
        return (s[1], s[2])

    def z_mm(self, k: float) -> float:
        """Patient superior coordinate (LPS z) of the centre of display slice ``k``."""
        centre = self.affine @ np.array(
            [(self.hu.shape[2] - 1) / 2, (self.hu.shape[1] - 1) / 2, k, 1.0]
        )
        return float(centre[2])

    def slice_hu(self, k: int) -> np.ndarray:
        """One axial slice as float32 HU, display-oriented."""
        if not 0 <= k < self.n_slices:
            raise IndexError(f"slice {k} is outside 0..{self.n_slices - 1}")
        m = self.loaded_position(k)
        if m is None:
            raise IndexError(
                f"slice {k} was not decoded in this partial read (decoded: "
                f"{list(self.stack_indices[:8])}{'…' if len(self.stack_indices) > 8 else ''})"
            )
        return np.asarray(self.hu[m], dtype=np.float32)


@dataclass(frozen=True)
class VertebraLevel:
    """One vertebra the locator identified: its name (``"L3"``) and body extent in z."""

    name: str
    z_mm: float
    z_top_mm: float | None = None
    z_bottom_mm: float | None = None


@dataclass(frozen=True)
class SliceChoice:
    """Which display slice(s) to analyse and how they were chosen.

    ``indices`` are display-slice indices (k). ``method`` is ``"auto"`` (L3 finder),
    ``"manual"`` (user ``--slices``) or ``"single"`` (the input had one slice).
    ``definition`` names the landmark (``"mid-L3"``, ``"L3-inferior-endplate"`` …).
    """

    indices: tuple[int, ...]
    z_mm: tuple[float, ...]
    method: Literal["auto", "manual", "single"]
    definition: str = ""
    confidence: float | None = None
    vertebrae: tuple[VertebraLevel, ...] = ()
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.indices:
            raise ValueError("SliceChoice needs at least one slice index")
        if len(self.indices) != len(self.z_mm):
            raise ValueError(
                f"SliceChoice has {len(self.indices)} indices but {len(self.z_mm)} z values"
            )
        if any(i < 0 for i in self.indices):
            raise ValueError(f"slice indices must be >= 0, got {self.indices}")
        if self.confidence is not None and not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be within 0..1, got {self.confidence}")


@dataclass(frozen=True, eq=False)
class LabelMap:
    """Tissue labels of one display slice: 0 background, 1 muscle, 2 IMAT, 3 VAT, 4 SAT."""

    labels: np.ndarray
    slice_index: int
    pixel_spacing_mm: tuple[float, float]

    def __post_init__(self) -> None:
        if not isinstance(self.labels, np.ndarray) or self.labels.ndim != 2:
            raise ValueError(f"LabelMap.labels must be 2-D, got {getattr(self.labels, 'shape', None)}")
        if self.labels.dtype != np.uint8:
            raise ValueError(f"LabelMap.labels must be uint8, got {self.labels.dtype}")
        if self.labels.size and int(self.labels.max()) > 4:
            raise ValueError(f"LabelMap.labels holds value {int(self.labels.max())}; allowed 0..4")
        if any((not math.isfinite(s)) or s <= 0 for s in self.pixel_spacing_mm):
            raise ValueError(f"pixel_spacing_mm must be positive, got {self.pixel_spacing_mm}")

    @property
    def pixel_area_cm2(self) -> float:
        return self.pixel_spacing_mm[0] * self.pixel_spacing_mm[1] / 100.0


@dataclass(frozen=True)
class TissueMeasurement:
    """Area and attenuation of one tissue class. ``mean_hu`` is NaN when the class is absent."""

    area_cm2: float
    mean_hu: float
    sd_hu: float
    n_pixels: int


@dataclass(frozen=True)
class Flag:
    """A published cut-off applied to this patient: e.g. sarcopenia by Prado 2008."""

    name: str  # "sarcopenia" | "myosteatosis"
    reference: str  # key into references.REFERENCES
    value: float
    threshold: float
    unit: str
    positive: bool


@dataclass(frozen=True)
class Measurements:
    """Everything measured on one analysed slice."""

    slice_index: int
    z_mm: float
    tissues: dict[str, TissueMeasurement]  # keys: Tissue.key ("muscle", "imat", "vat", "sat")
    muscle_low_attenuation_cm2: float  # muscle pixels −29…+29 HU
    muscle_normal_attenuation_cm2: float  # muscle pixels +30…+150 HU
    smi_cm2_m2: float | None = None  # skeletal muscle index, when height is known
    vat_sat_ratio: float | None = None
    flags: tuple[Flag, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class SegmenterInfo:
    """Which segmenter produced the labels: goes into every result and DICOM output."""

    name: str
    version: str
    sha256: str | None = None
    #: Steps applied after the network, in words (the same model file labels differently
    #: without them); empty for segmenters that declare none.
    post_steps: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class AnalysisResult:
    """The whole outcome of ``pipeline.analyze``: what every exporter (JSON, CSV, NIfTI, SEG,
    SR, key image) and the PACS side consume. One ``LabelMap`` and one ``Measurements`` per
    analysed slice, in the order of ``choice.indices``.
    """

    volume: CTVolume
    choice: SliceChoice
    label_maps: tuple[LabelMap, ...]
    measurements: tuple[Measurements, ...]
    segmenter: SegmenterInfo
    reference: str  # key of the cut-off reference used (references.REFERENCES)
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    #: When ``volume`` is a partial read (``volume.is_partial``): the evenly strided volume of
    #: the whole series the L3 finder worked on, for pictures of the whole spine (spine.png).
    #: Its own slice numbering; ``choice`` counts along the full stack like ``volume``.
    overview: CTVolume | None = None

    def __post_init__(self) -> None:
        n = len(self.choice.indices)
        if len(self.label_maps) != n or len(self.measurements) != n:
            raise ValueError(
                f"AnalysisResult needs one label map and one measurement per slice: {n} slices, "
                f"{len(self.label_maps)} label maps, {len(self.measurements)} measurements"
            )
