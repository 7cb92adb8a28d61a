"""Published cut-offs: the numbers, the BMI/sex logic, and refusing to guess."""

from __future__ import annotations

import pytest

from sarcoscope.errors import ConfigError
from sarcoscope.references import (
    DEFAULT_REFERENCE,
    LOW_MUSCLE_AREA,
    MYOSTEATOSIS,
    REFERENCES,
    SARCOPENIA,
    evaluate_flags,
)
from sarcoscope.types import PatientInfo


def _flags(ref, patient, smi=None, area=150.0, hu=40.0):
    res = evaluate_flags(ref, patient, smi_cm2_m2=smi, muscle_area_cm2=area, muscle_mean_hu=hu)
    return {f.name: f for f in res.flags}, res.not_evaluated


def test_registry_has_the_four_references_with_citations():
    assert set(REFERENCES) == {"prado2008", "martin2013", "derstine2018", "vanderwerf2018"}
    assert DEFAULT_REFERENCE in REFERENCES
    for key, ref in REFERENCES.items():
        assert ref.key == key
        assert ref.doi.startswith("10.")
        assert "20" in ref.citation and ref.smi_cutoffs
        assert ref.describe()[0].startswith(key)


@pytest.mark.parametrize(
    ("sex", "smi", "threshold", "positive"),
    [("M", 52.4, 52.4, True), ("M", 52.5, 52.4, False), ("F", 38.4, 38.5, True), ("F", 40.0, 38.5, False)],
)
def test_prado_sarcopenia_at_or_below(sex, smi, threshold, positive):
    flags, reasons = _flags("prado2008", PatientInfo(sex=sex, height_m=1.7), smi=smi)
    assert flags[SARCOPENIA].threshold == threshold
    assert flags[SARCOPENIA].positive is positive
    assert MYOSTEATOSIS not in flags
    assert any("no muscle attenuation" in r for r in reasons)


@pytest.mark.parametrize(
    ("weight", "smi", "threshold", "positive"),
    [(60.0, 42.9, 43.0, True), (60.0, 43.0, 43.0, False),  # BMI 20.8
     (80.0, 50.0, 53.0, True), (80.0, 53.0, 53.0, False)],  # BMI 27.7
)
def test_martin_men_cutoff_depends_on_bmi(weight, smi, threshold, positive):
    flags, _ = _flags("martin2013", PatientInfo(sex="M", height_m=1.7, weight_kg=weight), smi=smi)
    assert flags[SARCOPENIA].threshold == threshold
    assert flags[SARCOPENIA].positive is positive


def test_martin_bmi_exactly_25_uses_upper_class():
    p = PatientInfo(sex="M", height_m=2.0, weight_kg=100.0)  # BMI 25.0
    flags, _ = _flags("martin2013", p, smi=50.0, hu=34.0)
    assert flags[SARCOPENIA].threshold == 53.0
    assert flags[MYOSTEATOSIS].threshold == 33.0 and not flags[MYOSTEATOSIS].positive


def test_martin_myosteatosis_depends_on_bmi_not_sex():
    lean = PatientInfo(height_m=1.7, weight_kg=60.0)
    heavy = PatientInfo(height_m=1.7, weight_kg=90.0)
    f_lean, _ = _flags("martin2013", lean, smi=45.0, hu=38.0)
    f_heavy, _ = _flags("martin2013", heavy, smi=45.0, hu=38.0)
    assert f_lean[MYOSTEATOSIS].positive and f_lean[MYOSTEATOSIS].threshold == 41.0
    assert not f_heavy[MYOSTEATOSIS].positive and f_heavy[MYOSTEATOSIS].threshold == 33.0
    assert SARCOPENIA not in f_lean  # sex unknown: never guessed


def test_martin_women_need_no_bmi_but_men_do():
    f_w, _ = _flags("martin2013", PatientInfo(sex="F", height_m=1.6), smi=40.0)
    assert f_w[SARCOPENIA].threshold == 41.0 and f_w[SARCOPENIA].positive
    f_m, reasons = _flags("martin2013", PatientInfo(sex="M", height_m=1.8), smi=40.0)
    assert SARCOPENIA not in f_m and MYOSTEATOSIS not in f_m
    assert any("BMI unknown" in r and SARCOPENIA in r for r in reasons)
    assert any("BMI unknown" in r and MYOSTEATOSIS in r for r in reasons)


def test_missing_sex_gives_reason_not_flag():
    flags, reasons = _flags("derstine2018", PatientInfo(height_m=1.7), smi=30.0)
    assert flags == {}
    assert any("sex unknown" in r for r in reasons)


def test_missing_height_gives_reason_not_sarcopenia():
    flags, reasons = _flags("prado2008", PatientInfo(sex="M"), smi=None)
    assert SARCOPENIA not in flags
    assert any("height unknown" in r for r in reasons)


@pytest.mark.parametrize(("sex", "smi", "pos"), [("M", 45.3, True), ("M", 45.4, False), ("F", 34.3, True)])
def test_derstine(sex, smi, pos):
    flags, _ = _flags("derstine2018", PatientInfo(sex=sex, height_m=1.7), smi=smi)
    assert flags[SARCOPENIA].positive is pos


def test_vanderwerf_all_three_flags_and_area_without_height():
    flags, reasons = _flags("vanderwerf2018", PatientInfo(sex="F"), smi=None, area=85.0, hu=21.0)
    assert SARCOPENIA not in flags
    assert flags[LOW_MUSCLE_AREA].positive and flags[LOW_MUSCLE_AREA].threshold == 89.2
    assert flags[MYOSTEATOSIS].positive and flags[MYOSTEATOSIS].threshold == 22.0
    assert flags[MYOSTEATOSIS].unit == "HU" and flags[LOW_MUSCLE_AREA].unit == "cm²"
    assert any("height unknown" in r for r in reasons)
    flags_m, _ = _flags("vanderwerf2018", PatientInfo(sex="M", height_m=1.8), smi=41.7, area=140.0, hu=29.2)
    assert not flags_m[SARCOPENIA].positive and flags_m[SARCOPENIA].threshold == 41.6
    assert not flags_m[LOW_MUSCLE_AREA].positive
    assert flags_m[MYOSTEATOSIS].positive and flags_m[MYOSTEATOSIS].threshold == 29.3
    assert all(f.reference == "vanderwerf2018" for f in flags_m.values())


def test_nan_muscle_hu_is_not_evaluated():
    flags, reasons = _flags("vanderwerf2018", PatientInfo(sex="M", height_m=1.8), smi=45.0, hu=float("nan"))
    assert MYOSTEATOSIS not in flags
    assert any("muscle attenuation not available" in r for r in reasons)


def test_unknown_reference_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown cut-off reference 'nope'.*martin2013"):
        evaluate_flags("nope", PatientInfo(), smi_cm2_m2=None, muscle_area_cm2=1.0, muscle_mean_hu=1.0)
