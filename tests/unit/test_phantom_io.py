"""Phantom writers: DICOM series and NIfTI round trips (geometry, rescale, UIDs, identity)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sarcoscope.errors import ExportError
from sarcoscope.phantom import PhantomParams, make_demo_study, make_volume, write_dicom_series, write_nifti

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")


@pytest.fixture(scope="module")
def small_volume():
    p = PhantomParams(seed=77, matrix=(96, 112), pixel_spacing_mm=3.5, metal_implant=False)
    return make_volume(p, z_range_mm=(-10.0, 30.0), n_slices=6, slice_thickness_mm=3.0, template_step_mm=20.0)


def _read_sorted(paths):
    dss = [pydicom.dcmread(p) for p in paths]
    return sorted(dss, key=lambda d: float(d.ImagePositionPatient[2]))


def test_dicom_round_trip_hfs(small_volume, tmp_path: Path):
    vol = small_volume.volume
    paths = write_dicom_series(vol, tmp_path / "hfs")
    assert len(paths) == vol.n_slices and all(p.exists() for p in paths)
    dss = _read_sorted(paths)
    uids = {d.SOPInstanceUID for d in dss}
    assert len(uids) == vol.n_slices
    assert len({d.SeriesInstanceUID for d in dss}) == 1 and len({d.StudyInstanceUID for d in dss}) == 1
    assert len({d.FrameOfReferenceUID for d in dss}) == 1
    for k, d in enumerate(dss):
        assert d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        assert str(d.PatientName) == "SARCOSCOPE^PHANTOM" and d.PatientID == "PHANTOM-77"
        assert d.Modality == "CT" and d.PatientPosition == "HFS"
        assert [float(x) for x in d.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        np.testing.assert_allclose([float(x) for x in d.ImagePositionPatient], (vol.affine @ [0, 0, k, 1])[:3], atol=1e-3)
        assert [float(x) for x in d.PixelSpacing] == pytest.approx(list(vol.pixel_spacing_mm))
        assert float(d.SliceThickness) == pytest.approx(3.0)
        hu = d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
        np.testing.assert_array_equal(hu, vol.hu[k])
    d0 = dss[0]
    assert d0.PatientSex == "M" and float(d0.PatientSize) == pytest.approx(1.75)
    assert float(d0.PatientWeight) == pytest.approx(78.0) and d0.PatientAge == "060Y"


def test_dicom_ffs_and_optional_patient_fields(small_volume, tmp_path: Path):
    vol = small_volume.volume
    paths = write_dicom_series(vol, tmp_path / "ffs", patient_position="FFS", include_patient_size=False,
                               include_patient_weight=False, study_uid="1.2.3.4", series_uid="1.2.3.4.5")
    dss = _read_sorted(paths)
    d = dss[2]
    assert d.PatientPosition == "FFS" and d.StudyInstanceUID == "1.2.3.4" and d.SeriesInstanceUID == "1.2.3.4.5"
    assert "PatientSize" not in d and "PatientWeight" not in d
    iop = np.array([float(x) for x in d.ImageOrientationPatient])
    assert iop.tolist() == [-1, 0, 0, 0, 1, 0]
    # a stored pixel (r, c) lies at IPP + c*colspacing*rowdir + r*rowspacing*coldir: same anatomy
    hu = d.pixel_array.astype(np.float32) - 1024.0
    ipp = np.array([float(x) for x in d.ImagePositionPatient])
    r, c = 40, 10
    world = ipp + c * float(d.PixelSpacing[1]) * iop[:3] + r * float(d.PixelSpacing[0]) * iop[3:]
    ijk = np.linalg.solve(vol.affine, np.append(world, 1.0))[:3]
    i, j, k = (int(round(v)) for v in ijk)
    assert k == 2 and hu[r, c] == vol.hu[k, j, i]
    # instance numbers run from the feet up in a feet-first scan
    assert [int(x.InstanceNumber) for x in dss] == list(range(1, len(dss) + 1))


@pytest.mark.parametrize("syntax", ["rle", "jpeg2000", "jpegls", "implicit-le"])
def test_dicom_compressed_syntaxes_decode_losslessly(small_volume, tmp_path: Path, syntax):
    vol = small_volume.volume
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless, ImplicitVRLittleEndian

    expect = {"rle": RLELossless, "jpeg2000": JPEG2000Lossless, "jpegls": JPEGLSLossless,
              "implicit-le": ImplicitVRLittleEndian}[syntax]
    paths = write_dicom_series(vol, tmp_path / syntax, transfer_syntax=syntax)
    dss = _read_sorted(paths)
    for k in (0, len(dss) - 1):
        d = dss[k]
        assert d.file_meta.TransferSyntaxUID == expect
        np.testing.assert_array_equal(d.pixel_array.astype(np.float32) - 1024.0, vol.hu[k])


def test_dicom_bad_options_raise_export_errors(small_volume, tmp_path: Path):
    with pytest.raises(ExportError, match="transfer_syntax 'jpeg-xl' is not supported"):
        write_dicom_series(small_volume.volume, tmp_path / "x", transfer_syntax="jpeg-xl")
    with pytest.raises(ExportError, match="patient_position 'HFP'"):
        write_dicom_series(small_volume.volume, tmp_path / "x", patient_position="HFP")  # type: ignore[arg-type]


def test_nifti_round_trip(small_volume, tmp_path: Path):
    vol = small_volume.volume
    path = write_nifti(vol, tmp_path / "ct.nii.gz")
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    assert data.dtype == np.int16 and data.shape == (vol.hu.shape[2], vol.hu.shape[1], vol.hu.shape[0])
    np.testing.assert_array_equal(np.transpose(data, (2, 1, 0)), vol.hu)
    # RAS affine: voxel (i, j, k) → (-x, -y, z) of our LPS affine
    ijk = np.array([5, 7, 3, 1.0])
    lps = vol.affine @ ijk
    ras = img.affine @ ijk
    np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-4)
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    lab = nib.load(str(write_nifti(vol, tmp_path / "lab.nii", labels=small_volume.labels)))
    np.testing.assert_array_equal(np.transpose(np.asarray(lab.dataobj), (2, 1, 0)), small_volume.labels)


def test_demo_study(tmp_path: Path):
    folder = make_demo_study(tmp_path / "demo", seed=3)
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == 60
    d = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert (d.Rows, d.Columns) == (512, 512) and d.PatientID == "PHANTOM-3"
