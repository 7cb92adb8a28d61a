"""Pure data about the four tissue classes: label values, HU ranges, colours, DICOM codes.

Label values are part of the file formats we write (label NIfTI, DICOM SEG segment numbers):
never renumber them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

#: HU written where the scanner stored padding (outside the reconstruction circle).
AIR_HU = -1024

#: Alberta protocol attenuation windows (Mitsiopoulos 1998; Prado 2008).
MUSCLE_HU = (-29.0, 150.0)
FAT_HU = (-190.0, -30.0)
#: Split of muscle into low- and normal-attenuation muscle (Aubrey 2014, Goodpaster 2000).
LOW_ATTENUATION_MUSCLE_HU = (-29.0, 29.0)
NORMAL_ATTENUATION_MUSCLE_HU = (30.0, 150.0)


class Tissue(IntEnum):
    """Label value of each class in every label map we produce."""

    MUSCLE = 1
    IMAT = 2
    VAT = 3
    SAT = 4

    @property
    def key(self) -> str:
        return TISSUE_INFO[self].key


@dataclass(frozen=True)
class TissueInfo:
    key: str
    label: str
    hu_range: tuple[float, float]
    rgb: tuple[int, int, int]
    # (code value, coding scheme, meaning) for DICOM SEG / SR (SNOMED CT).
    category_code: tuple[str, str, str]
    type_code: tuple[str, str, str]


TISSUE_INFO: dict[Tissue, TissueInfo] = {
    Tissue.MUSCLE: TissueInfo(
        "muscle", "Skeletal muscle", MUSCLE_HU, (220, 60, 60),
        ("85756007", "SCT", "Tissue"), ("127954009", "SCT", "Skeletal muscle tissue"),
    ),
    Tissue.IMAT: TissueInfo(
        "imat", "Intermuscular adipose tissue", FAT_HU, (250, 210, 40),
        ("85756007", "SCT", "Tissue"), ("55603005", "SCT", "Adipose tissue"),
    ),
    Tissue.VAT: TissueInfo(
        "vat", "Visceral adipose tissue", FAT_HU, (60, 200, 90),
        ("85756007", "SCT", "Tissue"), ("725274000", "SCT", "Visceral adipose tissue"),
    ),
    Tissue.SAT: TissueInfo(
        "sat", "Subcutaneous adipose tissue", FAT_HU, (60, 140, 230),
        ("85756007", "SCT", "Tissue"), ("725273006", "SCT", "Subcutaneous adipose tissue"),
    ),
}

TISSUE_KEYS: tuple[str, ...] = tuple(TISSUE_INFO[t].key for t in Tissue)


def tissue_from_key(key: str) -> Tissue:
    for tissue, info in TISSUE_INFO.items():
        if info.key == key:
            return tissue
    raise KeyError(f"unknown tissue key {key!r}; expected one of {TISSUE_KEYS}")
