"""DICOM reading on synthetic series written with pydicom: inputs, orientation, HU, padding."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian

from sarcoscope.errors import InputError
from sarcoscope.io import discover_series, load_series, read_ct, source_to_display_index
from sarcoscope.tissues import AIR_HU
from tests.unit.test_io_factory import expected_display_hu, make_slice, write_series

ORIENTATIONS = {
    "standard": (1, 0, 0, 0, 1, 0),
    "flipped_rows": (1, 0, 0, 0, -1, 0),
    "flipped_cols": (-1, 0, 0, 0, 1, 0),
    "rotated_180": (-1, 0, 0, 0, -1, 0),
    "transposed": (0, 1, 0, 1, 0, 0),
    "transposed_flipped": (0, -1, 0, -1, 0, 0),
}


def _check_display_axes(volume) -> None:
    """i must step towards patient left (+x), j posterior (+y), k superior (+z)."""
    a = volume.affine
    assert a[0, 0] > 0 and a[1, 1] > 0 and a[2, 2] > 0, a.round(3).tolist()


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_any_axis_aligned_orientation_lands_in_display_convention(tmp_path: Path, name: str) -> None:
    write_series(tmp_path, n=4, orientation=ORIENTATIONS[name], dz=2.5)
    vol = read_ct(tmp_path)
    _check_display_axes(vol)
    np.testing.assert_array_equal(vol.hu.astype(np.int32), expected_display_hu(vol))
    assert vol.spacing_mm == pytest.approx((2.5, 1.0, 1.0))


def test_slices_sorted_by_position_not_instance_number(tmp_path: Path) -> None:
    # Positions written superior → inferior while instance numbers are shuffled.
    paths = write_series(tmp_path, n=6, z0=-90.0, dz=-3.0)
    vol = read_ct(tmp_path)
    zs = [vol.z_mm(k) for k in range(vol.n_slices)]
    assert zs == sorted(zs) and zs[0] == pytest.approx(-105.0)
    # display slice 0 is the most inferior file, the last one written
    assert vol.slice_files[0] == str(paths[-1])
    uids = [pydicom.dcmread(p).SOPInstanceUID for p in paths]
    assert vol.slice_uids == tuple(reversed(uids))
    assert vol.series.format == "dicom" and vol.source_grid is not None
    assert source_to_display_index(vol, 2) == 2


def test_source_grid_maps_display_back_to_stored_rows_and_columns(tmp_path: Path) -> None:
    write_series(tmp_path, n=3, orientation=ORIENTATIONS["transposed_flipped"])
    vol = read_ct(tmp_path)
    stored = vol.source_grid.to_source(vol.hu)
    assert stored.shape == vol.source_grid.shape
    datasets = [pydicom.dcmread(p) for p in tmp_path.glob("*.dcm")]
    ds = min(datasets, key=lambda d: float(d.ImagePositionPatient[2]))  # stored slice 0: most inferior
    np.testing.assert_array_equal(stored[0], ds.pixel_array.astype(np.int32) - 1024)


def test_padding_value_becomes_air_and_is_counted(tmp_path: Path) -> None:
    write_series(tmp_path, n=3, padding_value=63536 - 65536, pixel_representation=1)
    vol = read_ct(tmp_path)
    assert np.all(vol.hu[:, :2, :2] == AIR_HU)  # corner rows/cols not flipped in standard orientation
    assert vol.padding_fraction == pytest.approx(4 / (16 * 20))
    assert vol.hu.min() >= -1024


def test_unmarked_padding_far_below_air_is_masked_with_a_warning(tmp_path: Path) -> None:
    def fn(x, y, z):
        hu = np.full(x.shape, 40)
        hu[: x.shape[0] // 2] = -2048  # half the slice at a constant impossible value
        return hu

    write_series(tmp_path, n=2, hu_fn=fn, intercept=-3000)
    vol = read_ct(tmp_path)
    assert vol.hu.min() == AIR_HU
    assert vol.padding_fraction == pytest.approx(0.5)
    assert any("padding" in w and "-2048" in w for w in vol.series.warnings)


def test_non_integral_rescale_gives_float32_hu(tmp_path: Path) -> None:
    write_series(tmp_path, n=2, slope=0.5, intercept=-1000.25)
    vol = read_ct(tmp_path)
    assert vol.hu.dtype == np.float32
    np.testing.assert_allclose(vol.hu, expected_display_hu(vol), atol=0.26)


def test_integral_rescale_gives_int16_and_signed_pixels_work(tmp_path: Path) -> None:
    write_series(tmp_path, n=2, pixel_representation=1, intercept=0)
    vol = read_ct(tmp_path)
    assert vol.hu.dtype == np.int16
    np.testing.assert_array_equal(vol.hu, expected_display_hu(vol))


def test_single_file_and_single_slice_spacing(tmp_path: Path) -> None:
    paths = write_series(tmp_path, n=1, thickness=2.5)
    vol = read_ct(paths[0])
    assert vol.n_slices == 1 and vol.spacing_mm[0] == pytest.approx(2.5)
    assert any("SliceThickness 2.5 mm used" in w for w in vol.series.warnings)
    other = write_series(tmp_path / "b", n=1, thickness=None)
    vol = read_ct(other[0])
    assert vol.spacing_mm[0] == pytest.approx(1.0)
    assert any("set to 1.0 mm" in w for w in vol.series.warnings)


def test_zip_with_subfolders_is_read_without_extracting(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "src", n=4)
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in paths:
            zf.write(p, f"PATIENT/STUDY/{p.name}")
        zf.writestr("README.txt", "not dicom")
    vol = read_ct(archive)
    assert vol.n_slices == 4
    np.testing.assert_array_equal(vol.hu.astype(np.int32), expected_display_hu(vol))
    assert vol.slice_files[0].startswith(f"{archive}!PATIENT/STUDY/")
    assert vol.series.source_path == str(archive)
    assert any("1 non-DICOM file(s) skipped" in w for w in vol.series.warnings)


def test_recursive_folder_with_junk_counts_skipped_files(tmp_path: Path) -> None:
    write_series(tmp_path / "a" / "b", n=3)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "a" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    vol = read_ct(tmp_path)
    assert vol.n_slices == 3
    assert any("2 non-DICOM file(s) skipped" in w for w in vol.series.warnings)


def test_dicom_without_image_is_skipped_not_junk(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    write_series(tmp_path, n=2)
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID
    sr.Modality = "SR"
    sr.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    vol = read_ct(tmp_path)
    assert vol.n_slices == 2
    assert any("1 DICOM file(s) without an image skipped" in w for w in vol.series.warnings)
    assert not any("non-DICOM" in w for w in vol.series.warnings)


def test_file_without_preamble_is_read(tmp_path: Path) -> None:
    ds = make_slice(position=(0, 0, -50))
    del ds.file_meta
    buffer = pydicom.filebase.DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = True, True
    pydicom.filewriter.write_dataset(buffer, ds)  # implicit VR little endian, no preamble, no meta
    target = tmp_path / "IM0001"
    target.write_bytes(buffer.getvalue())
    vol = read_ct(target)
    assert vol.n_slices == 1
    np.testing.assert_array_equal(vol.hu.astype(np.int32), expected_display_hu(vol))


def test_dicomdir_lists_the_files(tmp_path: Path) -> None:
    from pydicom.fileset import FileSet

    src = write_series(tmp_path / "src", n=3)
    fs = FileSet()
    for p in src:
        ds = pydicom.dcmread(p)
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        fs.add(ds)
    out = tmp_path / "media"
    fs.write(out)
    vol = read_ct(out / "DICOMDIR")
    assert vol.n_slices == 3
    np.testing.assert_array_equal(vol.hu.astype(np.int32), expected_display_hu(vol))
    # the folder itself works too: the DICOMDIR is not counted as junk
    vol2 = read_ct(out)
    assert vol2.n_slices == 3
    assert not any("non-DICOM" in w for w in vol2.series.warnings)


def test_empty_uids_still_assemble_the_series(tmp_path: Path) -> None:
    paths = write_series(tmp_path, n=4, series_uid="", sop_uid="")
    vol = read_ct(tmp_path)
    assert vol.n_slices == 4
    metas = {pydicom.dcmread(p).file_meta.MediaStorageSOPInstanceUID for p in paths}
    assert set(vol.slice_uids) == metas and all(vol.slice_uids)
    assert any("SeriesInstanceUID is empty" in w for w in vol.series.warnings)
    assert any("MediaStorageSOPInstanceUID" in w for w in vol.series.warnings)


def test_patient_values_parsed_and_nonsense_ignored_no_names(tmp_path: Path) -> None:
    write_series(
        tmp_path / "good", n=2, patient={"PatientSex": "F", "PatientSize": "1.62", "PatientWeight": "70", "PatientAge": "055Y"}
    )
    vol = read_ct(tmp_path / "good")
    assert (vol.patient.sex, vol.patient.height_m, vol.patient.weight_kg, vol.patient.age_years) == ("F", 1.62, 70.0, 55.0)
    write_series(
        tmp_path / "bad", n=2, patient={"PatientSex": "O", "PatientSize": "172", "PatientWeight": "0", "PatientAge": "000Y"}
    )
    vol = read_ct(tmp_path / "bad")
    assert vol.patient.sex is None and vol.patient.height_m is None and vol.patient.weight_kg is None
    assert vol.patient.age_years is None
    text = " ".join(vol.series.warnings)
    assert "looks like centimetres" in text and "PatientWeight" in text and "placeholder" in text
    everything = repr(vol.series) + repr(vol.patient)
    assert "Secret" not in everything and "SECRET-ID" not in everything


def test_load_series_decodes_only_an_evenly_spaced_subset(tmp_path: Path) -> None:
    write_series(tmp_path, n=9, dz=1.5)
    full = read_ct(tmp_path)
    (candidate,) = discover_series(tmp_path)
    part = load_series(candidate, range(1, 9, 3))
    assert part.n_slices == 3
    np.testing.assert_array_equal(part.hu, full.hu[1:9:3])
    assert part.spacing_mm[0] == pytest.approx(4.5)
    assert part.z_mm(0) == pytest.approx(full.z_mm(1)) and part.z_mm(2) == pytest.approx(full.z_mm(7))
    assert part.source_grid is None
    with pytest.raises(InputError, match="not evenly spaced"):
        load_series(candidate, [0, 1, 5])
    with pytest.raises(InputError, match="outside the series' 0…8"):
        load_series(candidate, range(5, 12))


def test_open_dicom_plans_from_headers_then_loads_a_subset(tmp_path: Path) -> None:
    from sarcoscope.io import open_dicom

    write_series(tmp_path / "ct", n=8, dz=2.0, z0=-40)
    (tmp_path / "ct" / "junk.txt").write_text("x")
    opened = open_dicom(tmp_path / "ct")
    assert opened.n_slices == 8
    assert [round(opened.plan.z_mm(k), 3) for k in (0, 7)] == [-40.0, -26.0]
    part = opened.load(range(2, 8, 2))
    assert part.n_slices == 3 and part.z_mm(0) == pytest.approx(-36.0)
    assert part.series.selection_reason == "the only axial CT series in the input"
    assert any("1 non-DICOM file(s) skipped" in w for w in part.series.warnings)
    assert part.series.source_path == str(tmp_path / "ct")


def test_parallel_decoding_matches_serial(tmp_path: Path) -> None:
    write_series(tmp_path, n=6)
    (candidate,) = discover_series(tmp_path)
    serial = load_series(candidate, workers=1)
    parallel = load_series(candidate, workers=2)
    np.testing.assert_array_equal(serial.hu, parallel.hu)


def test_implicit_vr_transfer_syntax(tmp_path: Path) -> None:
    ds = make_slice(position=(0, 0, -40))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    vol = read_ct(tmp_path / "a.dcm")
    np.testing.assert_array_equal(vol.hu.astype(np.int32), expected_display_hu(vol))
