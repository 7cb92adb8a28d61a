"""Round trips of the DICOM result writers (SEG, TID 1500 SR, Secondary Capture).

Written with our exporters, read back with highdicom/pydicom: the SEG's masks equal our label
maps on the source grid (also for a flipped row direction), the SR carries the numbers and
references the SEG, the key image is marked not for diagnostic use. ``write_ct_series`` and
``make_result`` are reused by the PACS integration tests.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset, Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from sarcoscope import __version__
from sarcoscope.errors import ExportError
from sarcoscope.tissues import TISSUE_INFO, Tissue
from sarcoscope.types import (
    AnalysisResult,
    CTVolume,
    Flag,
    LabelMap,
    Measurements,
    PatientInfo,
    SegmenterInfo,
    SeriesInfo,
    SliceChoice,
    TissueMeasurement,
)

ROW_MM, COL_MM, Z_MM = 0.8, 0.7, 2.5


def write_ct_series(
    out_dir: Path, n: int = 3, rows: int = 48, cols: int = 40, *, flip_rows: bool = False,
    study_uid: str | None = None, patient_id: str = "SARCO-TEST-1", accession: str = "ACC0001",
    seed: int = 0,
) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Write a small CT series; return (paths in display order, display HU (k,j,i), display affine).

    ``flip_rows`` stores rows posterior→anterior (ImageOrientationPatient 1,0,0,0,-1,0), so the
    stored grid is the display grid upside down.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hu = rng.integers(-200, 200, size=(n, rows, cols)).astype(np.int16)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    x0, y0, z0 = -cols * COL_MM / 2, -rows * ROW_MM / 2, -100.0
    paths = []
    for k in range(n):
        stored = hu[k][::-1] if flip_rows else hu[k]
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        sop = generate_uid()
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName, ds.PatientID, ds.PatientSex = "Test^Phantom", patient_id, "M"
        ds.PatientBirthDate, ds.AccessionNumber, ds.StudyID = "19600101", accession, "1"
        ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = "20240101", "120000", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 2, k + 1
        ds.SeriesDescription, ds.Manufacturer = "ABDOMEN 2.5mm", "TEST"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PositionReferenceIndicator = ""
        if flip_rows:
            ds.ImageOrientationPatient = [1, 0, 0, 0, -1, 0]
            ds.ImagePositionPatient = [x0, y0 + (rows - 1) * ROW_MM, z0 + k * Z_MM]
        else:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [x0, y0, z0 + k * Z_MM]
        ds.PixelSpacing = [ROW_MM, COL_MM]
        ds.SliceThickness = Z_MM
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        path = out_dir / f"{sop}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    affine = np.array(
        [[COL_MM, 0, 0, x0], [0, ROW_MM, 0, y0], [0, 0, Z_MM, z0], [0, 0, 0, 1]], dtype=float
    )
    return paths, hu, affine


def known_labels(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Asymmetric label map (so a flip would show): SAT ring, muscle block, VAT blob, IMAT dots."""
    lab = np.zeros((rows, cols), dtype=np.uint8)
    lab[2:rows - 2, 2:cols - 2] = 4
    lab[6:rows - 6, 6:cols - 6] = 3
    lab[rows // 2: rows - 8, 8: cols // 2] = 1
    lab[rows // 2 + 2, 10:14] = 2
    lab[5, 3] = 2
    return lab


def make_result(paths: list[Path], hu: np.ndarray, affine: np.ndarray, indices=(1,), *,
                height_m: float | None = 1.75, segmenter_sha: str | None = None,
                drop_imat: bool = False) -> AnalysisResult:
    with_uids = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]
    ds0 = dcmread(paths[0], stop_before_pixels=True)
    volume = CTVolume(
        hu=hu, affine=affine,
        series=SeriesInfo(source_path=str(paths[0].parent), format="dicom",
                          study_uid=str(ds0.StudyInstanceUID), series_uid=str(ds0.SeriesInstanceUID),
                          frame_of_reference_uid=str(ds0.FrameOfReferenceUID)),
        patient=PatientInfo(sex="M", height_m=height_m),
        slice_uids=tuple(with_uids), slice_files=tuple(str(p) for p in paths),
    )
    label_maps, measurements = [], []
    for k in indices:
        lab = known_labels(hu.shape[1], hu.shape[2])
        if drop_imat:
            lab[lab == 2] = 0
        lm = LabelMap(lab, k, (ROW_MM, COL_MM))
        tissues = {}
        for t in Tissue:
            mask = lab == int(t)
            n = int(mask.sum())
            mean = float(hu[k][mask].mean()) if n else math.nan
            sd = float(hu[k][mask].std()) if n else math.nan
            tissues[TISSUE_INFO[t].key] = TissueMeasurement(n * lm.pixel_area_cm2, mean, sd, n)
        smi = tissues["muscle"].area_cm2 / height_m**2 if height_m else None
        flags = (Flag("sarcopenia", "prado2008", smi or 0.0, 52.4, "cm2/m2", True),) if smi else ()
        measurements.append(Measurements(
            slice_index=k, z_mm=float(affine[2, 3] + k * Z_MM), tissues=tissues,
            muscle_low_attenuation_cm2=1.25, muscle_normal_attenuation_cm2=2.5,
            smi_cm2_m2=smi, vat_sat_ratio=tissues["vat"].area_cm2 / tissues["sat"].area_cm2, flags=flags))
        label_maps.append(lm)
    choice = SliceChoice(indices=tuple(indices), z_mm=tuple(m.z_mm for m in measurements), method="manual")
    return AnalysisResult(volume, choice, tuple(label_maps), tuple(measurements),
                          SegmenterInfo("baseline", "0.1.0", segmenter_sha), "prado2008")


def seg_masks_by_source(seg_path: Path) -> dict[str, np.ndarray]:
    """Read a SEG back with highdicom: {source SOPInstanceUID: label map (rows, cols)}."""
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    out = {}
    for src_uid in {s[2] for s in seg.get_source_image_uids()}:
        arr = seg.get_pixels_by_source_instance([src_uid], combine_segments=True, relabel=False)
        out[src_uid] = np.asarray(arr[0]).astype(np.uint8)
    return out


@pytest.mark.parametrize("flip_rows", [False, True])
def test_seg_round_trip_masks_equal_ours(tmp_path: Path, flip_rows: bool) -> None:
    from sarcoscope.export.dicom_seg import write_seg

    paths, hu, affine = write_ct_series(tmp_path / "ct", flip_rows=flip_rows)
    result = make_result(paths, hu, affine, indices=(0, 2))
    out = write_seg(result, tmp_path / "seg.dcm")
    masks = seg_masks_by_source(out)
    assert set(masks) == {result.volume.slice_uids[0], result.volume.slice_uids[2]}
    for lm in result.label_maps:
        got = masks[result.volume.slice_uids[lm.slice_index]]
        expected = lm.labels[::-1] if flip_rows else lm.labels  # stored grid of the source file
        np.testing.assert_array_equal(got, expected)
        if flip_rows:
            assert not np.array_equal(got, lm.labels)  # the flip really mattered
    ds = dcmread(out)
    assert ds.Manufacturer == "sarcoscope"
    assert f"sarcoscope {__version__}" in list(ds.SoftwareVersions)
    assert ds.StudyInstanceUID == result.volume.series.study_uid
    assert ds.SeriesInstanceUID != result.volume.series.series_uid
    assert [s.SegmentLabel for s in ds.SegmentSequence] == [TISSUE_INFO[t].label for t in Tissue]
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in ds.SegmentSequence] == [
        TISSUE_INFO[t].type_code[0] for t in Tissue
    ]
    assert ds.PatientID == "SARCO-TEST-1"  # same patient/study as the source


