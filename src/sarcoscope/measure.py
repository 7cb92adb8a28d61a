"""Pure functions turning a labelled slice into body-composition numbers.

Areas count labelled pixels times the pixel area, so they are exact for whatever label map a
segmenter produced. Attenuation statistics use the HU of the labelled pixels. A class with no
pixel gets ``area_cm2 = 0``, ``n_pixels = 0`` and ``mean_hu = sd_hu = NaN`` plus a warning:
never 0 HU (a missing tissue must not look like water).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from sarcoscope.references import evaluate_flags, get_reference
from sarcoscope.tissues import (
    LOW_ATTENUATION_MUSCLE_HU,
    NORMAL_ATTENUATION_MUSCLE_HU,
    TISSUE_INFO,
    Tissue,
)
from sarcoscope.types import LabelMap, Measurements, PatientInfo, TissueMeasurement

log = logging.getLogger(__name__)


def _tissue_stats(values: np.ndarray, pixel_area_cm2: float) -> TissueMeasurement:
    """Area and HU statistics of one class; NaN HU when absent, NaN SD below 2 pixels."""
    n = int(values.size)
    if n == 0:
        return TissueMeasurement(area_cm2=0.0, mean_hu=math.nan, sd_hu=math.nan, n_pixels=0)
    v = values.astype(np.float64, copy=False)
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if n >= 2 else math.nan
    return TissueMeasurement(area_cm2=n * pixel_area_cm2, mean_hu=mean, sd_hu=sd, n_pixels=n)


def _derived(
    tissues: dict[str, TissueMeasurement],
    muscle_area_cm2: float,
    patient: PatientInfo,
    reference: str,
    warnings: list[str],
) -> tuple[float | None, float | None, tuple]:
    """SMI, VAT/SAT ratio and flags from per-tissue numbers (shared by slice and average)."""
    muscle = tissues[Tissue.MUSCLE.key]
    smi = None
    if patient.height_m is not None:
        smi = muscle_area_cm2 / patient.height_m**2
    vat, sat = tissues[Tissue.VAT.key], tissues[Tissue.SAT.key]
    ratio = None
    if sat.area_cm2 > 0:
        ratio = vat.area_cm2 / sat.area_cm2
    else:
        warnings.append("VAT/SAT ratio not computed: no subcutaneous fat on the slice")
    if muscle.n_pixels == 0:
        warnings.append("flags not evaluated: no skeletal muscle labelled on the slice")
        return smi, ratio, ()
    result = evaluate_flags(
        reference,
        patient,
        smi_cm2_m2=smi,
        muscle_area_cm2=muscle_area_cm2,
        muscle_mean_hu=muscle.mean_hu,
    )
    warnings.extend(f"not evaluated: {r}" for r in result.not_evaluated)
    return smi, ratio, result.flags


def measure_slice(
    hu: np.ndarray,
    label_map: LabelMap,
    patient: PatientInfo,
    reference: str,
    z_mm: float,
) -> Measurements:
    """Measure areas, attenuation, indices and flags on one labelled slice.

    Parameters
    ----------
    hu
        The slice in HU (rows, columns), same shape as ``label_map.labels``.
    label_map
        Tissue labels (``tissues.Tissue`` values) with the pixel spacing.
    patient
        Sex/height/weight as known: SMI needs height, flags need what their reference needs.
    reference
        Key into ``references.REFERENCES`` (unknown key: ``ConfigError``).
    z_mm
        Superior patient coordinate of the slice centre, recorded in the result.

    Returns
    -------
    Measurements
        ``tissues`` keyed by ``Tissue.key``. Low- and normal-attenuation muscle split the
        muscle pixels at 30 HU (−29 ≤ HU < 30 and 30 ≤ HU ≤ 150, so non-integer HU fall in
        exactly one class); muscle pixels outside −29…150 HU (possible with a learned
        segmenter) count in neither.
    """
    get_reference(reference)  # an unknown key is a user error even when no flag can be judged
    hu = np.asarray(hu)
    labels = label_map.labels
    if hu.shape != labels.shape:
        raise ValueError(f"HU slice shape {hu.shape} differs from label map shape {labels.shape}")
    px = label_map.pixel_area_cm2
    warnings: list[str] = []
    tissues: dict[str, TissueMeasurement] = {}
    for tissue in Tissue:
        stats = _tissue_stats(hu[labels == tissue.value], px)
        if stats.n_pixels == 0:
            msg = f"{TISSUE_INFO[tissue].label} absent on slice {label_map.slice_index}: mean HU is NaN"
            warnings.append(msg)
            log.warning(msg)
        tissues[tissue.key] = stats

    muscle_hu = hu[labels == Tissue.MUSCLE.value]
    low = (muscle_hu >= LOW_ATTENUATION_MUSCLE_HU[0]) & (muscle_hu < NORMAL_ATTENUATION_MUSCLE_HU[0])
    normal = (muscle_hu >= NORMAL_ATTENUATION_MUSCLE_HU[0]) & (
        muscle_hu <= NORMAL_ATTENUATION_MUSCLE_HU[1]
    )
    muscle_area = tissues[Tissue.MUSCLE.key].area_cm2
    smi, ratio, flags = _derived(tissues, muscle_area, patient, reference, warnings)
    return Measurements(
        slice_index=label_map.slice_index,
        z_mm=float(z_mm),
        tissues=tissues,
        muscle_low_attenuation_cm2=int(low.sum()) * px,
        muscle_normal_attenuation_cm2=int(normal.sum()) * px,
        smi_cm2_m2=smi,
        vat_sat_ratio=ratio,
        flags=tuple(flags),
        warnings=tuple(warnings),
    )


def _pool(items: Sequence[TissueMeasurement]) -> TissueMeasurement:
    """Mean area over slices; HU mean and SD pooled over all pixels of all slices."""
    area = float(np.mean([t.area_cm2 for t in items]))
    n_total = sum(t.n_pixels for t in items)
    if n_total == 0:
        return TissueMeasurement(area_cm2=area, mean_hu=math.nan, sd_hu=math.nan, n_pixels=0)
    present = [t for t in items if t.n_pixels > 0]
    mean = sum(t.n_pixels * t.mean_hu for t in present) / n_total
    if n_total < 2:
        return TissueMeasurement(area_cm2=area, mean_hu=mean, sd_hu=math.nan, n_pixels=n_total)
    ss = 0.0
    for t in present:
        within = (t.n_pixels - 1) * t.sd_hu**2 if t.n_pixels >= 2 else 0.0
        ss += within + t.n_pixels * (t.mean_hu - mean) ** 2
    return TissueMeasurement(
        area_cm2=area, mean_hu=mean, sd_hu=math.sqrt(ss / (n_total - 1)), n_pixels=n_total
    )


def average_measurements(
    measurements: Sequence[Measurements],
    patient: PatientInfo,
    reference: str,
) -> Measurements:
    """Average several slices (e.g. ±N mm around L3) into one set of numbers.

    Areas (per tissue, low/normal attenuation muscle) are the mean of the slice areas; mean and
    SD HU are pooled over all pixels of all slices, and ``n_pixels`` is the pooled count. SMI,
    VAT/SAT ratio and flags are recomputed from the averaged numbers (so a flag is judged on the
    averaged SMI, not by voting). ``z_mm`` is the mean slice position and ``slice_index`` the
    index of the slice closest to it.
    """
    get_reference(reference)
    if not measurements:
        raise ValueError("average_measurements needs at least one Measurements")
    if len(measurements) == 1:
        return measurements[0]
    warnings: list[str] = []
    tissues = {t.key: _pool([m.tissues[t.key] for m in measurements]) for t in Tissue}
    for tissue in Tissue:
        if tissues[tissue.key].n_pixels == 0:
            warnings.append(f"{TISSUE_INFO[tissue].label} absent on all averaged slices: mean HU is NaN")
    z = float(np.mean([m.z_mm for m in measurements]))
    centre = min(measurements, key=lambda m: abs(m.z_mm - z))
    smi, ratio, flags = _derived(tissues, tissues[Tissue.MUSCLE.key].area_cm2, patient, reference, warnings)
    idx = ", ".join(str(m.slice_index) for m in measurements)
    warnings.insert(0, f"averaged over {len(measurements)} slices ({idx})")
    for m in measurements:
        warnings.extend(f"slice {m.slice_index}: {w}" for w in m.warnings
                        if not w.startswith("not evaluated"))
    return Measurements(
        slice_index=centre.slice_index,
        z_mm=z,
        tissues=tissues,
        muscle_low_attenuation_cm2=float(np.mean([m.muscle_low_attenuation_cm2 for m in measurements])),
        muscle_normal_attenuation_cm2=float(
            np.mean([m.muscle_normal_attenuation_cm2 for m in measurements])
        ),
        smi_cm2_m2=smi,
        vat_sat_ratio=ratio,
        flags=tuple(flags),
        warnings=tuple(warnings),
    )
