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
