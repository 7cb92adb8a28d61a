"""Bad inputs give a specific error whose message names the file and says what is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sarcoscope.errors import GeometryError, InputError
from sarcoscope.io import read_ct
from tests.unit.test_io_factory import write_series


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nothere: no such file or folder"):
        read_ct(tmp_path / "nothere")


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"the folder is empty"):
        read_ct(tmp_path)


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x" * 300)
    (tmp_path / "b.bin").write_bytes(bytes(range(256)) * 3)
    with pytest.raises(InputError, match=r"no DICOM images found among 2 file\(s\) \(2 not DICOM"):
        read_ct(tmp_path)


def test_folder_with_only_nifti_points_at_the_file(tmp_path: Path) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)), str(tmp_path / "ct.nii.gz"))
    with pytest.raises(InputError, match=r"holds NIfTI file\(s\) such as .*ct.nii.gz: pass that file itself"):
        read_ct(tmp_path)


def test_single_non_dicom_file(tmp_path: Path) -> None:
    junk = tmp_path / "scan.dcm"
    junk.write_bytes(b"\x00" * 64 + b"hello" * 40)
    with pytest.raises(InputError, match=r"scan.dcm: not a DICOM file"):
        read_ct(junk)


def test_truncated_file_in_pixel_data(tmp_path: Path) -> None:
    (path,) = write_series(tmp_path, n=1, rows=64, cols=64)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3000])
    with pytest.raises(InputError, match=rf"{path.name}: the pixel data could not be decoded.*truncated"):
        read_ct(path)


def test_truncated_file_in_header(tmp_path: Path) -> None:
    (path,) = write_series(tmp_path, n=1)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(InputError, match=rf"{path.name}: the DICOM file is damaged or truncated"):
        read_ct(path)


def test_mr_is_refused(tmp_path: Path) -> None:
    write_series(tmp_path, n=2, modality="MR")
    with pytest.raises(InputError, match=r"is not CT \(modality MR\)"):
        read_ct(tmp_path)


def test_localizer_is_refused(tmp_path: Path) -> None:
    write_series(
        tmp_path, n=1, orientation=(1, 0, 0, 0, 0, -1), image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")
    )
    with pytest.raises(InputError, match=r"a scout is not a cross-section"):
        read_ct(tmp_path)


@pytest.mark.parametrize("orientation,plane", [((1, 0, 0, 0, 0, -1), "coronal"), ((0, 1, 0, 0, 0, -1), "sagittal")])
def test_non_axial_is_refused(tmp_path: Path, orientation, plane) -> None:
    write_series(tmp_path, n=3, orientation=orientation, image_type=("DERIVED", "PRIMARY", "MPR"))
    with pytest.raises(InputError, match=rf"is not an axial CT: its slices are {plane}"):
        read_ct(tmp_path)


def test_missing_slice_is_refused(tmp_path: Path) -> None:
    positions = [(0, 0, z) for z in (-20, -18, -16, -10, -8)]
    write_series(tmp_path, n=5, positions=positions)
    with pytest.raises(GeometryError, match=r"missing slices — a gap of 6.00 mm .* spacing is otherwise 2.00 mm"):
        read_ct(tmp_path)


def test_slightly_uneven_spacing_is_reported(tmp_path: Path) -> None:
    positions = [(0, 0, z) for z in (-20, -18, -16.2, -14, -12)]
    write_series(tmp_path, n=5, positions=positions)
    vol = read_ct(tmp_path)
    assert any("uneven slice spacing: 1.800–2.200 mm" in w for w in vol.series.warnings)


def test_duplicate_positions_are_refused(tmp_path: Path) -> None:
    positions = [(0, 0, z) for z in (-20, -18, -18, -16)]
    write_series(tmp_path, n=4, positions=positions)
    with pytest.raises(GeometryError, match=r"share the same position"):
        read_ct(tmp_path)


def test_gantry_tilt_is_refused(tmp_path: Path) -> None:
    # Slices stepping 2 mm in z but also 0.5 mm in y each: a ~14° tilt.
    positions = [(0, 0.5 * s, -20 + 2 * s) for s in range(5)]
    write_series(tmp_path, n=5, positions=positions)
    with pytest.raises(GeometryError, match=r"gantry tilt of 14.0°.*refuses tilted series"):
        read_ct(tmp_path)


def test_damaged_compressed_stream(tmp_path: Path) -> None:
    from pydicom.uid import RLELossless
    import pydicom

    (path,) = write_series(tmp_path, n=1, rows=32, cols=32)
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    data = bytearray(ds.PixelData)
    data[200:260] = bytes(60)  # wreck the RLE segments
    ds.PixelData = bytes(data)
    ds.save_as(path)
    with pytest.raises(InputError, match=rf"{path.name}: the pixel data could not be decoded"):
        read_ct(path)


def test_unknown_series_uid_lists_available(tmp_path: Path) -> None:
    write_series(tmp_path, n=2, series_uid="1.2.3.4.5")
    with pytest.raises(InputError, match=r"series 9.9.9 is not in the input; available series:\n  - 1.2.3.4.5 \| CT \| axial"):
        read_ct(tmp_path, series_uid="9.9.9")


def test_nifti_series_option_refused(tmp_path: Path) -> None:
    import nibabel as nib

    path = tmp_path / "a.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)), str(path))
    with pytest.raises(InputError, match=r"--series applies to DICOM input"):
        read_ct(path, series_uid="1.2")


def test_bad_zip(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    write_series(tmp_path / "s", n=2)
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for p in (tmp_path / "s").iterdir():
            zf.write(p, p.name)
    path.write_bytes(path.read_bytes()[:-40])  # cut the central directory
    with pytest.raises(InputError, match=r"x.zip"):
        read_ct(path)


def test_truncated_zip_says_the_archive_is_damaged(tmp_path: Path) -> None:
    # An interrupted download keeps the start of the archive (members) but loses the central
    # directory at the end: zipfile no longer recognises it, and it used to be called "not DICOM".
    import zipfile

    paths = write_series(tmp_path / "s", n=4, rows=32, cols=32)
    path = tmp_path / "study.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in paths:
            zf.write(p, f"DIR/{p.name}")
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 6 // 10])
    with pytest.raises(InputError, match=r"study.zip: the zip archive is damaged or truncated.*re-download") as info:
        read_ct(path)
    assert "not a DICOM file" not in str(info.value)


def test_truncated_zip_member_is_an_input_error(tmp_path: Path) -> None:
    # A member whose compressed bytes are wrecked (central directory intact) fails inside zlib.
    import zipfile

    paths = write_series(tmp_path / "s", n=1, rows=32, cols=32)
    path = tmp_path / "one.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(paths[0], "a.dcm")
    data = bytearray(path.read_bytes())
    start = 30 + len("a.dcm")  # local header + name: compressed data follows
    data[start + 10 : start + 200] = bytes(range(190))
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"one.zip"):
        read_ct(path)


def test_too_few_slices_message_says_covers_once_and_ends_with_a_full_stop(tmp_path: Path, capsys) -> None:
    # The locate message and the CLI's "The scan covers …" suffix used to double up:
    # "…with --slices The scan covers covers 2 slice(s)".
    from sarcoscope.cli.main import report_error
    from sarcoscope.errors import L3NotFound
    from sarcoscope.locate import find_l3

    write_series(tmp_path, n=2, rows=32, cols=32)
    with pytest.raises(L3NotFound) as info:
        find_l3(read_ct(tmp_path))
    assert report_error(info.value) == 3
    err = " ".join(capsys.readouterr().err.split())
    assert "covers covers" not in err
    assert re.search(r"covers 2 slice\(s\) at z -?\d+ mm\. Give the slice to analyse with --slices\.$", err), err
