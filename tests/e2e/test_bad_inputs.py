"""Bad inputs through the CLI: the documented exit code, a message naming the file and the
problem, and no output files at all (no result.json, no overlay, no label NIfTI, no CSV)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from sarcoscope.cli.main import main


def analyze_expect(capsys, tmp_path: Path, target: Path, code: int, *fragments: str, extra=()):
    out = tmp_path / "out"
    labels = tmp_path / "labels.nii.gz"
    table = tmp_path / "rows.csv"
    rc = main(["analyze", str(target), "--out", str(out), "--labels", str(labels),
               "--csv", str(table), "--segmenter", "baseline", *map(str, extra)])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == code, err
    assert f"exit {code}): " in err and "error (" in err
    for frag in fragments:
        assert frag in err, (frag, err)
    assert "Traceback" not in err
    assert not out.exists() and not labels.exists() and not table.exists()
    assert not list(tmp_path.glob(".sarcoscope-*"))
    return err


def one_file(study) -> Path:
    return sorted(study.dicom_dir.iterdir())[study.l3]


def test_empty_folder(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    analyze_expect(capsys, tmp_path, empty, 2, str(empty))


def test_folder_of_non_dicom_files(capsys, tmp_path):
    d = tmp_path / "notes"
    d.mkdir()
    (d / "report.txt").write_text("not an image\n")
    (d / "scan.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 100)
    err = analyze_expect(capsys, tmp_path, d, 2, str(d))
    assert "DICOM" in err


def test_non_dicom_single_file(capsys, tmp_path):
    f = tmp_path / "photo.png"
    f.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    analyze_expect(capsys, tmp_path, f, 2, "photo.png", "not a DICOM file")


def test_truncated_file(capsys, tmp_path, study):
    src = one_file(study)
    f = tmp_path / "truncated.dcm"
    f.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    analyze_expect(capsys, tmp_path, f, 2, "truncated.dcm")


def test_series_with_inconsistent_geometry(capsys, tmp_path, study):
    """One file of the series claims another pixel spacing: the series is not one grid."""
    d = tmp_path / "mixed"
    shutil.copytree(study.dicom_dir, d)
    f = sorted(d.iterdir())[4]
    ds = pydicom.dcmread(f)
    ds.PixelSpacing = [0.7, 0.7]
    ds.save_as(f)
    analyze_expect(capsys, tmp_path, d, 2, "series", str(d))


def test_two_series_in_one_folder_pick_and_override(capsys, tmp_path, study):
    from sarcoscope import phantom

    d = tmp_path / "two"
    shutil.copytree(study.dicom_dir, d / "a")
    other_uid = "1.2.826.0.1.3680043.8.498.424242"
    phantom.write_dicom_series(study.truth.volume, d / "b", series_uid=other_uid, series_number=7)
    import json

    out = tmp_path / "o1"
    assert main(["analyze", str(d), "--out", str(out), "--slices", str(study.l3), "--segmenter", "baseline"]) == 0
    doc = json.loads((out / "result.json").read_text())
    assert doc["source"]["selection_reason"]
    out2 = tmp_path / "o2"
    assert main(["analyze", str(d), "--out", str(out2), "--slices", str(study.l3), "--series", other_uid,
                 "--segmenter", "baseline"]) == 0
    assert json.loads((out2 / "result.json").read_text())["source"]["series_instance_uid"] == other_uid
    capsys.readouterr()
    analyze_expect(capsys, tmp_path, d, 2, "1.2.3.4.5.6", extra=("--series", "1.2.3.4.5.6"))


def test_single_slice_without_pixel_spacing(capsys, tmp_path, study):
    f = tmp_path / "nospacing.dcm"
    ds = pydicom.dcmread(one_file(study))
    del ds.PixelSpacing
    ds.save_as(f)
    err = analyze_expect(capsys, tmp_path, f, 2, "nospacing.dcm")
    assert "spacing" in err.lower()


def test_slice_out_of_range_and_bad_spec(capsys, tmp_path, study):
    n = study.truth.volume.n_slices
    analyze_expect(capsys, tmp_path, study.dicom_dir, 2, f"slice index {n + 5} is out of range",
                   f"numbered 0..{n - 1}", extra=("--slices", f"{n - 1},{n + 5}"))
    analyze_expect(capsys, tmp_path, study.nifti, 2, "not a valid slice specification",
                   extra=("--slices", "5..9"))


def test_explicit_model_that_does_not_exist(capsys, tmp_path, study):
    missing = tmp_path / "nope.onnx"
    out = tmp_path / "out"
    rc = main(["analyze", str(study.nifti), "--out", str(out), "--slices", "3", "--model", str(missing)])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 4 and "nope.onnx" in err and "not found" in err
    assert not out.exists()


def test_mr_image_is_refused(capsys, tmp_path, real_ct):
    analyze_expect(capsys, tmp_path, real_ct / "edge-cases" / "JPEGLossless_1s_1f_u_16_12.dcm",
                   2, "MR", "CT")


def test_localizer_is_refused(capsys, tmp_path, real_ct):
    err = analyze_expect(capsys, tmp_path, real_ct / "edge-cases" / "MAROTECH_CT_JP2Lossy.dcm", 2)
    assert "localizer" in err.lower() or "scout" in err.lower()


def test_coronal_mpr_is_refused(capsys, tmp_path, real_ct):
    err = analyze_expect(capsys, tmp_path, real_ct / "edge-cases" / "TOSHIBA_J2K_SIZ0_PixRep1.dcm", 2)
    assert "axial" in err


def test_damaged_jpeg_lossless_stream(capsys, tmp_path, real_ct):
    analyze_expect(capsys, tmp_path, real_ct / "edge-cases" / "JPEGLossless_1s_1f_i_16_16_bad.dcm",
                   2, "JPEGLossless_1s_1f_i_16_16_bad.dcm")


def test_l3_not_in_the_liver_dome_series(capsys, tmp_path, real_ct):
    err = analyze_expect(capsys, tmp_path, real_ct / "ts-liver-dome-j2k", 3, "L3")
    assert "covers" in err and "mm" in err
