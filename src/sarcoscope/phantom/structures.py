"""Structure ids of the phantom's internal anatomy map and how each maps to a tissue label.

The renderer paints *structures* (psoas, kidney cortex, bowel gas …); the tissue labels
(1 muscle, 2 IMAT, 3 VAT, 4 SAT) are derived from the structure's *compartment* and the
final pixel HU, exactly as the Alberta protocol does (see docs/phantom.md):

* muscle-envelope structures (every skeletal muscle of the trunk and the fat marbling inside
  their fascia): HU −29…150 → muscle, −190…−30 → IMAT;
* visceral fat (inside the abdominal wall, outside organs, bowel and vessels; renal sinus fat
  included): −190…−30 → VAT;
* subcutaneous fat (between skin and the muscle wall): −190…−30 → SAT;
* everything else (skin, organs, bowel content, bone, vessels, arms, table): 0.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from ..tissues import FAT_HU, MUSCLE_HU, Tissue


class S(IntEnum):
    """Structure ids (uint8) of ``PhantomSlice.structures``."""

    AIR = 0
    TABLE = 1
    PAD = 2  # mattress / blanket
    SKIN = 3
    SAT = 4
    FASCIA = 5  # linea alba, semilunaris, Scarpa fascia, septa
    WALL = 6  # external/internal oblique, transversus
    RECTUS = 7
    PSOAS = 8
    PARASPINAL = 9
    QL = 10
    LATISSIMUS = 11
    IMAT = 12  # fat inside a muscle fascia (marbling, intermuscular planes)
    VAT = 13
    CORTEX = 14
    TRABECULAR = 15
    DISC = 16
    CANAL = 17
    KIDNEY_CORTEX = 18
    KIDNEY_MEDULLA = 19
    RENAL_SINUS_FAT = 20
    URINE = 21
    LIVER = 22
    SPLEEN = 23
    BOWEL_WALL = 24
    GAS = 25
    FLUID = 26
    FAECES = 27
    ORAL_CONTRAST = 28
    AORTA = 29
    IVC = 30
    VESSEL = 31
    ASCITES = 32
    METAL = 33
    ARM_SKIN = 34
    ARM_FAT = 35
    ARM_MUSCLE = 36
    ARM_BONE = 37
    LUNG = 38
    HEART = 39
    ILIACUS = 40
    GLUTEAL = 41
    CHEST_WALL = 42  # intercostal / serratus / pectoral muscle band
    STOMACH = 43
    PANCREAS = 44
    GALLBLADDER = 45
    BLADDER = 46
    EPIDURAL_FAT = 47
    CALCIFICATION = 48


MUSCLE_ENVELOPE = (
    S.WALL, S.RECTUS, S.PSOAS, S.PARASPINAL, S.QL, S.LATISSIMUS, S.IMAT, S.ILIACUS,
    S.GLUTEAL, S.CHEST_WALL,
)
VISCERAL_FAT = (S.VAT, S.RENAL_SINUS_FAT)
SUBCUTANEOUS_FAT = (S.SAT,)

#: Structure id → compartment: 1 muscle envelope, 3 visceral fat, 4 subcutaneous fat, 0 none.
COMPARTMENT = np.zeros(256, dtype=np.uint8)
for _s in MUSCLE_ENVELOPE:
    COMPARTMENT[_s] = 1
for _s in VISCERAL_FAT:
    COMPARTMENT[_s] = 3
for _s in SUBCUTANEOUS_FAT:
    COMPARTMENT[_s] = 4


def _label_lut() -> np.ndarray:
    """(compartment, HU + 1024) → tissue label, for integer HU −1024…3071."""
    hu = np.arange(-1024, 3072)
    fat = (hu >= FAT_HU[0]) & (hu <= FAT_HU[1])
    mus = (hu >= MUSCLE_HU[0]) & (hu <= MUSCLE_HU[1])
    lut = np.zeros((5, hu.size), dtype=np.uint8)
    lut[1][mus] = Tissue.MUSCLE
    lut[1][fat] = Tissue.IMAT
    lut[3][fat] = Tissue.VAT
    lut[4][fat] = Tissue.SAT
    return lut.ravel()


_LABEL_LUT = _label_lut()
_COMPARTMENT_4096 = COMPARTMENT.astype(np.int16) * np.int16(4096)


def tissue_labels(structures: np.ndarray, hu: np.ndarray, *, integer_hu: bool = False) -> np.ndarray:
    """Alberta-protocol tissue labels from the structure map and the final HU.

    HU are rounded to integers (as stored by a scanner) before the windows are applied;
    ``integer_hu=True`` skips that when ``hu`` already holds integers within −1024…3071.
    Works on 2-D slices or 3-D stacks of the same shape.
    """
    if integer_hu and hu.dtype == np.int16:
        # fast path (volumes): everything fits in int16 (max index 4*4096 + 4095)
        idx = _COMPARTMENT_4096[structures]
        idx += hu
        idx += np.int16(1024)
        return _LABEL_LUT[idx]
    if integer_hu:
        idx = hu.astype(np.int32)
    else:
        idx = np.clip(np.rint(hu), -1024, 3071).astype(np.int32)
    idx += 1024
    idx += COMPARTMENT[structures].astype(np.int32) * 4096
    return _LABEL_LUT[idx]
