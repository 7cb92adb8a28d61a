"""measure.py on hand-made label maps whose areas and HU are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sarcoscope.measure import average_measurements, measure_slice
from sarcoscope.references import MYOSTEATOSIS, SARCOPENIA
from sarcoscope.tissues import Tissue
from sarcoscope.types import LabelMap, PatientInfo

SPACING = (0.8, 0.7)  # mm: pixel area 0.0056 cm²
PX_CM2 = 0.8 * 0.7 / 100


def _slice(muscle_hu=40.0):
    """100x120 slice: muscle 30x40 rect, IMAT 5x5, VAT 20x20, SAT 10x100; exact HU per class."""
    hu = np.full((100, 120), -1000.0, dtype=np.float32)
    lab = np.zeros((100, 120), dtype=np.uint8)
    lab[10:40, 10:50] = Tissue.MUSCLE
    hu[10:40, 10:50] = muscle_hu
    lab[50:55, 10:15] = Tissue.IMAT
    hu[50:55, 10:15] = -60.0
    lab[60:80, 60:80] = Tissue.VAT
    hu[60:80, 60:80] = -90.0
    lab[85:95, 10:110] = Tissue.SAT
    hu[85:95, 10:110] = -100.0
    return hu, LabelMap(lab, slice_index=7, pixel_spacing_mm=SPACING)


def test_areas_and_hu_are_exact():
    hu, lm = _slice()
    m = measure_slice(hu, lm, PatientInfo(), "martin2013", z_mm=-120.5)
    t = m.tissues
    assert t["muscle"].n_pixels == 1200
    assert t["muscle"].area_cm2 == pytest.approx(1200 * PX_CM2)
    assert t["imat"].area_cm2 == pytest.approx(25 * PX_CM2)
    assert t["vat"].area_cm2 == pytest.approx(400 * PX_CM2)
    assert t["sat"].area_cm2 == pytest.approx(1000 * PX_CM2)
    assert t["muscle"].mean_hu == pytest.approx(40.0) and t["muscle"].sd_hu == pytest.approx(0.0)
    assert t["vat"].mean_hu == pytest.approx(-90.0)
    assert m.vat_sat_ratio == pytest.approx(0.4)
    assert m.slice_index == 7 and m.z_mm == -120.5
    assert m.smi_cm2_m2 is None
    assert m.flags == ()
    assert any("height unknown" in w for w in m.warnings)


def test_disk_area_matches_pixel_count_and_hu_sd():
    yy, xx = np.mgrid[:200, :200]
    disk = (yy - 100) ** 2 + (xx - 100) ** 2 <= 60**2
    lab = np.where(disk, np.uint8(Tissue.SAT), np.uint8(0)).astype(np.uint8)
    rng = np.random.default_rng(0)
    hu = rng.normal(-100, 15, size=(200, 200)).astype(np.float32)
    m = measure_slice(hu, LabelMap(lab, 0, (0.5, 0.5)), PatientInfo(), "prado2008", 0.0)
    assert m.tissues["sat"].area_cm2 == pytest.approx(disk.sum() * 0.0025)
    assert abs(m.tissues["sat"].area_cm2 - math.pi * 3.0**2) < 0.1  # r = 60 px * 0.5 mm = 3 cm
    assert m.tissues["sat"].mean_hu == pytest.approx(float(hu[disk].astype(np.float64).mean()))
    assert m.tissues["sat"].sd_hu == pytest.approx(float(hu[disk].astype(np.float64).std(ddof=1)))


def test_absent_class_is_nan_with_warning_never_zero_hu():
    hu, lm = _slice()
    lab = lm.labels.copy()
    lab[lab == Tissue.IMAT] = 0
    m = measure_slice(hu, LabelMap(lab, 3, SPACING), PatientInfo(), "martin2013", 0.0)
    assert m.tissues["imat"].area_cm2 == 0.0 and m.tissues["imat"].n_pixels == 0
    assert math.isnan(m.tissues["imat"].mean_hu) and math.isnan(m.tissues["imat"].sd_hu)
    assert any("Intermuscular adipose tissue absent on slice 3" in w for w in m.warnings)


def test_no_sat_gives_no_ratio_and_no_muscle_gives_no_flags():
    hu, lm = _slice()
    lab = lm.labels.copy()
    lab[(lab == Tissue.SAT) | (lab == Tissue.MUSCLE)] = 0
    p = PatientInfo(sex="M", height_m=1.8, weight_kg=70)
    m = measure_slice(hu, LabelMap(lab, 0, SPACING), p, "martin2013", 0.0)
    assert m.vat_sat_ratio is None
    assert m.flags == ()
    assert any("no subcutaneous fat" in w for w in m.warnings)
    assert any("flags not evaluated: no skeletal muscle" in w for w in m.warnings)


def test_low_and_normal_attenuation_split_at_30_hu():
    hu, lm = _slice()
    hu[10:25, 10:50] = 10.0  # 600 px low
    hu[25:30, 10:50] = 29.5  # 200 px, non-integer: low (< 30)
    hu[30:35, 10:50] = 30.0  # 200 px normal
    hu[35:40, 10:50] = 160.0  # 200 px labelled muscle but outside −29…150: neither
    m = measure_slice(hu, lm, PatientInfo(), "martin2013", 0.0)
    assert m.muscle_low_attenuation_cm2 == pytest.approx(800 * PX_CM2)
    assert m.muscle_normal_attenuation_cm2 == pytest.approx(200 * PX_CM2)


def test_smi_and_flags_from_the_chosen_reference():
    hu, lm = _slice(muscle_hu=35.0)
    # muscle area 1200 px * 0.0056 = 6.72 cm²; scale pixel spacing so the area is 150 cm²
    s = math.sqrt(150.0 / 1200 * 100)
    lm = LabelMap(lm.labels, 0, (s, s))
    p = PatientInfo(sex="M", height_m=1.75, weight_kg=85.0)  # BMI 27.8
    m = measure_slice(hu, lm, p, "martin2013", 0.0)
    assert m.tissues["muscle"].area_cm2 == pytest.approx(150.0)
    assert m.smi_cm2_m2 == pytest.approx(150.0 / 1.75**2)  # 48.98
    flags = {f.name: f for f in m.flags}
    assert flags[SARCOPENIA].positive and flags[SARCOPENIA].threshold == 53.0
    assert not flags[MYOSTEATOSIS].positive and flags[MYOSTEATOSIS].threshold == 33.0
    m2 = measure_slice(hu, lm, p, "derstine2018", 0.0)
    f2 = {f.name: f for f in m2.flags}
    assert not f2[SARCOPENIA].positive and f2[SARCOPENIA].reference == "derstine2018"


def test_shape_mismatch_is_refused():
    hu, lm = _slice()
    with pytest.raises(ValueError, match=r"HU slice shape \(100, 119\) differs"):
        measure_slice(hu[:, :119], lm, PatientInfo(), "martin2013", 0.0)


def test_average_pools_areas_and_hu():
    hu1, lm1 = _slice(muscle_hu=40.0)
    hu2, lm2 = _slice(muscle_hu=50.0)
    lab2 = lm2.labels.copy()
    lab2[10:25, 10:50] = 0  # half the muscle
    lm2 = LabelMap(lab2, 8, SPACING)
    p = PatientInfo(sex="F", height_m=1.6, weight_kg=60.0)
    m1 = measure_slice(hu1, lm1, p, "martin2013", 10.0)
    m2 = measure_slice(hu2, lm2, p, "martin2013", 12.0)
    m3 = measure_slice(hu1, LabelMap(lm1.labels, 9, SPACING), p, "martin2013", 14.0)
    avg = average_measurements([m1, m2, m3], p, "martin2013")
    mu = avg.tissues["muscle"]
    assert mu.area_cm2 == pytest.approx((1200 + 600 + 1200) / 3 * PX_CM2)
    assert mu.n_pixels == 3000
    assert mu.mean_hu == pytest.approx((2400 * 40 + 600 * 50) / 3000)
    pooled = np.concatenate([np.full(2400, 40.0), np.full(600, 50.0)])
    assert mu.sd_hu == pytest.approx(pooled.std(ddof=1))
    assert avg.z_mm == pytest.approx(12.0) and avg.slice_index == 8
    assert avg.smi_cm2_m2 == pytest.approx(mu.area_cm2 / 1.6**2)
    assert {f.name for f in avg.flags} == {SARCOPENIA, MYOSTEATOSIS}
    assert avg.warnings[0].startswith("averaged over 3 slices (7, 8, 9)")


def test_average_of_absent_class_stays_nan():
    hu, lm = _slice()
    lab = lm.labels.copy()
    lab[lab == Tissue.IMAT] = 0
    m = measure_slice(hu, LabelMap(lab, 0, SPACING), PatientInfo(), "martin2013", 0.0)
    avg = average_measurements([m, m], PatientInfo(), "martin2013")
    assert math.isnan(avg.tissues["imat"].mean_hu)
    assert any("absent on all averaged slices" in w for w in avg.warnings)
    with pytest.raises(ValueError, match="at least one"):
        average_measurements([], PatientInfo(), "martin2013")


def test_unknown_reference_is_refused_even_without_muscle():
    from sarcoscope.errors import ConfigError

    hu, lm = _slice()
    empty = LabelMap(np.zeros_like(lm.labels), 0, SPACING)
    with pytest.raises(ConfigError, match="unknown cut-off reference 'prado'"):
        measure_slice(hu, empty, PatientInfo(), "prado", 0.0)
