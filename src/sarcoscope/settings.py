"""What the user asked ``analyze`` to do: one frozen object instead of a long signature.

The slice SPEC grammar (``--slices``) lives here too, because it is the one option whose meaning
depends on the input: indices count along the *stored* third voxel axis of a NIfTI file and along
the sorted inferior→superior stack of a DICOM series. Parsing (syntax) happens when the settings
are built; resolving (range, NIfTI → display index) needs the volume and happens in the pipeline.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sarcoscope.errors import ConfigError, InputError
from sarcoscope.types import CTVolume, PatientInfo, Sex

SegmenterName = Literal["baseline", "model"]
SEGMENTER_NAMES: tuple[str, ...] = ("baseline", "model")

_INT = r"\d+"
_LIST_RE = re.compile(rf"^{_INT}(,{_INT})*$")
_RANGE_RE = re.compile(rf"^({_INT}):({_INT})$")


@dataclass(frozen=True)
class SliceSpec:
    """A parsed ``--slices`` value.

    ``kind`` is ``"all"``, ``"list"`` (``K`` or ``K1,K2,…``) or ``"range"`` (``A:B``, both ends
    included, ``A <= B``). Indices are in the input's own numbering (see module docstring).
    """

    text: str
    kind: Literal["all", "list", "range"]
    indices: tuple[int, ...] = ()
    start: int = 0
    stop: int = 0  # inclusive

    def input_indices(self, n: int) -> tuple[int, ...]:
        """The requested indices in input numbering, checked against ``n`` slices."""
        if self.kind == "all":
            return tuple(range(n))
        if self.kind == "range" and self.stop >= n:  # checked before building the range
            bad = [max(self.start, n)]
        else:
            wanted = self.indices if self.kind == "list" else tuple(range(self.start, self.stop + 1))
            bad = [k for k in wanted if k >= n]
        if bad:
            raise InputError(
                f"--slices {self.text}: slice index {bad[0]} is out of range; the input has "
                f"{n} slice(s), numbered 0..{n - 1}. Choose indices within that range."
            )
        return wanted


def parse_slice_spec(text: str) -> SliceSpec:
    """Parse ``K``, ``K1,K2``, ``A:B`` (inclusive) or ``all``; raise ``ConfigError`` otherwise."""
    raw = text
    text = text.strip().replace(" ", "")
    if text.lower() == "all":
        return SliceSpec(text=raw, kind="all")
    if _LIST_RE.match(text):
        values = tuple(int(v) for v in text.split(","))
        # Keep the user's order but drop repeats: analysing a slice twice adds nothing.
        unique = tuple(dict.fromkeys(values))
        return SliceSpec(text=raw, kind="list", indices=unique)
    m = _RANGE_RE.match(text)
    if m:
        start, stop = int(m.group(1)), int(m.group(2))
        if start > stop:
            raise ConfigError(
                f"--slices {raw!r}: range start {start} is after its end {stop}; "
                "write A:B with A <= B (both ends are included)."
            )
        return SliceSpec(text=raw, kind="range", start=start, stop=stop)
    raise ConfigError(
        f"--slices {raw!r} is not a valid slice specification. Use an index (120), a list "
        "(118,120,122), an inclusive range (115:125) or 'all'; indices are zero-based and "
        "non-negative."
    )


@dataclass(frozen=True)
class AnalysisSettings:
    """Options of one analysis. ``None`` means "take it from the input / use the default".

    Attributes
    ----------
    slices
        ``--slices`` SPEC text; ``None`` finds L3 automatically (or takes the only slice).
    series_uid
        Force this SeriesInstanceUID when the input holds several series.
    sex, height_cm, weight_kg
        Override what the DICOM header says (or supply what it lacks).
    reference
        Key of ``references.REFERENCES``; ``None`` → ``references.DEFAULT_REFERENCE``.
    segmenter
        ``"baseline"`` or ``"model"``; ``None`` → the trained model when its ONNX file exists,
        else the baseline (the result always names the one used, with a warning for the
        fallback). ``model_path`` implies ``"model"``.
    l3_definition, average_mm
        Passed to ``locate.LocateSettings`` (which landmark, and averaging ±N mm around it).
    labels_path
        Where the CLI writes the label NIfTI (``--labels``); the pipeline does not write files.
    """

    slices: str | None = None
    series_uid: str | None = None
    sex: Sex | None = None
    height_cm: float | None = None
    weight_kg: float | None = None
    reference: str | None = None
    segmenter: SegmenterName | None = None
    model_path: Path | None = None
    l3_definition: str | None = None
    average_mm: float = 0.0
    labels_path: Path | None = None

    def __post_init__(self) -> None:
        if self.slices is not None:
            parse_slice_spec(self.slices)  # fail early, with the option's name
        if self.sex is not None:
            sex = str(self.sex).strip().upper()
            if sex not in ("M", "F"):
                raise ConfigError(f"--sex {self.sex!r}: use M or F.")
            object.__setattr__(self, "sex", sex)
        if self.height_cm is not None and not (
            math.isfinite(self.height_cm) and 50.0 <= self.height_cm <= 260.0
        ):
            raise ConfigError(
                f"--height-cm {self.height_cm}: expected the patient's height in centimetres "
                "(50–260)."
            )
        if self.weight_kg is not None and not (
            math.isfinite(self.weight_kg) and 2.0 <= self.weight_kg <= 400.0
        ):
            raise ConfigError(
                f"--weight-kg {self.weight_kg}: expected the patient's weight in kilograms (2–400)."
            )
        if self.segmenter is not None and self.segmenter not in SEGMENTER_NAMES:
            raise ConfigError(
                f"--segmenter {self.segmenter!r}: choose one of {', '.join(SEGMENTER_NAMES)}."
            )
        if self.model_path is not None and self.segmenter == "baseline":
            raise ConfigError(
                "--model was given together with --segmenter baseline; the baseline uses no "
                "model file. Drop one of the two options."
            )
        if not (math.isfinite(self.average_mm) and 0.0 <= self.average_mm <= 50.0):
            raise ConfigError(
                f"--average-mm {self.average_mm}: expected a half-width in mm between 0 and 50."
            )
        if self.l3_definition is not None:
            from sarcoscope.locate.settings import DEFINITIONS

            if self.l3_definition not in DEFINITIONS:
                raise ConfigError(
                    f"--l3-definition {self.l3_definition!r}: choose one of "
                    f"{', '.join(DEFINITIONS)}."
                )
        if self.slices is not None and (self.l3_definition is not None or self.average_mm):
            raise ConfigError(
                "--l3-definition and --average-mm apply to the automatic L3 finder; they "
                "cannot be combined with --slices, which names the slices itself. Drop one."
            )
        if self.reference is not None:
            from sarcoscope.references import REFERENCES

            if self.reference not in REFERENCES:
                known = ", ".join(sorted(REFERENCES))
                raise ConfigError(
                    f"--reference {self.reference!r} is not a known cut-off reference; choose "
                    f"one of: {known} (`sarcoscope info` lists their cut-offs)."
                )

    @property
    def slice_spec(self) -> SliceSpec | None:
        return None if self.slices is None else parse_slice_spec(self.slices)

    @property
    def reference_key(self) -> str:
        from sarcoscope.references import DEFAULT_REFERENCE

        return self.reference or DEFAULT_REFERENCE

    def patient(self, from_input: PatientInfo) -> PatientInfo:
        """The input's patient info with the user's overrides applied (overrides win)."""
        return PatientInfo(
            sex=self.sex if self.sex is not None else from_input.sex,
            height_m=self.height_cm / 100.0 if self.height_cm is not None else from_input.height_m,
            weight_kg=self.weight_kg if self.weight_kg is not None else from_input.weight_kg,
            age_years=from_input.age_years,
        )


def resolve_slices(spec: SliceSpec, volume: CTVolume) -> tuple[int, ...]:
    """Turn a SPEC into display-slice indices (k, inferior→superior) of ``volume``.

    NIfTI input: the user counts along the stored third voxel axis (what ITK-SNAP, 3D Slicer and
    nibabel show), so each index is mapped with ``io.source_to_display_index``. DICOM input and
    in-memory volumes: the index is the position in the sorted inferior→superior stack, i.e. the
    display index itself.
    """
    if volume.series.format == "nifti" and volume.source_grid is not None:
        from sarcoscope.io import source_to_display_index

        n_stored = int(volume.source_grid.shape[2])
        stored = spec.input_indices(n_stored)
        return tuple(int(source_to_display_index(volume, k)) for k in stored)
    return spec.input_indices(volume.n_slices)
