"""result.json, CSV and the label NIfTI written from hand-made results."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest

from sarcoscope.errors import ExportError
from sarcoscope.export.csv import COLUMNS, append_csv
from sarcoscope.export.labels_nifti import LPS_TO_RAS, write_labels_nifti
from sarcoscope.export.result_json import SCHEMA, result_to_dict, write_result_json
from sarcoscope.pipeline import analyze
from sarcoscope.settings import AnalysisSettings
from sarcoscope.types import PatientInfo, SourceGrid
from tests.e2e._fakes import LookupSegmenter, make_volume

PX_CM2 = 0.8 * 0.7 / 100


def _result(slices="2", patient=None, **kw):
    vol, labels = make_volume(5, patient=patient, **kw)
    return analyze(vol, AnalysisSettings(slices=slices), segmenter=LookupSegmenter()), labels


def test_result_json_has_the_documented_fields(tmp_path):
    patient = PatientInfo(sex="M", height_m=1.8, weight_kg=81.0)
    result, labels = _result("2", patient)
    path = write_result_json(result, tmp_path / "result.json", extra_timings_s={"write": 0.01})
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["schema"] == SCHEMA == "sarcoscope.result/1"
    assert set(doc) >= {"sarcoscope_version", "source", "patient", "slice_selection", "l3",
                        "slices", "summary", "reference", "segmenter", "timings_s", "warnings"}
    assert doc["patient"] == {"sex": "M", "height_m": 1.8, "weight_kg": 81.0, "bmi_kg_m2": 25.0}
    assert doc["source"]["series_instance_uid"] == "1.2.3.4"
    assert doc["l3"] is None  # manual choice
    (s,) = doc["slices"]
    assert s["index"] == 2 and s["z_mm"] == pytest.approx(-95.0)
    assert s["tissues"]["muscle"]["area_cm2"] == pytest.approx(round(225 * PX_CM2, 3))
    assert s["tissues"]["imat"]["mean_hu"] == -60.0
    assert doc["summary"]["tissues"]["muscle"] == s["tissues"]["muscle"]
    assert doc["summary"]["smi_cm2_m2"] == pytest.approx(225 * PX_CM2 / 1.8**2, abs=1e-3)
    assert {f["name"] for f in doc["summary"]["flags"]} >= {"sarcopenia"}
    assert all(f["reference"] == "martin2013" for f in doc["summary"]["flags"])
    assert doc["reference"]["key"] == "martin2013" and "Martin" in doc["reference"]["citation"]
    assert doc["segmenter"] == {"name": "lookup", "version": "test", "sha256": None}
    assert set(doc["timings_s"]) == {"read", "locate", "segment", "measure", "write"}


def test_segmenter_post_steps_reach_the_result_json(tmp_path):
    """A segmenter that declares steps after its network (the ONNX model's island check) has
    them recorded: the same model file labels differently without them."""

    class WithSteps(LookupSegmenter):
        post_steps = ("trunk only", "stray muscle islands counted as visceral")

    vol, _ = make_volume(5)
    result = analyze(vol, AnalysisSettings(slices="2"), segmenter=WithSteps())
    doc = json.loads(write_result_json(result, tmp_path / "r.json").read_text(encoding="utf-8"))
    assert doc["segmenter"]["post_steps"] == ["trunk only", "stray muscle islands counted as visceral"]


def test_absent_tissue_is_null_not_zero(tmp_path):
    vol, labels = make_volume(3)
    hu = vol.hu.copy()
    hu[hu == -60] = -1000  # no IMAT anywhere
    result = analyze(replace(vol, hu=hu), AnalysisSettings(slices="0"), segmenter=LookupSegmenter())
    text = write_result_json(result, tmp_path / "r.json").read_text()
    def no_constants(c):
        raise AssertionError(f"result.json holds the non-JSON constant {c}")

    imat = json.loads(text, parse_constant=no_constants)["slices"][0]["tissues"]["imat"]
    assert imat["area_cm2"] == 0.0 and imat["n_pixels"] == 0
    assert imat["mean_hu"] is None and imat["sd_hu"] is None


def test_summary_of_several_slices_averages_areas_and_names_no_patient():
    result, labels = _result("0:4", muscle_rows_per_slice=(10, 11, 12, 13, 14))
    doc = result_to_dict(result)
    areas = [(labels[k] == 1).sum() * PX_CM2 for k in range(5)]
    assert doc["summary"]["n_slices"] == 5
    assert doc["summary"]["tissues"]["muscle"]["area_cm2"] == pytest.approx(np.mean(areas), abs=1e-3)
    assert [s["index"] for s in doc["slices"]] == [0, 1, 2, 3, 4]
    flat = json.dumps(doc)
    for forbidden in ("PatientName", "PatientID", "patient_id", "name\": \"Doe"):
        assert forbidden not in flat


def test_csv_appends_rows_under_one_header(tmp_path):
    path = tmp_path / "batch.csv"
    r1, _ = _result("1,2")
    r2, _ = _result("3")
    append_csv(r1, path, "scan-a")
    append_csv(r2, path, "scan-b")
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert [r["input"] for r in rows] == ["scan-a", "scan-a", "scan-b"]
    assert [r["slice_index"] for r in rows] == ["1", "2", "3"]
    assert float(rows[0]["muscle_area_cm2"]) == pytest.approx(225 * PX_CM2, abs=1e-3)
    assert rows[0]["smi_cm2_m2"] == ""  # height unknown: empty, not 0
    assert tuple(rows[0].keys()) == COLUMNS
    assert path.read_text().count("input,") == 1


def test_csv_refuses_a_foreign_header(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b,c\n1,2,3\n")
    r, _ = _result("1")
    with pytest.raises(ExportError, match=r"other.csv: the existing CSV has other columns \(column 1 is 'a', "
                       r"expected 'input'\).*Write to a new file"):
        append_csv(r, path, "x")
    assert path.read_text() == "a,b,c\n1,2,3\n"


def test_csv_saved_again_with_a_byte_order_mark_is_appended_to(tmp_path):
    # Excel's "CSV UTF-8" puts a BOM before the header; the columns are still ours
    path = tmp_path / "rows.csv"
    r1, _ = _result("1")
    append_csv(r1, path, "scan-a")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    append_csv(r1, path, "scan-b")
    rows = list(csv.DictReader(path.open(encoding="utf-8-sig")))
    assert [r["input"] for r in rows] == ["scan-a", "scan-b"]


def test_csv_in_another_encoding_is_refused_by_name(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("Patientenliste;Größe\n".encode("cp1252"))
    r, _ = _result("1")
    with pytest.raises(ExportError, match=r"--csv .*latin.csv: the file is not UTF-8 text.*Write to a new file"):
        append_csv(r, path, "x")


def test_labels_nifti_maps_back_to_a_permuted_flipped_stored_grid(tmp_path):
    # The stored NIfTI was (i, j, k) with rows flipped relative to display: display axis 0 (k)
    # comes from stored axis 2, display j from stored 1 reversed, display i from stored 0.
    stored_affine = np.array([[-0.7, 0, 0, 10], [0, 0.8, 0, -5], [0, 0, 2.5, -100], [0, 0, 0, 1]])
    grid = SourceGrid(shape=(50, 40, 5), affine=stored_affine, axes=(2, 1, 0),
                      flips=(False, True, False))
    result, labels = _result("3", source_grid=grid)
    # Mark it NIfTI after analysis (the slice SPEC mapping is tested with the io stage).
    volume = replace(result.volume, series=replace(result.volume.series, format="nifti"))
    result = replace(result, volume=volume)
    path = write_labels_nifti(result, tmp_path / "labels.nii.gz")
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    assert data.shape == (50, 40, 5) and data.dtype == np.uint8
    assert np.allclose(img.affine, stored_affine)
    expected = labels[3][::-1, :].T  # display (j, i) → stored (i, j) with j reversed
    assert np.array_equal(data[:, :, 3], expected)
    assert not data[:, :, [0, 1, 2, 4]].any()
    assert not list(tmp_path.glob(".*"))  # no temp file left behind


def test_labels_nifti_of_in_memory_volume_uses_ras_of_display_grid(tmp_path):
    result, labels = _result("1")
    img = nib.load(write_labels_nifti(result, tmp_path / "l.nii"))
    assert np.allclose(img.affine, LPS_TO_RAS @ result.volume.affine)
    assert np.array_equal(np.asarray(img.dataobj)[:, :, 1], labels[1].T)


def test_labels_nifti_needs_a_nifti_name(tmp_path):
    r, _ = _result("1")
    with pytest.raises(ExportError, match=r"must end in .nii or .nii.gz"):
        write_labels_nifti(r, tmp_path / "labels.png")


def test_csv_whose_last_row_lacks_a_newline_gets_its_own_line(tmp_path):
    path = tmp_path / "rows.csv"
    r1, _ = _result("1")
    append_csv(r1, path, "scan-a")
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # as a spreadsheet may save it
    append_csv(r1, path, "scan-b")
    rows = list(csv.reader(path.open(encoding="utf-8")))
    assert [len(r) for r in rows] == [len(COLUMNS)] * 3
    assert [r[0] for r in rows[1:]] == ["scan-a", "scan-b"]
