"""pipeline.analyze on hand-made volumes with an exact (lookup) segmenter."""

from __future__ import annotations

import pytest

from sarcoscope import pipeline
from sarcoscope.errors import ModelError
from sarcoscope.pipeline import analyze, build_segmenter
from sarcoscope.settings import AnalysisSettings
from sarcoscope.types import PatientInfo
from tests.e2e._fakes import LookupSegmenter, make_volume

PX_CM2 = 0.8 * 0.7 / 100


def test_manual_slices_measure_exact_areas_and_time_each_stage():
    vol, labels = make_volume(5, muscle_rows_per_slice=(10, 11, 12, 13, 14))
    seg = LookupSegmenter()
    result = analyze(vol, AnalysisSettings(slices="1,3"), segmenter=seg)
    assert result.choice.method == "manual"
    assert result.choice.indices == (1, 3)
    assert result.choice.z_mm == (pytest.approx(-97.5), pytest.approx(-92.5))
    assert seg.calls == 2
    for m, k in zip(result.measurements, (1, 3)):
        assert m.slice_index == k
        n_muscle = int((labels[k] == 1).sum())
        assert m.tissues["muscle"].n_pixels == n_muscle
        assert m.tissues["muscle"].area_cm2 == pytest.approx(n_muscle * PX_CM2)
        assert m.tissues["sat"].area_cm2 == pytest.approx(160 * PX_CM2)
        assert m.tissues["vat"].mean_hu == pytest.approx(-90.0)
    assert set(result.timings_s) == {"read", "locate", "segment", "measure"}
    assert all(t >= 0 for t in result.timings_s.values())
    assert result.segmenter.name == "lookup"
    assert result.reference == "martin2013"


def test_single_slice_input_is_analysed_as_is():
    vol, _ = make_volume(1)
    result = analyze(vol, AnalysisSettings(), segmenter=LookupSegmenter())
    assert result.choice.method == "single"
    assert result.choice.indices == (0,)


def test_settings_override_the_header_patient_and_say_so():
    header = PatientInfo(sex="F", height_m=1.60, weight_kg=60.0)
    vol, _ = make_volume(3, patient=header)
    result = analyze(
        vol, AnalysisSettings(slices="1", sex="M", height_cm=180), segmenter=LookupSegmenter()
    )
    assert result.volume.patient == PatientInfo(sex="M", height_m=1.80, weight_kg=60.0)
    assert result.volume.hu is vol.hu  # no copy of the HU array
    assert any("--sex M overrides the header's sex F" in w for w in result.warnings)
    assert any("--height-cm 180 overrides the header's height 160 cm" in w for w in result.warnings)
    m = result.measurements[0]
    assert m.smi_cm2_m2 == pytest.approx(m.tissues["muscle"].area_cm2 / 1.80**2)


def test_segmenter_with_wrong_output_shape_is_a_model_error():
    class Broken(LookupSegmenter):
        name = "broken"

        def segment(self, hu, spacing):
            return super().segment(hu, spacing)[:-1]

    vol, _ = make_volume(2)
    with pytest.raises(ModelError, match=r"segmenter broken test returned \(39, 50\) for a \(40, 50\) slice"):
        analyze(vol, AnalysisSettings(slices="0"), segmenter=Broken())


def test_default_segmenter_falls_back_to_baseline_out_loud(monkeypatch, tmp_path):
    missing = tmp_path / "sarcoscope-l3.onnx"
    monkeypatch.setattr(pipeline, "default_model_path", lambda: missing)
    seg, notes = build_segmenter(AnalysisSettings())
    assert seg.name != "lookup" and "baseline" in seg.name.lower()
    assert len(notes) == 1 and "no trained model found" in notes[0] and str(missing) in notes[0]
    assert build_segmenter(AnalysisSettings(segmenter="baseline"))[1] == []


def test_explicit_model_request_never_falls_back(monkeypatch, tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelError, match=r"nope.onnx: model file not found.*--segmenter baseline"):
        build_segmenter(AnalysisSettings(model_path=missing))
    monkeypatch.setattr(pipeline, "default_model_path", lambda: missing)
    with pytest.raises(ModelError, match="model file not found"):
        build_segmenter(AnalysisSettings(segmenter="model"))


def test_missing_path_is_an_input_error(tmp_path):
    from sarcoscope.errors import InputError

    with pytest.raises(InputError, match=r"no-such-dir: no such file or folder"):
        analyze(tmp_path / "no-such-dir", AnalysisSettings())
