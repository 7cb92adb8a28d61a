"""Is this CT in Hounsfield units? Checked before anything is located or measured.

Both segmenters were built for CT in HU. Handed something else they still label pixels, and
the numbers look like results: a label map, or a scan stored without its rescale offset,
gave "sarcopenia" from a few cm² of "muscle". This check turns such inputs into a clear error.
"""

from __future__ import annotations

import numpy as np

from sarcoscope.errors import InputError
from sarcoscope.segment.body import BODY_HU

#: Every abdominal CT slice has fat (about −100 HU) or air below this somewhere.
FAT_OR_AIR_HU = -50.0
#: ... on at least this share of its pixels (subcutaneous fat alone is far more).
MIN_FAT_OR_AIR_SHARE = 0.005
#: The body's median HU is below this on any CT of the trunk (measured −39…+153 on the real
#: files of ../shared/data, fat-free phantoms included); +900 and more when the intercept is lost.
MAX_BODY_MEDIAN_HU = 400.0


def check_hounsfield(hu: np.ndarray, where: str) -> None:
    """Raise ``InputError`` when ``hu`` (a slice or a volume) cannot be CT in Hounsfield units.

    Three signs, each impossible for a CT of the trunk: one value everywhere (e.g. a rescale
    slope of 0); a body whose median is far above soft tissue (stored values without their
    rescale intercept of about −1024, with padding already masked to air); no pixel of fat or
    air at all (a label map 0..N, or the same lost intercept without padding).
    """
    sample = np.asarray(hu)
    if sample.ndim == 3:
        sample = sample[::2, ::4, ::4]
    elif sample.ndim == 2:
        sample = sample[::2, ::2]
    if sample.size == 0:
        return
    lo, hi = float(sample.min()), float(sample.max())
    if hi == lo:
        raise InputError(
            f"{where}: every pixel has the same value ({lo:g}); this is not a CT image in Hounsfield "
            "units (check RescaleSlope / scl_slope, or that the right file was given)."
        )
    share = float(np.count_nonzero(sample < FAT_OR_AIR_HU)) / sample.size
    body = sample[sample > BODY_HU]
    body_median = float(np.median(body)) if body.size else 0.0
    if body_median > MAX_BODY_MEDIAN_HU:
        # the reader's padding mask (−1024) can supply "air" while the body is still unshifted
        raise InputError(
            f"{where}: the body's pixels have a median of {body_median:.0f}, where CT of the trunk in "
            f"Hounsfield units has about −100…+150 — pixel values stored without their rescale "
            "intercept (about −1024). Fix RescaleIntercept (DICOM) / scl_inter (NIfTI), or re-export "
            "the scan in HU."
        )
    if share < MIN_FAT_OR_AIR_SHARE:
        raise InputError(
            f"{where}: values {lo:g}…{hi:g} with no fat or air (nothing below {FAT_OR_AIR_HU:g}) are not "
            "Hounsfield units of a CT of the trunk — a label map or mask, or pixel values stored "
            "without their rescale intercept (about −1024). Give the CT image itself, or fix "
            "RescaleIntercept (DICOM) / scl_inter (NIfTI)."
        )
