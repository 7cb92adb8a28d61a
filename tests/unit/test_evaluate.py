"""evaluate: Dice, area and HU errors on hand-made label maps with known answers; report files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from sarcoscope.evaluate import compare_case, dice, summarise, summary_table, write_report


def test_dice_known_values() -> None:
    ref = np.zeros((10, 10), dtype=np.uint8)
    pred = np.zeros((10, 10), dtype=np.uint8)
    ref[0:4, 0:5] = 1  # 20 px
    pred[0:4, 0:3] = 1  # 12 px, all inside
    assert dice(pred, ref, 1) == pytest.approx(2 * 12 / 32)
    assert math.isnan(dice(pred, ref, 3))  # absent in both
    pred[9, 9] = 3
    assert dice(pred, ref, 3) == 0.0


def test_compare_case_areas_and_hu() -> None:
    hu = np.zeros((20, 20), dtype=np.float32)
    hu[:, 10:] = 50.0
    ref = np.zeros((20, 20), dtype=np.uint8)
    ref[:10, :] = 1  # 200 px: half at 0 HU, half at 50 HU → mean 25
    pred = np.zeros_like(ref)
    pred[:10, 10:] = 1  # 100 px at 50 HU
    case = compare_case("c1", hu, pred, ref, (2.0, 0.5))  # 1 mm² per pixel = 0.01 cm²
    m = case.tissues["muscle"]
    assert m.ref_area_cm2 == pytest.approx(2.0)
    assert m.pred_area_cm2 == pytest.approx(1.0)
    assert m.area_error_cm2 == pytest.approx(-1.0)
    assert m.area_error_pct == pytest.approx(-50.0)
    assert m.ref_mean_hu == pytest.approx(25.0)
    assert m.mean_hu_error == pytest.approx(25.0)
    assert math.isnan(case.tissues["vat"].dice)
    assert math.isnan(case.tissues["vat"].ref_mean_hu)  # absent: NaN, never 0
    with pytest.raises(ValueError, match="shapes differ"):
        compare_case("bad", hu, pred[:5], ref, (1.0, 1.0))


def test_summary_bland_altman_and_report_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cases = []
    for i in range(6):
        ref = np.zeros((30, 30), dtype=np.uint8)
        ref[5:25, 5:25] = 4
        ref[10:20, 10:20] = 1
        pred = ref.copy()
        pred[10:20, 20 : 20 + i % 3] = 1  # grow muscle by 0, 10 or 20 pixels
        hu = rng.normal(0, 10, ref.shape).astype(np.float32)
        cases.append(compare_case(f"case{i}", hu, pred, ref, (1.0, 1.0)))
    s = summarise(cases)
    diffs = np.array([0, 10, 20, 0, 10, 20]) / 100.0
    assert s["muscle"]["bland_altman_cm2"]["bias"] == pytest.approx(diffs.mean())
    sd = diffs.std(ddof=1)
    assert s["muscle"]["bland_altman_cm2"]["loa_high"] == pytest.approx(diffs.mean() + 1.96 * sd)
    assert s["sat"]["dice"]["n"] == 6
    paths = write_report(cases, tmp_path, "model")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 6 and rows[1]["muscle_area_error_cm2"] == "0.1000"
    assert rows[0]["vat_dice"] == ""  # absent class: empty, not 0
    summary = json.loads(paths["summary"].read_text())
    assert summary["n_cases"] == 6
    for key in ("bland_altman", "scatter"):
        assert paths[key].stat().st_size > 1000 and paths[key].read_bytes()[:4] == b"\x89PNG"
    table = summary_table({"model": s})
    assert "| model | muscle |" in table


def test_case_names_shortest_distinguishing_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sarcoscope.evaluate import case_names

    coll = tmp_path / "coll"
    imgs = [coll / "A" / "ct.dcm", coll / "B" / "ct.dcm", coll / "C" / "other.dcm"]
    refs = [p.with_suffix(".nii.gz") for p in imgs]
    assert case_names(imgs, refs) == ["A/ct.dcm", "B/ct.dcm", "other.dcm"]
    # distinct names stay short; a relative and an absolute spelling of one file are one image
    assert case_names([tmp_path / "ct1", tmp_path / "ct2"], refs[:2]) == ["ct1", "ct2"]
    monkeypatch.chdir(tmp_path)
    assert case_names([Path("coll/A/ct.dcm"), Path("./coll/B/../B/ct.dcm")], refs[:2]) == ["A/ct.dcm", "B/ct.dcm"]
    # same image scored against two readers' masks, and a pair given twice: still unique rows
    same = [imgs[0], imgs[0], imgs[1], imgs[1]]
    two = [tmp_path / "r1" / "ct.nii.gz", tmp_path / "r2" / "ct.nii.gz", refs[1], refs[1]]
    names = case_names(same, two)
    assert names == ["A/ct.dcm[r1/ct.nii.gz]", "A/ct.dcm[r2/ct.nii.gz]", "B/ct.dcm[ct.nii.gz](1)",
                     "B/ct.dcm[ct.nii.gz](2)"]
    assert len(set(names)) == len(names)


def test_grid_offset_voxels() -> None:
    from sarcoscope.train.annotations import grid_offset_voxels

    ct = np.diag([0.8, 0.8, 3.0, 1.0])
    assert np.allclose(grid_offset_voxels(ct, ct, (10, 64, 64)), 0.0)
    shifted = ct.copy()
    shifted[:3, 3] = [4.0, 0.0, -6.0]  # 5 columns, 2 slices
    assert np.allclose(grid_offset_voxels(shifted, ct, (10, 64, 64)), [5.0, 0.0, 2.0])
    bigger = np.diag([0.8, 0.88, 3.0, 1.0])  # rows 10 % larger: the last row is 6.3 rows off
    assert np.allclose(grid_offset_voxels(bigger, ct, (10, 64, 64)), [0.0, 6.3, 0.0])
