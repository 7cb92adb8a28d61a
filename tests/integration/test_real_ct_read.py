"""Every real file in ../shared/data/real-ct is read correctly or refused with its specific message.

Orientation is checked twice: exactly, against the stored pixels flipped the way the header's
ImageOrientationPatient says, and anatomically (the spine lies in the posterior half of the
body, i.e. anterior is up in ``hu[k]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from sarcoscope.errors import InputError
from sarcoscope.io import discover_series, load_series, read_ct, source_to_display_index
from sarcoscope.tissues import AIR_HU


def _spine_depth(slice_hu: np.ndarray) -> float:
    """Where the midline bone sits between the front (0) and back (1) of the body."""
    labels, n = ndimage.label(slice_hu > -300)
    sizes = ndimage.sum(np.ones_like(slice_hu), labels, range(1, n + 1))
    body = labels == (int(np.argmax(sizes)) + 1)  # largest component: the body, not the table
    rows = np.nonzero(body.any(1))[0]
    cols = np.nonzero(body.any(0))[0]
    mid, half = (cols[0] + cols[-1]) // 2, (cols[-1] - cols[0]) // 10
    bone = (slice_hu > 200) & body
    bone[:, : mid - half] = False
    bone[:, mid + half :] = False
    return float((np.median(np.nonzero(bone)[0]) - rows[0]) / (rows[-1] - rows[0]))


def _stored_hu(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)


@pytest.fixture(scope="module")
def edge(real_ct: Path) -> Path:
    return real_ct / "edge-cases"


@pytest.fixture(scope="module")
def liver_dome(real_ct: Path):
    return read_ct(real_ct / "ts-liver-dome-j2k")


def test_liver_dome_j2k_series_assembled_without_uids(real_ct: Path, liver_dome) -> None:
    folder = real_ct / "ts-liver-dome-j2k"
    vol = liver_dome
    assert vol.hu.shape == (20, 512, 512) and vol.hu.dtype == np.int16
    assert vol.spacing_mm == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert vol.affine[2, 3] == pytest.approx(-804.5) and vol.z_mm(19) > vol.z_mm(0)
    # slice UIDs come from the file meta (the data sets' SOPInstanceUID is empty); names hold them
    names = {p.name[3:-4] for p in folder.glob("CT.*.dcm")}
    assert set(vol.slice_uids) == names
    assert vol.series.series_uid == "" and vol.series.frame_of_reference_uid
    text = " ".join(vol.series.warnings)
    assert "SeriesInstanceUID is empty" in text and "1 non-DICOM file(s) skipped" in text
    assert vol.patient.weight_kg == 79.0 and vol.patient.height_m is None
    assert vol.hu.min() >= AIR_HU and vol.hu.max() > 1000
    assert all(_spine_depth(vol.slice_hu(k)) > 0.55 for k in (0, 10, 19))
    # display slice 0 is the most inferior file
    first = pydicom.dcmread(vol.slice_files[0], stop_before_pixels=True)
    assert float(first.ImagePositionPatient[2]) == pytest.approx(-804.5)
    np.testing.assert_array_equal(vol.hu[0], _stored_hu(Path(vol.slice_files[0])))


def test_liver_dome_partial_decode_matches_full(real_ct: Path, liver_dome) -> None:
    (cand,) = discover_series(real_ct / "ts-liver-dome-j2k")
    part = load_series(cand, range(0, 20, 5), workers=1)
    np.testing.assert_array_equal(part.hu, liver_dome.hu[::5])
    assert part.spacing_mm[0] == pytest.approx(10.0)


def test_ge_feet_first_padding_masked(real_ct: Path) -> None:
    folder = real_ct / "ge-3slice-padding"
    vol = read_ct(folder)
    assert vol.hu.shape == (3, 512, 512)
    assert vol.spacing_mm == pytest.approx((1.0, 0.810547, 0.810547), rel=1e-5)
    assert not np.any(vol.hu == -3024) and vol.hu.min() == AIR_HU
    assert 0.15 < vol.padding_fraction < 0.3
    # files 01, 02, 03 step downwards (-126.69, -127.69, -128.69): display order is 03, 02, 01
    assert [Path(f).name for f in vol.slice_files] == ["03.dcm", "02.dcm", "01.dcm"]
    stored = _stored_hu(folder / "03.dcm")
    keep = stored != -3024
    np.testing.assert_array_equal(vol.hu[0][keep], stored[keep])
    assert np.all(vol.hu[0][~keep] == AIR_HU)
    assert all(_spine_depth(vol.slice_hu(k)) > 0.55 for k in range(3))
    assert vol.patient.sex == "M" and vol.patient.age_years == 60.0 and vol.patient.height_m is None
    assert source_to_display_index(vol, 2) == 2


def test_explicit_vr_un_flipped_rows_shown_anterior_up(edge: Path) -> None:
    path = edge / "explicit_VR-UN.dcm"
    vol = read_ct(path)
    assert vol.hu.shape == (1, 512, 512)
    # ImageOrientationPatient (1,0,0, 0,-1,0): stored row 0 is posterior; display flips the rows
    np.testing.assert_array_equal(vol.hu[0], _stored_hu(path)[::-1, :])
    assert _spine_depth(vol.slice_hu(0)) > 0.6
    assert vol.affine[1, 1] > 0 and vol.affine[1, 3] == pytest.approx(-511 * 0.859375)


def test_ect_multiframe_functional_groups(edge: Path) -> None:
    path = edge / "eCT_Supplemental.dcm"
    vol = read_ct(path)
    assert vol.hu.shape == (2, 512, 512)
    assert vol.spacing_mm == pytest.approx((10.0, 0.388672, 0.388672))
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array.astype(np.int32)  # frames at z -159 (frame 0) and -149 (frame 1)
    # rescale −1024 comes only from PixelValueTransformationSequence; columns run towards patient
    # right (orientation −1,0,0), so display flips them
    np.testing.assert_array_equal(vol.hu[0], raw[0][:, ::-1] - 1024)
    np.testing.assert_array_equal(vol.hu[1], raw[1][:, ::-1] - 1024)
    assert vol.patient.height_m == 1.6 and vol.patient.weight_kg == 75.0 and vol.patient.sex == "M"
    assert any("head or small-part scan" in w for w in vol.series.warnings)


def test_jpeg_ls_near_lossless_ct1(edge: Path) -> None:
    vol = read_ct(edge / "CT1_JLSN.dcm")
    assert vol.hu.shape == (1, 512, 512)
    assert vol.hu.min() == AIR_HU and 0.15 < vol.padding_fraction < 0.3
    assert vol.hu.max() > 500  # bone present
    text = " ".join(vol.series.warnings)
    assert "PatientSex 'O'" in text and "PatientWeight" in text and "PatientAge '000Y'" in text


def test_toshiba_j2k_regression_unmarked_padding(edge: Path) -> None:
    vol = read_ct(edge / "TOSHIBA_J2K_OpenJPEGv2Regression.dcm")
    assert not np.any(vol.hu == -2048)
    assert 0.15 < vol.padding_fraction < 0.3
    assert any("-2048" in w and "padding" in w for w in vol.series.warnings)
    assert _spine_depth(vol.slice_hu(0)) > 0.55


def test_elscint_jp2_head_read_with_warning(edge: Path) -> None:
    path = edge / "ELSCINT1_JP2vsJ2K.dcm"
    vol = read_ct(path)
    np.testing.assert_array_equal(vol.hu[0], _stored_hu(path))
    assert any("not an abdominal one" in w for w in vol.series.warnings)


def test_damaged_jpeg_lossless_refused(edge: Path) -> None:
    with pytest.raises(InputError, match=r"JPEGLossless_1s_1f_i_16_16_bad.dcm: the pixel data could not be decoded"):
        read_ct(edge / "JPEGLossless_1s_1f_i_16_16_bad.dcm")


def test_mr_refused(edge: Path) -> None:
    with pytest.raises(InputError, match=r"JPEGLossless_1s_1f_u_16_12.dcm\) is not CT \(modality MR\)"):
        read_ct(edge / "JPEGLossless_1s_1f_u_16_12.dcm")


def test_localizer_refused(edge: Path) -> None:
    with pytest.raises(InputError, match=r"MAROTECH_CT_JP2Lossy.dcm\) is a CT localizer .*a scout is not a cross-section"):
        read_ct(edge / "MAROTECH_CT_JP2Lossy.dcm")


@pytest.mark.parametrize("name", ["TOSHIBA_J2K_SIZ0_PixRep1.dcm", "TOSHIBA_J2K_SIZ1_PixRep0.dcm"])
def test_coronal_mpr_refused(edge: Path, name: str) -> None:
    with pytest.raises(InputError, match=rf"{name}\) is not an axial CT: its slices are coronal \(ImageType DERIVED/PRIMARY/MPR\)"):
        read_ct(edge / name)


def test_edge_case_folder_discovered_from_headers(edge: Path) -> None:
    cands = discover_series(edge)
    by_file = {Path(c.first.source.name).name: c for c in cands}
    assert by_file["JPEGLossless_1s_1f_u_16_12.dcm"].rejection.count("modality MR") == 1
    assert "scout" in by_file["MAROTECH_CT_JP2Lossy.dcm"].rejection
    assert by_file["explicit_VR-UN.dcm"].rejection is None
    # the two TOSHIBA MPR files share one SOP instance: one candidate, refused as coronal
    mpr = [c for c in cands if "MPR" in c.image_type]
    assert mpr and all("not an axial CT" in c.rejection for c in mpr)
