"""Secondary Capture key image: the overlay picture as DICOM, marked "not for diagnostic use".

Every PACS viewer shows a Secondary Capture, even those that cannot display SEG or SR. It carries
the source study's patient and study modules exactly as SEG and SR do. The
warning is burned into the pixels (a banner across the top, BurnedInAnnotation YES) and also
written to ImageComments, the series description and ContentQualification RESEARCH.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset

from sarcoscope.export.dicom_seg import (
    MANUFACTURER,
    MODEL_NAME,
    SERIES_DESCRIPTIONS,
    SERIES_NUMBERS,
    result_uid,
    save_dataset,
    software_versions,
    source_headers,
)
from sarcoscope.types import AnalysisResult

WARNING_TEXT = "NOT FOR DIAGNOSTIC USE - sarcoscope research output"
BANNER_RGB = (200, 30, 30)


def mark_not_for_diagnosis(rgb: np.ndarray) -> np.ndarray:
    """Return the picture with a red banner and the warning burned in above it."""
    h, w = rgb.shape[:2]
    banner_px = max(24, h // 20)
    img = Image.new("RGB", (w, h + banner_px), BANNER_RGB)
    img.paste(Image.fromarray(rgb), (0, banner_px))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(12, banner_px * 2 // 3))
    draw.text((8, banner_px // 6), WARNING_TEXT, fill=(255, 255, 255), font=font)
    return np.asarray(img, dtype=np.uint8)


def build_secondary_capture(
    result: AnalysisResult, picture: Path | np.ndarray, headers: Sequence[Dataset] | None = None,
    shown_index: int | None = None,
) -> Dataset:
    """SC image (RGB) of ``picture`` (overlay.png path or an RGB array) in the source study.

    ``shown_index`` is the display slice the picture shows (default: the first analysed one);
    the key image references that source image.
    """
    import highdicom as hd

    headers = list(headers) if headers is not None else source_headers(result)
    if shown_index is None or shown_index not in result.choice.indices:
        shown_index = result.choice.indices[0]
    first = result.choice.indices.index(shown_index)
    headers = [headers[first]] + [h for i, h in enumerate(headers) if i != first]
    if isinstance(picture, (str, Path)):
        with Image.open(picture) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    else:
        rgb = np.asarray(picture, dtype=np.uint8)
    pixels = np.ascontiguousarray(mark_not_for_diagnosis(rgb))
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=headers[0],
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        # the shown slice is part of the key image's content, so part of its UIDs
        series_instance_uid=result_uid(result, f"sc-series-{shown_index}"),
        series_number=SERIES_NUMBERS["sc"],
        sop_instance_uid=result_uid(result, f"sc-instance-{shown_index}"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "P"),
        series_description=SERIES_DESCRIPTIONS["sc"],
        manufacturer_model_name=MODEL_NAME,
        software_versions=software_versions(result),
        content_qualification="RESEARCH",
    )
    # the same Patient, General Study, Patient Study and Clinical Trial modules as SEG and SR
    # (highdicom's SOPClass.copy_patient_and_study_information, which their constructors call):
    # from_ref_dataset alone copies only a handful of them (no IssuerOfPatientID, PatientAge,
    # PatientSize, PatientWeight, StudyDescription ...)
    sc.copy_patient_and_study_information(headers[0])
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = WARNING_TEXT
    sc.DerivationDescription = "sarcoscope overlay of the analysed slice; " + WARNING_TEXT
    src = Dataset()
    src.ReferencedSOPClassUID = headers[0].SOPClassUID
    src.ReferencedSOPInstanceUID = headers[0].SOPInstanceUID
    sc.SourceImageSequence = [src]
    return sc


def write_secondary_capture(
    result: AnalysisResult, picture: Path | np.ndarray, path: Path,
    headers: Sequence[Dataset] | None = None, shown_index: int | None = None,
) -> Path:
    return save_dataset(build_secondary_capture(result, picture, headers, shown_index), path)
