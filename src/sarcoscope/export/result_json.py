"""``result.json``: the machine-readable record of one analysis (schema ``sarcoscope.result/1``).

Documented field by field in ``docs/result-schema.md``. Rules: no patient names or IDs (only
sex, height, weight, BMI); every value carries its unit in its name; a quantity that could not
be measured is ``null`` — never 0 — and the reason is in ``warnings`` or ``not_evaluated``.
Adding optional fields keeps ``/1``; renaming or removing one bumps the schema version.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sarcoscope import __version__
from sarcoscope.errors import ExportError
from sarcoscope.tissues import TISSUE_KEYS
from sarcoscope.types import AnalysisResult, Flag, Measurements, TissueMeasurement

SCHEMA = "sarcoscope.result/1"


@dataclass(frozen=True)
class Summary:
    """Summary over the analysed slices (one slice: that slice's values).

    ``measurements`` is ``measure.average_measurements`` of the slices (areas averaged, mean HU
    pooled over pixels, SMI and flags re-evaluated on the averages); ``not_evaluated`` lists
    why a flag of the chosen reference could not be evaluated (sex, height or BMI unknown).
    """

    n_slices: int
    measurements: Measurements
    not_evaluated: tuple[str, ...]


def summarize(result: AnalysisResult) -> Summary:
    """Combine the per-slice measurements into the values a clinician reads."""
    from sarcoscope.references import evaluate_flags

    ms = result.measurements
    patient = result.volume.patient
    if len(ms) == 1:
        summary = ms[0]
    else:
        from sarcoscope.measure import average_measurements

        summary = average_measurements(list(ms), patient, result.reference)
    muscle = summary.tissues.get("muscle")
    area = muscle.area_cm2 if muscle is not None else math.nan
    mean_hu = muscle.mean_hu if muscle is not None else math.nan
    reasons = evaluate_flags(
        result.reference,
        patient,
        smi_cm2_m2=summary.smi_cm2_m2,
        muscle_area_cm2=area if math.isfinite(area) else None,
        muscle_mean_hu=mean_hu if math.isfinite(mean_hu) else None,
    ).not_evaluated
    return Summary(n_slices=len(ms), measurements=summary, not_evaluated=reasons)


def _num(value: float | None, digits: int = 3) -> float | None:
    """JSON has no NaN: unknown → null (the reason is recorded elsewhere)."""
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return round(value, digits)


def _tissue(t: TissueMeasurement) -> dict[str, Any]:
    return {
        "area_cm2": _num(t.area_cm2),
        "mean_hu": _num(t.mean_hu, 2),
        "sd_hu": _num(t.sd_hu, 2),
        "n_pixels": int(t.n_pixels),
    }


def _flag(f: Flag) -> dict[str, Any]:
    return {
        "name": f.name,
        "reference": f.reference,
        "value": _num(f.value),
        "threshold": _num(f.threshold),
        "unit": f.unit,
        "positive": bool(f.positive),
    }


def _slice(result: AnalysisResult, m: Measurements) -> dict[str, Any]:
    volume = result.volume
    k = m.slice_index
    uid = volume.slice_uids[k] if volume.slice_uids else ""
    entry: dict[str, Any] = {
        "index": int(k),
        "source_index": _source_index(result, k),
        "z_mm": _num(m.z_mm),
        "sop_instance_uid": uid or None,
        "tissues": {key: _tissue(m.tissues[key]) for key in TISSUE_KEYS if key in m.tissues},
        "muscle_low_attenuation_cm2": _num(m.muscle_low_attenuation_cm2),
        "muscle_normal_attenuation_cm2": _num(m.muscle_normal_attenuation_cm2),
        "smi_cm2_m2": _num(m.smi_cm2_m2),
        "vat_sat_ratio": _num(m.vat_sat_ratio),
        "flags": [_flag(f) for f in m.flags],
        "warnings": list(m.warnings),
    }
    return entry


def _source_index(result: AnalysisResult, k: int) -> int | None:
    """The slice's index in the input's own numbering (the one ``--slices`` takes)."""
    volume = result.volume
    grid = volume.source_grid
    if volume.series.format != "nifti" or grid is None:
        return int(k)
    # Display axis 0 holds stored axis grid.axes[0]; only when that is the stored third axis
    # does a stored "slice index" exist for the user to type.
    if grid.axes[0] != 2:
        return None
    return int(grid.shape[2] - 1 - k) if grid.flips[0] else int(k)


def result_to_dict(
    result: AnalysisResult, *, extra_timings_s: dict[str, float] | None = None
) -> dict[str, Any]:
    """The ``sarcoscope.result/1`` document as plain JSON-able data."""
    volume, series, choice = result.volume, result.volume.series, result.choice
    patient = volume.patient
    summary = summarize(result)
    sm = summary.measurements
    from sarcoscope.references import get_reference

    ref = get_reference(result.reference)
    l3: dict[str, Any] | None = None
    if choice.method == "auto":
        centre = sorted(choice.indices)[len(choice.indices) // 2]
        l3 = {
            "index": int(centre),
            "z_mm": _num(volume.z_mm(centre)),
            "indices": [int(k) for k in choice.indices],
            "confidence": _num(choice.confidence),
            "method": "auto",
            "definition": choice.definition,
            "vertebrae": [
                {
                    "name": v.name,
                    "z_mm": _num(v.z_mm),
                    "z_top_mm": _num(v.z_top_mm),
                    "z_bottom_mm": _num(v.z_bottom_mm),
                }
                for v in choice.vertebrae
            ],
            "warnings": list(choice.warnings),
        }
    timings = {k: _num(v, 4) for k, v in result.timings_s.items()}
    for k, v in (extra_timings_s or {}).items():
        timings[k] = _num(v, 4)
    return {
        "schema": SCHEMA,
        "sarcoscope_version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "format": series.format,
            "study_instance_uid": series.study_uid or None,
            "series_instance_uid": series.series_uid or None,
            "frame_of_reference_uid": series.frame_of_reference_uid or None,
            "modality": series.modality,
            "series_description": series.series_description or None,
            "manufacturer": series.manufacturer or None,
            "kernel": series.kernel or None,
            "slice_thickness_mm": _num(series.slice_thickness_mm),
            "selection_reason": series.selection_reason or None,
            "shape": [int(s) for s in volume.shape],  # full stack, also after a partial read
            "spacing_mm": [_num(s, 4) for s in volume.spacing_mm],
            "padding_fraction": _num(volume.padding_fraction, 4),
            "warnings": list(series.warnings),
        },
        "patient": {
            "sex": patient.sex,
            "height_m": _num(patient.height_m),
            "weight_kg": _num(patient.weight_kg),
            "bmi_kg_m2": _num(patient.bmi, 2),
        },
        "slice_selection": {
            "method": choice.method,
            "definition": choice.definition or None,
            "indices": [int(k) for k in choice.indices],
            "z_mm": [_num(z) for z in choice.z_mm],
        },
        "l3": l3,
        "slices": [_slice(result, m) for m in result.measurements],
        "summary": {
            "n_slices": summary.n_slices,
            "tissues": {
                key: _tissue(sm.tissues[key]) for key in TISSUE_KEYS if key in sm.tissues
            },
            "muscle_low_attenuation_cm2": _num(sm.muscle_low_attenuation_cm2),
            "muscle_normal_attenuation_cm2": _num(sm.muscle_normal_attenuation_cm2),
            "smi_cm2_m2": _num(sm.smi_cm2_m2),
            "vat_sat_ratio": _num(sm.vat_sat_ratio),
            "flags": [_flag(f) for f in sm.flags],
            "not_evaluated": list(summary.not_evaluated),
            "warnings": list(sm.warnings) if summary.n_slices > 1 else [],
        },
        "reference": {"key": ref.key, "name": ref.name, "citation": ref.citation, "doi": ref.doi},
        "segmenter": {
            "name": result.segmenter.name,
            "version": result.segmenter.version,
            "sha256": result.segmenter.sha256,
            **({"post_steps": list(result.segmenter.post_steps)} if result.segmenter.post_steps else {}),
        },
        "timings_s": timings,
        "warnings": list(result.warnings),
    }


def write_result_json(
    result: AnalysisResult,
    path: Path,
    *,
    extra_timings_s: dict[str, float] | None = None,
) -> Path:
    """Write ``result.json`` atomically (temp file + rename); ``ExportError`` on failure."""
    path = Path(path)
    doc = result_to_dict(result, extra_timings_s=extra_timings_s)
    text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{path}: cannot write result.json ({exc.strerror or exc}).") from exc
    return path
