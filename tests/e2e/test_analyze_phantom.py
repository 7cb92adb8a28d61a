"""End to end through the CLI (``sarcoscope.cli.main.main``, the console script's function) on
phantom studies with exact ground truth: DICOM (head-first and feet-first) and NIfTI (as
written, and with the slice axis stored superior → inferior).

Tolerances (baseline segmenter vs phantom truth, same slice): skeletal muscle, VAT and SAT
within 30 % of the true area, IMAT within 20 cm². That is what the classical baseline achieves
on these phantoms (docs/baseline.md), not a target for the trained model; what these tests
pin down exactly is the plumbing: same numbers from DICOM and NIfTI, slice indices, z, label
maps landing on the right voxels, outputs complete or absent.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sarcoscope.cli.main import main

REL_TOL = {"muscle": 0.30, "vat": 0.30, "sat": 0.30}
IMAT_ABS_TOL_CM2 = 20.0


def run(*args: object) -> int:
    return main([str(a) for a in args])


def load(out: Path) -> dict:
    return json.loads((out / "result.json").read_text(encoding="utf-8"))


def assert_close_to_truth(slice_doc: dict, truth: dict[str, float]) -> None:
    t = slice_doc["tissues"]
    for key, rel in REL_TOL.items():
        measured, true = t[key]["area_cm2"], truth[key]
        assert abs(measured - true) <= rel * true, (key, measured, true)
    assert abs(t["imat"]["area_cm2"] - truth["imat"]) <= IMAT_ABS_TOL_CM2


def assert_labels_on_world_grid(labels_path: Path, study, k_display: int, result_labels: np.ndarray | None = None):
    """Every labelled voxel of the NIfTI, mapped through its own affine to patient space,
    lands on display slice k of the phantom, on a pixel with the same label as our output."""
    img = nib.load(labels_path)
    data = np.asarray(img.dataobj)
    ijk = np.argwhere(data > 0)
    assert len(ijk) > 1000
    ras = img.affine @ np.c_[ijk, np.ones(len(ijk))].T
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ras
    disp = np.linalg.inv(study.truth.volume.affine) @ lps  # (i, j, k) display
    i, j, k = (np.rint(disp[a]).astype(int) for a in range(3))
    assert np.all(k == k_display)
    if result_labels is not None:
        assert np.array_equal(result_labels[j, i], data[tuple(ijk.T)])
    # And the labels agree with the phantom truth on most voxels (segmenter quality aside).
    agree = np.mean(study.truth.labels[k_display][j, i] == data[tuple(ijk.T)])
    assert agree > 0.7


def test_dicom_given_slice_all_outputs(study, tmp_path):
    out = tmp_path / "out"
    labels = tmp_path / "labels.nii.gz"
    table = tmp_path / "batch.csv"
    rc = run("analyze", study.dicom_dir, "--out", out, "--slices", study.l3, "--segmenter",
             "baseline", "--labels", labels, "--csv", table)
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["overlay.png", "result.json"]
    doc = load(out)
    assert doc["schema"] == "sarcoscope.result/1"
    assert doc["slice_selection"]["method"] == "manual" and doc["l3"] is None
    (s,) = doc["slices"]
    assert s["index"] == study.l3 and s["source_index"] == study.l3
    assert s["z_mm"] == pytest.approx(study.truth.volume.z_mm(study.l3), abs=0.01)
    assert s["sop_instance_uid"]
    assert_close_to_truth(s, study.true_areas_cm2(study.l3))
    # Patient data from the DICOM header (the phantom writes sex, size and weight).
    p = study.truth.volume.patient
    assert doc["patient"]["sex"] == p.sex
    assert doc["patient"]["height_m"] == pytest.approx(p.height_m, abs=0.01)
    assert s["smi_cm2_m2"] == pytest.approx(s["tissues"]["muscle"]["area_cm2"] / doc["patient"]["height_m"] ** 2, rel=1e-3)
    assert doc["segmenter"]["name"].startswith("baseline")
    assert all(f["reference"] == "martin2013" for f in doc["summary"]["flags"])
    # Label NIfTI for DICOM: the sorted stack, RAS, labels only on the analysed slice.
    img = nib.load(labels)
    assert img.shape == (256, 256, study.truth.volume.n_slices)
    assert_labels_on_world_grid(labels, study, study.l3)
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert len(rows) == 1 and rows[0]["slice_index"] == str(study.l3)
    assert float(rows[0]["muscle_area_cm2"]) == pytest.approx(s["tissues"]["muscle"]["area_cm2"], abs=1e-3)


def test_feet_first_dicom_gives_the_same_answer(study, tmp_path):
    a, b = tmp_path / "hfs", tmp_path / "ffs"
    la, lb = tmp_path / "hfs.nii.gz", tmp_path / "ffs.nii.gz"
    k = study.l3
    assert run("analyze", study.dicom_dir, "--out", a, "--slices", k, "--segmenter", "baseline", "--labels", la) == 0
    assert run("analyze", study.dicom_ffs_dir, "--out", b, "--slices", k, "--segmenter", "baseline", "--labels", lb) == 0
    sa, sb = load(a)["slices"][0], load(b)["slices"][0]
    assert sa["z_mm"] == pytest.approx(sb["z_mm"], abs=0.01)
    assert sa["tissues"] == sb["tissues"]
    assert_labels_on_world_grid(lb, study, k)


def test_nifti_as_stored_matches_dicom_and_labels_round_trip(study, tmp_path):
    out_d, out_n = tmp_path / "d", tmp_path / "n"
    labels = tmp_path / "labels.nii"
    k = study.l3
    assert run("analyze", study.dicom_dir, "--out", out_d, "--slices", k, "--segmenter", "baseline") == 0
    assert run("analyze", study.nifti, "--out", out_n, "--slices", k, "--segmenter", "baseline", "--labels", labels) == 0
    sd, sn = load(out_d)["slices"][0], load(out_n)["slices"][0]
    assert sn["index"] == sd["index"] == k
    # Same HU voxels from both files; NIfTI stores the spacing as float32 (1.5599999 mm vs
    # DICOM's "1.56"), which moves a few baseline boundary pixels: agree within 1 %.
    for key in ("muscle", "imat", "vat", "sat"):
        a, b = sn["tissues"][key], sd["tissues"][key]
        assert a["area_cm2"] == pytest.approx(b["area_cm2"], rel=0.01), key
        assert a["mean_hu"] == pytest.approx(b["mean_hu"], abs=0.5), key
    src, lab = nib.load(study.nifti), nib.load(labels)
    assert lab.shape == src.shape and np.allclose(lab.affine, src.affine)
    data = np.asarray(lab.dataobj)
    assert data.dtype == np.uint8
    assert data[:, :, k].any() and not np.delete(data, k, axis=2).any()


def test_nifti_stored_superior_first_counts_slices_as_stored(study, tmp_path):
    n = study.truth.volume.n_slices
    k_stored = n - 1 - study.l3  # the same anatomy, numbered as the flipped file stores it
    out, labels = tmp_path / "out", tmp_path / "labels.nii.gz"
    assert run("analyze", study.nifti_flipped, "--out", out, "--slices", k_stored,
               "--segmenter", "baseline", "--labels", labels) == 0
    (s,) = load(out)["slices"]
    assert s["index"] == study.l3 and s["source_index"] == k_stored
    src, lab = nib.load(study.nifti_flipped), nib.load(labels)
    assert lab.shape == src.shape and np.allclose(lab.affine, src.affine)
    data = np.asarray(lab.dataobj)
    assert data[:, :, k_stored].any() and not np.delete(data, k_stored, axis=2).any()
    assert_labels_on_world_grid(labels, study, study.l3)


@pytest.mark.parametrize("spec, expected", [("L3,L3+2", None), ("L3-1:L3+1", None)])
def test_slice_lists_and_ranges(study, tmp_path, spec, expected):
    k = study.l3
    text = spec.replace("L3+2", str(k + 2)).replace("L3-1", str(k - 1)).replace("L3+1", str(k + 1)).replace("L3", str(k))
    want = [k, k + 2] if "," in spec else [k - 1, k, k + 1]
    out = tmp_path / "out"
    assert run("analyze", study.nifti, "--out", out, "--slices", text, "--segmenter", "baseline") == 0
    doc = load(out)
    assert doc["slice_selection"]["indices"] == want
    assert [s["index"] for s in doc["slices"]] == want
    assert doc["summary"]["n_slices"] == len(want)
    mean_muscle = np.mean([s["tissues"]["muscle"]["area_cm2"] for s in doc["slices"]])
    assert doc["summary"]["tissues"]["muscle"]["area_cm2"] == pytest.approx(mean_muscle, abs=2e-3)


def test_automatic_l3_on_dicom(study, tmp_path):
    """Without --slices the finder picks L3: within 10 mm of the phantom's mid-L3, spine.png
    written, the L3 record complete."""
    out = tmp_path / "out"
    rc = run("analyze", study.dicom_dir, "--out", out, "--segmenter", "baseline")
    assert rc == 0
    doc = load(out)
    assert sorted(p.name for p in out.iterdir()) == ["overlay.png", "result.json", "spine.png"]
    l3 = doc["l3"]
    assert doc["slice_selection"]["method"] == "auto" and l3["definition"] == "mid-L3"
    true_z = study.truth.volume.z_mm(study.l3)
    assert abs(l3["z_mm"] - true_z) <= 10.0, (l3["z_mm"], true_z)
    assert 0.0 <= l3["confidence"] <= 1.0
    assert "L3" in {v["name"] for v in l3["vertebrae"]}
    assert_close_to_truth(doc["slices"][0], study.true_areas_cm2(doc["slices"][0]["index"]))


def test_single_slice_file_is_analysed_as_is(study, tmp_path):
    files = sorted(study.dicom_dir.iterdir())
    import pydicom

    target = None
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        z = float(ds.ImagePositionPatient[2])
        if abs(z - study.truth.volume.z_mm(study.l3)) < 0.01:
            target = f
    assert target is not None
    out = tmp_path / "out"
    assert run("analyze", target, "--out", out, "--segmenter", "baseline", "--json") == 0
    doc = load(out)
    assert doc["slice_selection"]["method"] == "single"
    assert_close_to_truth(doc["slices"][0], study.true_areas_cm2(study.l3))


def test_console_script_runs_and_reports_out_of_range(study, tmp_path):
    """The installed console script itself (a real subprocess)."""
    exe = Path(sys.executable).with_name("sarcoscope")
    if not exe.is_file():
        exe = Path(sys.executable).with_name("sarcoscope.exe")
    from tests.conftest import require

    require(exe.is_file(), f"console script beside {sys.executable}")
    out = tmp_path / "out"
    n = study.truth.volume.n_slices
    proc = subprocess.run([str(exe), "analyze", str(study.dicom_dir), "--out", str(out),
                           "--slices", str(n)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    msg = " ".join(proc.stderr.split())
    assert f"slice index {n} is out of range; the input has {n} slice(s), numbered 0..{n - 1}" in msg
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_automatic_l3_averaged_over_a_band(study, tmp_path):
    out = tmp_path / "out"
    assert run("analyze", study.nifti, "--out", out, "--segmenter", "baseline",
               "--average-mm", "4", "--l3-definition", "mid-L3") == 0
    doc = load(out)
    idx = doc["l3"]["indices"]
    assert len(idx) >= 2 and idx == sorted(idx) and idx[-1] - idx[0] == len(idx) - 1
    assert [s["index"] for s in doc["slices"]] == idx
    assert doc["summary"]["n_slices"] == len(idx)
    mean_muscle = np.mean([s["tissues"]["muscle"]["area_cm2"] for s in doc["slices"]])
    assert doc["summary"]["tissues"]["muscle"]["area_cm2"] == pytest.approx(mean_muscle, abs=2e-3)


def test_zip_of_the_series_gives_the_same_slice(study, tmp_path):
    import zipfile

    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(study.dicom_dir.iterdir()):
            zf.write(f, f"export/CT/{f.name}")
    out_z, out_d = tmp_path / "z", tmp_path / "d"
    k = study.l3
    assert run("analyze", archive, "--out", out_z, "--slices", k, "--segmenter", "baseline") == 0
    assert run("analyze", study.dicom_dir, "--out", out_d, "--slices", k, "--segmenter", "baseline") == 0
    assert load(out_z)["slices"][0]["tissues"] == load(out_d)["slices"][0]["tissues"]


def test_shipped_model_through_the_cli(study, tmp_path):
    """The default segmenter once the trained model ships: named with its hash in result.json,
    areas within 10 % of the phantom truth (the model card reports the precise accuracy)."""
    from sarcoscope.pipeline import default_model_path
    from tests.conftest import require

    path = default_model_path()
    require(path is not None and path.is_file(), f"shipped ONNX model at {path}")
    out = tmp_path / "out"
    assert run("analyze", study.dicom_dir, "--out", out, "--slices", study.l3) == 0
    doc = load(out)
    assert doc["segmenter"]["sha256"] and not doc["segmenter"]["name"].startswith("baseline")
    assert not any("no trained model" in w for w in doc["warnings"])
    t, truth = doc["slices"][0]["tissues"], study.true_areas_cm2(study.l3)
    for key in ("muscle", "vat", "sat"):
        assert abs(t[key]["area_cm2"] - truth[key]) <= 0.10 * truth[key], (key, t[key], truth[key])
