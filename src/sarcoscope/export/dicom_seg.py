"""DICOM Segmentation (highdicom): the four tissue classes on the analysed slice(s).

The SEG goes into the *original study* as a new series and references the CT images it was
derived from, so a PACS viewer overlays it on the right slice. Masks are written on the source
images' own pixel grid: our label maps are display-oriented (anterior up, patient's right on
the left), so each label map is mapped back through the two geometries (display affine and the
source image's position/orientation), which handles flipped or transposed acquisitions.

UIDs are derived deterministically from a fingerprint of everything that decides the content
(``result_fingerprint``): running the same analysis twice gives the same instances, so a PACS
ends up with exactly one result set when results are sent again (idempotent send-back), while
an analysis whose content differs in any way gets new UIDs (a PACS keeps the first instance it
received under a UID, so reusing one would leave the old content there).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid

from sarcoscope import __version__
from sarcoscope.errors import ExportError
from sarcoscope.tissues import TISSUE_INFO, Tissue
from sarcoscope.types import AnalysisResult

log = logging.getLogger(__name__)

MANUFACTURER = "sarcoscope"
MODEL_NAME = "sarcoscope"
DEVICE_SERIAL = "sarcoscope"
UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root; entropy makes them unique and stable

SERIES_NUMBERS = {"seg": 9901, "sr": 9902, "sc": 9903}
SERIES_DESCRIPTIONS = {
    "seg": "sarcoscope L3 tissue segmentation",
    "sr": "sarcoscope L3 body composition report",
    "sc": "sarcoscope key image NOT FOR DIAGNOSTIC USE",
}


def software_versions(result: AnalysisResult) -> list[str]:
    """SoftwareVersions: package version and the segmenter (model) that produced the labels."""
    seg = result.segmenter
    model = f"{seg.name} {seg.version}" + (f" sha256:{seg.sha256[:16]}" if seg.sha256 else "")
    return [f"sarcoscope {__version__}", model[:64]]


def _canonical(value: object) -> object:
    """A JSON-able, order-independent form of ``value`` for hashing (arrays by digest, floats
    with 12 significant digits, NaN/inf spelled out)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        return {"dtype": arr.dtype.str, "shape": list(arr.shape),
                "sha256": hashlib.sha256(arr.tobytes()).hexdigest()}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return format(value, ".12g") if math.isfinite(value) else str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def result_fingerprint(result: AnalysisResult) -> str:
    """SHA-256 of everything that decides what SEG, SR and key image contain.

    The inputs (package version, source study/series/frame of reference, the analysed slices
    and their SOPInstanceUIDs, patient sex/height/weight/age, segmenter name/version/sha256/
    post-processing steps, cut-off reference) *and* the outputs they produced (every label map,
    every measurement with its flags). So any change that changes the content — also one not
    listed here, such as a different HU window — changes the fingerprint, while an identical
    re-run reproduces it exactly. Timings are left out (they differ between identical runs).
    """
    vol = result.volume
    indices = list(result.choice.indices)
    content = {
        "software": ["sarcoscope", __version__],
        "source": [vol.series.study_uid, vol.series.series_uid, vol.series.frame_of_reference_uid],
        "slices": indices,
        "slice_uids": [vol.slice_uids[k] if vol.slice_uids else "" for k in indices],
        "patient": _canonical(vol.patient),
        "segmenter": _canonical(result.segmenter),
        "reference": result.reference,
        "label_maps": _canonical(result.label_maps),
        "measurements": _canonical(result.measurements),
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def result_uid(result: AnalysisResult, kind: str) -> str:
    """Deterministic UID for one output object (``kind`` e.g. ``"seg-series"``): a function of
    ``result_fingerprint(result)`` and ``kind`` only (see the module docstring for why)."""
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=["sarcoscope-result-v2", result_fingerprint(result), kind])


def source_headers(result: AnalysisResult) -> list[Dataset]:
    """Headers (no pixels) of the analysed source images, in ``choice.indices`` order."""
    vol = result.volume
    if vol.series.format != "dicom" or not vol.slice_files or not vol.slice_uids:
        raise ExportError(
            f"DICOM SEG/SR/key image need a DICOM source series; {vol.series.source_path or 'the input'} "
            f"is {vol.series.format!r} without per-slice DICOM files. Analyse the DICOM series instead."
        )
    headers = []
    for k in result.choice.indices:
        path = vol.slice_files[k]
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001 - any read failure is an export failure here
            raise ExportError(f"cannot re-read source image {path} for the DICOM outputs: {exc}") from exc
        if str(ds.get("SOPInstanceUID", "")) != vol.slice_uids[k]:
            raise ExportError(
                f"source image {path} has SOPInstanceUID {ds.get('SOPInstanceUID', '')!r}, expected "
                f"{vol.slice_uids[k]!r} for slice {k}; the files changed since the analysis"
            )
        headers.append(ds)
    return headers


