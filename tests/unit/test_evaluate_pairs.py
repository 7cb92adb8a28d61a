"""`sarcoscope evaluate --images --references` on DICOM + NIfTI label map written from a phantom."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sarcoscope.cli.main import main
from sarcoscope.types import CTVolume, SeriesInfo


def test_evaluate_dicom_against_nifti_labels(tmp_path: Path) -> None:
    import nibabel as nib

    from sarcoscope.phantom import make_slice, random_params, write_dicom_series
    from sarcoscope.train.annotations import read_nifti_labels

    s = make_slice(random_params(np.random.default_rng(77), matrix=(192, 192), pixel_spacing_mm=2.0), level="L3")
    sp = s.pixel_spacing_mm
    vol = CTVolume(hu=np.round(s.hu)[None].astype(np.int16), affine=np.diag([sp[1], sp[0], 1.0, 1.0]),
                   series=SeriesInfo(source_path="p", format="phantom"))
    (dcm,) = write_dicom_series(vol, tmp_path / "ct")
    # NIfTI stores (i, j, k) in RAS: i runs right→left = −x in RAS, j anterior→posterior = −y
    ref = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(s.labels.T[:, :, None].astype(np.uint8), np.diag([-sp[1], -sp[0], 1.0, 1.0])), ref)
    assert np.array_equal(read_nifti_labels(ref).values[0], s.labels)

    out = tmp_path / "eval"
    code = main(["evaluate", "--images", str(dcm), "--references", str(ref), "--segmenter", "baseline",
                 "--out", str(out)])
    assert code == 0
    rows = (out / "cases_baseline.csv").read_text().splitlines()
    assert len(rows) == 2
    header, values = rows[0].split(","), rows[1].split(",")
    row = dict(zip(header, values))
    ref_muscle = float((s.labels == 1).sum()) * sp[0] * sp[1] / 100
    assert math.isclose(float(row["muscle_ref_area_cm2"]), ref_muscle, rel_tol=1e-3)
    assert float(row["muscle_dice"]) > 0.5  # the baseline finds the muscle it should


# ----------------------------------------------------------------------------- options, outputs, names, geometry


def _pair(folder: Path, seed: int = 77) -> tuple[Path, Path, np.ndarray, tuple[float, float]]:
    """A one-slice DICOM ``folder/ct.dcm`` and its true label map ``folder/ct.nii.gz`` on the same grid."""
    import nibabel as nib

    from sarcoscope.phantom import make_slice, random_params, write_dicom_series

    s = make_slice(random_params(np.random.default_rng(seed), matrix=(96, 96), pixel_spacing_mm=4.0), level="L3")
    sp = s.pixel_spacing_mm
    vol = CTVolume(hu=np.round(s.hu)[None].astype(np.int16), affine=np.diag([sp[1], sp[0], 1.0, 1.0]),
                   series=SeriesInfo(source_path="p", format="phantom"))
    (written,) = write_dicom_series(vol, folder / "series")
    dcm = written.rename(folder / "ct.dcm")
    ref = folder / "ct.nii.gz"
    nib.save(nib.Nifti1Image(s.labels.T[:, :, None].astype(np.uint8), np.diag([-sp[1], -sp[0], 1.0, 1.0])), ref)
    return dcm, ref, s.labels, sp


def _rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_model_option_scores_the_given_model_or_is_refused(tmp_path: Path, capsys) -> None:
    """--model with --segmenter baseline alone was silently ignored; now refused, and scored with model."""
    import hashlib
    import shutil

    from sarcoscope.segment.onnx_model import default_model_path

    dcm, ref, _, _ = _pair(tmp_path)
    mine = Path(shutil.copyfile(default_model_path(), tmp_path / "my-model.onnx"))
    out = tmp_path / "eval_ft"
    code = main(["evaluate", "--images", str(dcm), "--references", str(ref), "--model", str(mine),
                 "--segmenter", "baseline", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"--model {mine} was given with --segmenter baseline only" in err and "add --segmenter model" in err
    assert not out.exists()
    code = main(["evaluate", "--images", str(dcm), "--references", str(ref), "--model", str(mine),
                 "--segmenter", "model", "--segmenter", "baseline", "--out", str(out)])
    assert code == 0
    assert f"model: {mine}" in capsys.readouterr().out
    assert _rows(out / "cases_model.csv") and _rows(out / "cases_baseline.csv")
    assert hashlib.sha256(mine.read_bytes()).hexdigest() in (out / "summary.md").read_text()  # recorded
    # the documented fine-tune validation command scores the fine-tuned model
    card = (Path(__file__).parents[2] / "docs" / "model-card.md").read_text()
    documented = [ln for ln in card.splitlines() if "evaluate" in ln and "--model my-model.onnx" in ln]
    assert documented and all("--segmenter model" in ln for ln in documented)


def test_out_that_is_a_file_is_a_clear_export_error(tmp_path: Path, capsys) -> None:
    dcm, ref, _, _ = _pair(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    code = main(["evaluate", "--images", str(dcm), "--references", str(ref), "--segmenter", "baseline",
                 "--out", str(afile)])
    assert code == 5
    assert f"--out {afile}: exists and is not a folder; choose a folder." in capsys.readouterr().err
    assert afile.read_text() == "mine"


def test_rerun_replaces_only_this_commands_outputs(tmp_path: Path, capsys) -> None:
    """A rerun with fewer segmenters must not leave the earlier run's files beside the new ones."""
    dcm, ref, _, _ = _pair(tmp_path)
    out = tmp_path / "eval"
    out.mkdir()
    earlier = ["cases_model.csv", "summary_model.json", "bland_altman_model.png", "scatter_model.png",
               "summary.md", "by_level.json"]
    for name in earlier:  # what an earlier `--segmenter model` run left here
        (out / name).write_text("earlier run")
    (out / "notes.txt").write_text("the user's own")
    (out / "cases_model_old.csv").write_text("not a name evaluate writes")
    args = ["evaluate", "--images", str(dcm), "--references", str(ref), "--segmenter", "baseline", "--out", str(out)]
    assert main(args) == 0
    files = {p.name for p in out.iterdir()}
    assert files == {"cases_baseline.csv", "summary_baseline.json", "bland_altman_baseline.png",
                     "scatter_baseline.png", "summary.md", "by_level.json", "notes.txt", "cases_model_old.csv"}
    from sarcoscope.evaluate import output_file_names

    assert files - {"notes.txt", "cases_model_old.csv"} <= output_file_names(["baseline"])  # names in one place
    assert (out / "notes.txt").read_text() == "the user's own"
    assert "earlier run" not in (out / "summary.md").read_text()
    # a rerun that fails leaves the previous results as they were (no half-replaced folder)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "missing.nii.gz"
    assert main([*args[:4], str(bad), *args[4:]]) == 2
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_case_names_tell_same_named_images_apart(tmp_path: Path) -> None:
    coll = tmp_path / "coll"
    (coll / "A").mkdir(parents=True)
    (coll / "B").mkdir()
    a_dcm, a_ref, _, _ = _pair(coll / "A", seed=77)
    b_dcm, b_ref, _, _ = _pair(coll / "B", seed=78)
    out = tmp_path / "eval"
    assert main(["evaluate", "--images", str(a_dcm), "--references", str(a_ref), "--images", str(b_dcm),
                 "--references", str(b_ref), "--segmenter", "baseline", "--out", str(out)]) == 0
    rows = _rows(out / "cases_baseline.csv")
    assert [r["case"] for r in rows] == ["A/ct.dcm#0", "B/ct.dcm#0"]
    assert rows[0]["muscle_ref_area_cm2"] != rows[1]["muscle_ref_area_cm2"]  # two patients, two rows


