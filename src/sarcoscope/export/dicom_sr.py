"""TID 1500 measurement report (highdicom Comprehensive 3D SR) referencing the DICOM SEG.

One "Planar ROI measurements" group per tissue and analysed slice, each citing its SEG frame
(segment + source image): area (cm², SNOMED 42798000 "Area") and mean attenuation (HU,
SNOMED 373098007 "Mean"). The muscle group also carries the low/normal-attenuation muscle
areas, the skeletal muscle index (cm²/m², when height is known) and the cut-off flags as
qualitative evaluations (Present/Absent) with the threshold and reference in the concept
meaning. Concepts that have no standard code use the private scheme ``99SARCO``
(declared in CodingSchemeIdentificationSequence). A tissue that is absent has no mean HU:
that measurement is omitted, never written as 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from pydicom import Dataset

from sarcoscope.errors import ExportError
from sarcoscope.export.dicom_seg import (
    MANUFACTURER,
    MODEL_NAME,
    SERIES_DESCRIPTIONS,
    SERIES_NUMBERS,
    SegFrames,
    build_seg,
    result_uid,
    save_dataset,
    software_versions,
    source_headers,
)
from sarcoscope.tissues import TISSUE_INFO, Tissue
from sarcoscope.types import AnalysisResult

PRIVATE_SCHEME = "99SARCO"


def _ascii(text: str) -> str:
    """Code meanings stay in the default character repertoire (cm² → cm2)."""
    return text.replace("²", "2").replace("³", "3").encode("ascii", "replace").decode("ascii")


def _private(value: str, meaning: str):
    import highdicom as hd

    return hd.sr.CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=_ascii(meaning)[:64])


def _unit(value: str, meaning: str):
    import highdicom as hd

    return hd.sr.CodedConcept(value=value, scheme_designator="UCUM", meaning=meaning)


def _measurements_for(result: AnalysisResult, idx: int, tissue: Tissue) -> tuple[list, list]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    m = result.measurements[idx]
    tm = m.tissues[TISSUE_INFO[tissue].key]
    cm2 = _unit("cm2", "square centimeter")
    out = [hd.sr.Measurement(name=codes.SCT.Area, value=float(tm.area_cm2), unit=cm2)]
    if math.isfinite(tm.mean_hu):
        out.append(hd.sr.Measurement(name=codes.SCT.Mean, value=float(tm.mean_hu), unit=codes.UCUM.HounsfieldUnit))
    evaluations = []
    if tissue is Tissue.MUSCLE:
        out.append(hd.sr.Measurement(
            name=_private("LAMA", "Low attenuation muscle area (-29 to +29 HU)"),
            value=float(m.muscle_low_attenuation_cm2), unit=cm2))
        out.append(hd.sr.Measurement(
            name=_private("NAMA", "Normal attenuation muscle area (+30 to +150 HU)"),
            value=float(m.muscle_normal_attenuation_cm2), unit=cm2))
        if m.smi_cm2_m2 is not None and math.isfinite(m.smi_cm2_m2):
            out.append(hd.sr.Measurement(
                name=_private("SMI", "Skeletal muscle index"),
                value=float(m.smi_cm2_m2), unit=_unit("cm2/m2", "square centimeter per square meter")))
        for flag in m.flags:
            meaning = f"{flag.name} ({flag.reference}: threshold {flag.threshold:g} {flag.unit})"
            evaluations.append(hd.sr.QualitativeEvaluation(
                name=_private(flag.name.upper()[:16], meaning),
                value=codes.SCT.Present if flag.positive else codes.SCT.Absent))
    if tissue is Tissue.VAT and m.vat_sat_ratio is not None and math.isfinite(m.vat_sat_ratio):
        out.append(hd.sr.Measurement(
            name=_private("VATSAT", "VAT to SAT area ratio"), value=float(m.vat_sat_ratio),
            unit=_unit("1", "no units")))
    return out, evaluations


def build_sr(result: AnalysisResult, seg: Dataset | None = None, headers: Sequence[Dataset] | None = None) -> Dataset:
    """The Comprehensive 3D SR measurement report for ``result`` citing ``seg`` (built if None)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    headers = list(headers) if headers is not None else source_headers(result)
    seg = seg if seg is not None else build_seg(result, headers)
    frames = SegFrames.of(seg)
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=result_uid(result, "device"), name="sarcoscope", manufacturer_name=MANUFACTURER,
        model_name=MODEL_NAME,
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    groups = []
    for idx, (lm, header) in enumerate(zip(result.label_maps, headers)):
        src_uid = str(header.SOPInstanceUID)
        for tissue in Tissue:
            info = TISSUE_INFO[tissue]
            frame = frames.frames.get((int(tissue), src_uid))
            if frame is None:
                raise ExportError(f"SEG has no frame for segment {int(tissue)} on image {src_uid}")
            measurements, evaluations = _measurements_for(result, idx, tissue)
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(
                        uid=result_uid(result, f"roi-{info.key}-{lm.slice_index}"),
                        identifier=f"{info.label} slice {lm.slice_index}",
                    ),
                    referenced_segment=hd.sr.ReferencedSegmentationFrame(
                        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                        frame_number=frame, segment_number=int(tissue),
                        source_image=hd.sr.SourceImageForSegmentation.from_source_image(header),
                    ),
                    finding_type=hd.sr.CodedConcept(*info.type_code),
                    measurements=measurements,
                    qualitative_evaluations=evaluations or None,
                )
            )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=codes.SCT.ComputedTomography,
        imaging_measurements=groups,
    )
    schemes = [hd.coding_schemes.CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME, name="sarcoscope body composition concepts",
        responsible_organization="sarcoscope project")]
    return hd.sr.Comprehensive3DSR(
        evidence=[seg, *headers],
        content=report,
        series_instance_uid=result_uid(result, "sr-series"),
        series_number=SERIES_NUMBERS["sr"],
        sop_instance_uid=result_uid(result, "sr-instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=SERIES_DESCRIPTIONS["sr"],
        manufacturer_model_name=MODEL_NAME,
        software_versions=software_versions(result),
        coding_schemes=schemes,
        content_qualification="RESEARCH",
    )


def write_sr(result: AnalysisResult, path: Path, seg: Dataset | None = None,
             headers: Sequence[Dataset] | None = None) -> Path:
    """Write the SR to ``path`` (temporary name, then rename)."""
    return save_dataset(build_sr(result, seg, headers), path)