def display_to_source(labels: np.ndarray, affine: np.ndarray, k: int, header: Dataset) -> np.ndarray:
    """Resample a display-oriented label map of slice ``k`` onto ``header``'s pixel grid.

    Each source pixel centre is mapped to patient mm with the header's
    ImagePositionPatient/ImageOrientationPatient/PixelSpacing, then into display (i, j, k)
    with the volume affine; axial flips and transposes become exact integer re-indexing.
    """
    rows, cols = int(header.Rows), int(header.Columns)
    ipp = np.array([float(v) for v in header.ImagePositionPatient])
    iop = np.array([float(v) for v in header.ImageOrientationPatient])
    row_mm, col_mm = (float(v) for v in header.PixelSpacing)
    r, c = np.mgrid[0:rows, 0:cols]
    # DICOM: first IOP triplet = direction of increasing column index, second = increasing row.
    pts = (ipp[:, None, None] + iop[:3, None, None] * (c * col_mm) + iop[3:, None, None] * (r * row_mm))
    inv = np.linalg.inv(affine)
    ijk = np.tensordot(inv[:3, :3], pts, axes=1) + inv[:3, 3][:, None, None]
    i = np.rint(ijk[0]).astype(np.int64)
    j = np.rint(ijk[1]).astype(np.int64)
    if np.max(np.abs(ijk[2] - k)) > 0.5:
        raise ExportError(
            f"source image {header.get('SOPInstanceUID', '')} does not lie on display slice {k} "
            "(geometry mismatch between the volume and its files)"
        )
    h, w = labels.shape
    inside = (i >= 0) & (i < w) & (j >= 0) & (j < h)
    out = np.zeros((rows, cols), dtype=np.uint8)
    out[inside] = labels[j[inside], i[inside]]
    return out


def _algorithm(result: AnalysisResult):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    seg = result.segmenter
    family = codes.cid7162.ArtificialIntelligence if seg.sha256 else codes.cid7162.HistogramAnalysis
    return hd.AlgorithmIdentificationSequence(
        name=f"sarcoscope {seg.name}"[:64], family=family, version=seg.version[:64] or __version__
    )


def segment_descriptions(result: AnalysisResult) -> list:
    """One SegmentDescription per tissue class; segment number = our label value."""
    import highdicom as hd

    algo = _algorithm(result)
    out = []
    for tissue in Tissue:
        info = TISSUE_INFO[tissue]
        out.append(
            hd.seg.SegmentDescription(
                segment_number=int(tissue),
                segment_label=info.label,
                segmented_property_category=hd.sr.CodedConcept(*info.category_code),
                segmented_property_type=hd.sr.CodedConcept(*info.type_code),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algo,
                tracking_uid=result_uid(result, f"tracking-{info.key}"),
                tracking_id=f"sarcoscope {info.key}",
            )
        )
    return out


@dataclass(frozen=True)
class SegFrames:
    """Which SEG frame holds (segment number, source SOPInstanceUID)."""

    frames: dict[tuple[int, str], int]

    @classmethod
    def of(cls, seg: Dataset) -> "SegFrames":
        out: dict[tuple[int, str], int] = {}
        for n, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
            segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            src = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
            out[(segment, src)] = n
        return cls(out)


def build_seg(result: AnalysisResult, headers: Sequence[Dataset] | None = None) -> Dataset:
    """The highdicom Segmentation of ``result`` (BINARY, 4 segments, one frame per segment
    per analysed slice — empty frames kept so every tissue/slice has a frame the SR can cite)."""
    import highdicom as hd

    headers = list(headers) if headers is not None else source_headers(result)
    masks = np.stack(
        [
            display_to_source(lm.labels, result.volume.affine, lm.slice_index, h)
            for lm, h in zip(result.label_maps, headers)
        ]
    )
    seg = hd.seg.Segmentation(
        source_images=headers,
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(result),
        series_instance_uid=result_uid(result, "seg-series"),
        series_number=SERIES_NUMBERS["seg"],
        sop_instance_uid=result_uid(result, "seg-instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=software_versions(result),
        device_serial_number=DEVICE_SERIAL,
        series_description=SERIES_DESCRIPTIONS["seg"],
        content_label="SARCOSCOPE",
        content_description="L3 muscle IMAT VAT SAT",
        omit_empty_frames=False,
    )
    return seg


def write_seg(result: AnalysisResult, path: Path, headers: Sequence[Dataset] | None = None) -> Path:
    """Write the SEG to ``path`` (temporary name, then rename)."""
    seg = build_seg(result, headers)
    return save_dataset(seg, path)


def save_dataset(ds: Dataset, path: Path) -> Path:
    """Save a DICOM object atomically; ExportError naming the path on failure."""
    import os

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{path}: cannot write DICOM output ({exc.strerror or exc})") from exc
    return path