def test_seg_uids_are_deterministic(tmp_path: Path) -> None:
    from sarcoscope.export.dicom_seg import build_seg

    paths, hu, affine = write_ct_series(tmp_path / "ct")
    a = build_seg(make_result(paths, hu, affine))
    b = build_seg(make_result(paths, hu, affine))
    c = build_seg(make_result(paths, hu, affine, segmenter_sha="ab" * 32))
    assert (a.SOPInstanceUID, a.SeriesInstanceUID) == (b.SOPInstanceUID, b.SeriesInstanceUID)
    assert a.SOPInstanceUID != c.SOPInstanceUID


def test_seg_needs_dicom_source(tmp_path: Path) -> None:
    from sarcoscope.export.dicom_seg import write_seg

    paths, hu, affine = write_ct_series(tmp_path / "ct")
    result = make_result(paths, hu, affine)
    vol = result.volume
    nifti_vol = CTVolume(hu=vol.hu, affine=vol.affine, series=SeriesInfo("x.nii.gz", "nifti"))
    nifti_result = AnalysisResult(nifti_vol, result.choice, result.label_maps, result.measurements,
                                  result.segmenter, result.reference)
    with pytest.raises(ExportError, match=r"x\.nii\.gz.*'nifti'.*Analyse the DICOM series"):
        write_seg(nifti_result, tmp_path / "seg.dcm")


