"""The shipped model file: present, matches its card, and segments phantom and real slices sensibly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sarcoscope.evaluate import compare_case
from sarcoscope.segment.onnx_model import OnnxSegmenter, default_model_path
from tests.conftest import REAL_CT, REPO_ROOT, require

MODEL = REPO_ROOT / "models" / "sarcoscope-l3.onnx"


@pytest.fixture(scope="module")
def shipped() -> OnnxSegmenter:
    require(MODEL.is_file(), f"shipped model {MODEL}")
    return OnnxSegmenter()


def test_default_path_is_the_repo_model(shipped: OnnxSegmenter) -> None:
    assert default_model_path() == MODEL
    assert MODEL.stat().st_size < 10_000_000
    card = json.loads(MODEL.with_suffix(".json").read_text())
    assert card["sha256"] == shipped.sha256  # the card describes this very file
    assert shipped.card is not None and shipped.name == card["name"] and shipped.version == card["version"]


def test_post_steps_name_the_island_check(shipped: OnnxSegmenter) -> None:
    assert any("stray muscle islands" in s for s in shipped.post_steps)
    assert not any("stray" in s for s in OnnxSegmenter(MODEL, island_rule=None).post_steps)


def test_phantom_l3_slice_agrees_with_truth(shipped: OnnxSegmenter) -> None:
    from sarcoscope.phantom import make_slice, random_params

    # a body the training streams never drew (its own seed), standard 512 matrix
    s = make_slice(random_params(np.random.default_rng(424242), matrix=(512, 512)), level="L3")
    labels = shipped.segment(s.hu, s.pixel_spacing_mm)
    case = compare_case("p", s.hu, labels, s.labels, s.pixel_spacing_mm)
    for key, floor in (("muscle", 0.85), ("vat", 0.85), ("sat", 0.85)):
        assert case.tissues[key].dice > floor, (key, case.tissues[key])


def test_real_abdominal_slice_is_plausible(shipped: OnnxSegmenter) -> None:
    """TCIA Pancreas-CT slice near L1–L2 (rows stored flipped): areas in adult ranges, the
    spinal canal and vertebral body are never muscle, the outermost body ring is never muscle."""
    path = REAL_CT / "edge-cases" / "explicit_VR-UN.dcm"
    require(path.is_file(), f"real CT file {path}")
    from sarcoscope.io import read_ct

    vol = read_ct(path)
    hu = vol.slice_hu(0)
    labels = shipped.segment(hu, vol.pixel_spacing_mm)
    px_cm2 = vol.pixel_spacing_mm[0] * vol.pixel_spacing_mm[1] / 100
    area = {k: float((labels == k).sum()) * px_cm2 for k in range(1, 5)}
    assert 50 < area[1] < 250, area  # muscle
    assert 10 < area[4] < 500, area  # SAT
    assert area[3] > 5, area  # VAT
    # bone (> 300 HU) is never labelled; SAT lies outside muscle: the top body row is SAT or skin
    assert not labels[hu > 300].any()
    rows = np.flatnonzero((hu > -500).any(axis=1))
    top = labels[rows[0] + 2]
    assert not (top == 1).any()
