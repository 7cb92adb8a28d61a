"""settings.py: the --slices grammar and option validation, with the messages users see."""

from __future__ import annotations

import numpy as np
import pytest

from sarcoscope.errors import ConfigError, InputError
from sarcoscope.settings import AnalysisSettings, parse_slice_spec, resolve_slices
from sarcoscope.types import PatientInfo, SourceGrid
from tests.e2e._fakes import make_volume


@pytest.mark.parametrize(
    "text, kind, wanted",
    [
        ("7", "list", (7,)),
        ("3,1, 3", "list", (3, 1)),
        ("2:4", "range", (2, 3, 4)),
        ("4:4", "range", (4,)),
        ("ALL", "all", tuple(range(10))),
    ],
)
def test_valid_specs(text, kind, wanted):
    spec = parse_slice_spec(text)
    assert spec.kind == kind
    assert spec.input_indices(10) == wanted


@pytest.mark.parametrize("text", ["", "-1", "1-3", "a", "1,,2", "1:", ":3", "1:2:3", "1.5"])
def test_invalid_specs_name_the_value_and_the_grammar(text):
    with pytest.raises(ConfigError, match=r"--slices .* is not a valid slice specification.*'all'"):
        parse_slice_spec(text)


def test_reversed_range_is_refused():
    with pytest.raises(ConfigError, match="range start 5 is after its end 2"):
        parse_slice_spec("5:2")


def test_out_of_range_index_names_valid_range():
    spec = parse_slice_spec("3,12")
    with pytest.raises(InputError, match=r"slice index 12 is out of range; the input has 10 slice\(s\), numbered 0..9"):
        spec.input_indices(10)
    with pytest.raises(InputError, match="slice index 10"):
        parse_slice_spec("8:10").input_indices(10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"slices": "x"}, "not a valid slice specification"),
        ({"sex": "X"}, "--sex 'X': use M or F"),
        ({"height_cm": 1.75}, r"--height-cm 1.75: expected the patient's height in centimetres"),
        ({"weight_kg": 0.0}, "--weight-kg 0.0"),
        ({"segmenter": "magic"}, "--segmenter 'magic': choose one of baseline, model"),
        ({"segmenter": "baseline", "model_path": "m.onnx"}, "--model was given together with --segmenter baseline"),
        ({"average_mm": -1.0}, "--average-mm -1.0"),
        ({"l3_definition": "middle"}, "--l3-definition 'middle': choose one of mid-L3, "),
        ({"slices": "3", "average_mm": 5.0}, "cannot be combined with --slices"),
        ({"reference": "nope"}, r"--reference 'nope' is not a known cut-off reference; choose one of: derstine2018, martin2013"),
    ],
)
def test_bad_options_raise_config_error_with_message(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AnalysisSettings(**kwargs)


def test_patient_overrides_win_and_keep_the_rest():
    header = PatientInfo(sex="F", height_m=1.60, weight_kg=55.0, age_years=70)
    s = AnalysisSettings(sex="m", height_cm=172)
    p = s.patient(header)
    assert (p.sex, p.height_m, p.weight_kg, p.age_years) == ("M", 1.72, 55.0, 70)
    assert AnalysisSettings().patient(header) == header


def test_default_reference_is_the_documented_one():
    from sarcoscope.references import DEFAULT_REFERENCE

    assert AnalysisSettings().reference_key == DEFAULT_REFERENCE
    assert AnalysisSettings(reference="prado2008").reference_key == "prado2008"


def test_resolve_dicom_like_indices_are_display_indices():
    vol, _ = make_volume(6, fmt="dicom")
    assert resolve_slices(parse_slice_spec("0,5"), vol) == (0, 5)
    with pytest.raises(InputError, match="numbered 0..5"):
        resolve_slices(parse_slice_spec("6"), vol)


def test_resolve_nifti_counts_along_the_stored_third_axis():
    # Stored NIfTI (i, j, k) with k stored superior→inferior: display k = n-1-stored k.
    grid = SourceGrid(shape=(50, 40, 6), affine=np.eye(4), axes=(2, 1, 0), flips=(True, False, False))
    vol, _ = make_volume(6, fmt="nifti", source_grid=grid)
    assert resolve_slices(parse_slice_spec("0,5"), vol) == (5, 0)
    with pytest.raises(InputError, match="numbered 0..5"):
        resolve_slices(parse_slice_spec("6"), vol)


def test_a_huge_range_is_refused_without_building_it():
    # 0:99999999999 once built a hundred-billion-element tuple (MemoryError, exit 70)
    with pytest.raises(InputError, match=r"--slices 0:99999999999: slice index 10 is out of range"):
        parse_slice_spec("0:99999999999").input_indices(10)