def test_sr_round_trip_numbers_and_reference(tmp_path: Path) -> None:
    import highdicom as hd
    from sarcoscope.export.dicom_seg import build_seg
    from sarcoscope.export.dicom_sr import write_sr

    paths, hu, affine = write_ct_series(tmp_path / "ct")
    result = make_result(paths, hu, affine, drop_imat=True)
    seg = build_seg(result)
    out = write_sr(result, tmp_path / "sr.dcm", seg=seg)
    sr = hd.sr.srread(out)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.Manufacturer == "sarcoscope"
    ev = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    cited = {i.ReferencedSOPInstanceUID for s in ev for i in s.ReferencedSOPSequence}
    assert seg.SOPInstanceUID in cited
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 4
    m = result.measurements[0]
    by_type = {g.finding_type.value: g for g in groups}
    for t in Tissue:
        info = TISSUE_INFO[t]
        g = by_type[info.type_code[0]]
        ref = g.referenced_segmentation_frame
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert list(ref.referenced_segment_numbers) == [int(t)]
        assert ref.source_image_for_segmentation.referenced_sop_instance_uid == result.volume.slice_uids[1]
        area = g.get_measurements(name=hd.sr.CodedConcept("42798000", "SCT", "Area"))[0]
        assert area.value == pytest.approx(m.tissues[info.key].area_cm2, rel=1e-6)
        means = g.get_measurements(name=hd.sr.CodedConcept("373098007", "SCT", "Mean"))
        if t is Tissue.IMAT:
            assert means == []  # absent tissue: no mean HU, never a 0
        else:
            assert means[0].value == pytest.approx(m.tissues[info.key].mean_hu, rel=1e-6)
    muscle = by_type[TISSUE_INFO[Tissue.MUSCLE].type_code[0]]
    smi = muscle.get_measurements(name=hd.sr.CodedConcept("SMI", "99SARCO", "Skeletal muscle index"))
    assert smi[0].value == pytest.approx(m.smi_cm2_m2, rel=1e-6)
    evals = muscle.get_qualitative_evaluations()
    assert len(evals) == 1 and evals[0].value.value == "52101004"  # Present


def test_sr_without_height_has_no_smi(tmp_path: Path) -> None:
    import highdicom as hd
    from sarcoscope.export.dicom_sr import build_sr

    paths, hu, affine = write_ct_series(tmp_path / "ct")
    sr = build_sr(make_result(paths, hu, affine, height_m=None))
    path = tmp_path / "sr.dcm"
    sr.save_as(path)
    groups = hd.sr.srread(path).content.get_planar_roi_measurement_groups()
    names = {m.name.value for g in groups for m in g.get_measurements()}
    assert "SMI" not in names and "42798000" in names


def test_secondary_capture_marked_and_in_study(tmp_path: Path) -> None:
    from sarcoscope.export.secondary_capture import WARNING_TEXT, write_secondary_capture

    paths, hu, affine = write_ct_series(tmp_path / "ct")
    result = make_result(paths, hu, affine)
    rgb = np.zeros((60, 80, 3), dtype=np.uint8)
    rgb[..., 1] = 128
    out = write_secondary_capture(result, rgb, tmp_path / "sc.dcm")
    ds = dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert ds.StudyInstanceUID == result.volume.series.study_uid
    assert ds.BurnedInAnnotation == "YES" and "NOT FOR DIAGNOSTIC USE" in ds.ImageComments
    assert "NOT FOR DIAGNOSTIC USE" in ds.SeriesDescription
    px = ds.pixel_array
    assert px.shape[0] > 60 and px.shape[1] == 80  # banner added on top
    banner = px[: px.shape[0] - 60]
    assert (banner == (200, 30, 30)).all(axis=-1).mean() > 0.5  # red banner
    assert (banner == (255, 255, 255)).all(axis=-1).any()  # with white text
    np.testing.assert_array_equal(px[px.shape[0] - 60:], rgb)  # picture unchanged below it
    assert WARNING_TEXT.startswith("NOT FOR DIAGNOSTIC USE")


def test_secondary_capture_references_the_shown_slice(tmp_path: Path) -> None:
    from sarcoscope.export.secondary_capture import build_secondary_capture

    paths, hu, affine = write_ct_series(tmp_path / "ct")
    result = make_result(paths, hu, affine, indices=(0, 2))
    rgb = np.zeros((20, 20, 3), dtype=np.uint8)
    assert build_secondary_capture(result, rgb).SourceImageSequence[0].ReferencedSOPInstanceUID == \
        result.volume.slice_uids[0]
    sc = build_secondary_capture(result, rgb, shown_index=2)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == result.volume.slice_uids[2]
