"""Patient sex, height, weight and age from DICOM header values — never names or IDs.

Hospitals fill these fields with placeholders (``0``, ``000Y``, ``O``) or in the wrong unit
(height in centimetres). Such values are ignored with a warning instead of turned into a
wrong height or BMI.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sarcoscope.types import PatientInfo


@dataclass(frozen=True)
class RawPatient:
    """The four raw header strings (as written; empty when absent)."""

    sex: str = ""
    size: str = ""
    weight: str = ""
    age: str = ""


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def parse_patient(raw: RawPatient) -> tuple[PatientInfo, tuple[str, ...]]:
    """Turn raw header values into a ``PatientInfo`` and warnings for the values ignored."""
    warnings: list[str] = []
    sex = raw.sex.strip().upper()
    sex_value = sex if sex in ("M", "F") else None
    if sex and sex_value is None:
        warnings.append(
            f"PatientSex {raw.sex.strip()!r} is neither M nor F: ignored (sex-specific cut-offs "
            "need --sex)"
        )

    height = None
    if raw.size.strip():
        value = _float(raw.size)
        if value is not None and 0.5 <= value <= 2.6:
            height = value
        elif value is not None and 50 <= value <= 260:
            warnings.append(
                f"PatientSize {raw.size.strip()} is not a height in metres (it looks like "
                "centimetres): ignored — pass --height-cm"
            )
        elif value is None or value != 0:
            warnings.append(f"PatientSize {raw.size.strip()!r} is not a plausible height in metres: ignored")
        else:
            warnings.append("PatientSize 0 is a placeholder: height unknown")

    weight = None
    if raw.weight.strip():
        value = _float(raw.weight)
        if value is not None and 2.0 <= value <= 400.0:
            weight = value
        else:
            warnings.append(f"PatientWeight {raw.weight.strip()!r} is not a plausible weight in kg: ignored")

    age = None
    text = raw.age.strip().upper()
    if text:
        match = re.fullmatch(r"(\d{1,3})([DWMY]?)", text)
        if match is None:
            warnings.append(f"PatientAge {raw.age.strip()!r} is not a DICOM age string: ignored")
        else:
            number = int(match.group(1))
            unit = match.group(2) or "Y"
            years = number / {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0}[unit]
            if number == 0:
                warnings.append(f"PatientAge {raw.age.strip()!r} is a placeholder: age unknown")
            elif years > 130:
                warnings.append(f"PatientAge {raw.age.strip()!r} is not plausible: ignored")
            else:
                age = round(years, 3)
    return PatientInfo(sex=sex_value, height_m=height, weight_kg=weight, age_years=age), tuple(warnings)  # type: ignore[arg-type]