def _save_like(ref: Path, path: Path, affine: np.ndarray) -> Path:
    import nibabel as nib

    img = nib.load(str(ref))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), path)
    return path


def test_reference_off_the_ct_grid_is_refused(tmp_path: Path, capsys) -> None:
    """A label map whose header puts it elsewhere (shifted, flipped, other spacing) was scored pixel by pixel."""
    import nibabel as nib

    dcm, ref, labels, sp = _pair(tmp_path)
    good = nib.load(str(ref)).affine
    shifted = good.copy()
    shifted[0, 3] += 50.0
    flipped = good.copy()
    flipped[0, 0] = -flipped[0, 0]  # same pixels, header says the columns run the other way
    coarse = good.copy()
    coarse[1, 1] *= 1.04
    for name, affine, numbers in (("shifted", shifted, "12.5, 0.0, 0.0 CT voxels"),
                                  ("flipped", flipped, "95.0, 0.0, 0.0 CT voxels"),
                                  ("coarse", coarse, "0.0, 3.8, 0.0 CT voxels")):
        bad = _save_like(ref, tmp_path / f"{name}.nii.gz", affine)
        code = main(["evaluate", "--images", str(dcm), "--references", str(bad), "--segmenter", "baseline",
                     "--out", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert code == 2, name
        assert f"{bad}: the reference does not lie on the grid of the CT {dcm}" in err, err
        assert numbers in err and "resample it onto the CT's grid" in err, err
        assert not (tmp_path / name).exists()
    # within float32 rounding of the header: accepted
    nudged = good.copy()
    nudged[:3, 3] += 1e-3
    ok = _save_like(ref, tmp_path / "nudged.nii.gz", nudged)
    assert main(["evaluate", "--images", str(dcm), "--references", str(ok), "--segmenter", "baseline",
                 "--out", str(tmp_path / "ok")]) == 0
    # stored in another orientation but on the same grid (rows reversed, header says so): accepted, same numbers
    rev = good.copy()
    rev[1, 1] = -rev[1, 1]
    rev[1, 3] = good[1, 3] + good[1, 1] * (labels.shape[0] - 1)
    data = np.asarray(nib.load(str(ref)).dataobj)[:, ::-1, :]
    other = tmp_path / "reoriented.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), rev), other)
    assert main(["evaluate", "--images", str(dcm), "--references", str(other), "--segmenter", "baseline",
                 "--out", str(tmp_path / "reoriented")]) == 0
    assert _rows(tmp_path / "reoriented" / "cases_baseline.csv") == _rows(tmp_path / "ok" / "cases_baseline.csv")


def test_a_reference_without_a_class_the_slice_plainly_has_is_warned_about(tmp_path: Path, caplog) -> None:
    import logging

    import nibabel as nib

    dcm, ref, labels, sp = _pair(tmp_path)
    muscle_only = tmp_path / "muscle.nii.gz"  # a 0/1 mask given as a label map
    nib.save(nib.Nifti1Image((labels == 1).T[:, :, None].astype(np.uint8), np.diag([-sp[1], -sp[0], 1.0, 1.0])),
             muscle_only)
    with caplog.at_level(logging.WARNING, logger="sarcoscope.train.assess"):
        assert main(["evaluate", "--images", str(dcm), "--references", str(muscle_only), "--segmenter", "baseline",
                     "--out", str(tmp_path / "eval")]) == 0
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "has no sat pixels in the reference while baseline finds" in text and "per-class masks" in text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sarcoscope.train.assess"):  # a complete reference: silent
        assert main(["evaluate", "--images", str(dcm), "--references", str(ref), "--segmenter", "baseline",
                     "--out", str(tmp_path / "eval2")]) == 0
    assert not [r for r in caplog.records if "in the reference while" in r.getMessage()]
