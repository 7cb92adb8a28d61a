"""Stray muscle islands (segment.islands): organ specks go visceral, anchored muscle stays."""

from __future__ import annotations

import numpy as np
import pytest

from sarcoscope.segment.islands import ENVELOPE, SUBCUTANEOUS, VISCERAL, IslandRule, reassign_stray_muscle
from sarcoscope.segment.onnx_model import OnnxSegmenter
from tests.conftest import REAL_CT, REPO_ROOT, require

SP = (1.0, 1.0)


def _disc(shape: tuple[int, int], centre: tuple[int, int], r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


def _abdomen() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 200 mm round trunk: SAT ring, a muscle wall ring, visceral soft tissue inside (HU 40)."""
    shape = (240, 240)
    trunk = _disc(shape, (120, 120), 100)
    hu = np.where(trunk, 40.0, -1000.0).astype(np.float32)
    comp = np.zeros(shape, np.uint8)
    comp[trunk] = SUBCUTANEOUS
    hu[trunk & ~_disc(shape, (120, 120), 85)] = -100.0  # subcutaneous fat
    comp[_disc(shape, (120, 120), 85)] = ENVELOPE  # wall muscle, 85 → 75 mm
    comp[_disc(shape, (120, 120), 75)] = VISCERAL
    return hu, comp, trunk


def test_island_deep_in_the_abdomen_becomes_visceral() -> None:
    hu, comp, trunk = _abdomen()
    speck = _disc(hu.shape, (120, 150), 4)  # 0.5 cm², 40+ mm from wall, no bone
    comp[speck] = ENVELOPE
    out, moved = reassign_stray_muscle(comp, hu, SP, trunk)
    assert moved == 1
    assert (out[speck] == VISCERAL).all()
    assert (out[(comp == ENVELOPE) & ~speck] == ENVELOPE).all()
    assert not (comp[speck] == VISCERAL).any()  # the input is not modified


@pytest.mark.parametrize("where", ["bone", "wall", "large"])
def test_anchored_islands_stay_muscle(where: str) -> None:
    hu, comp, trunk = _abdomen()
    speck = _disc(hu.shape, (120, 150), 4)
    comp[speck] = ENVELOPE
    if where == "bone":  # a vertebra-like dense disc 6 mm away
        hu[_disc(hu.shape, (120, 135), 5)] = 400.0
    elif where == "wall":  # the island lies 6 mm inside the wall
        comp[:] = np.where(comp == ENVELOPE, VISCERAL, comp)
        comp[_disc(hu.shape, (120, 120), 85) & ~_disc(hu.shape, (120, 120), 40)] = ENVELOPE
        speck = _disc(hu.shape, (120, 150), 3) & ~(comp == ENVELOPE)
        comp[_disc(hu.shape, (120, 150), 3)] = ENVELOPE
    else:  # a large muscle (psoas-sized, 10 cm²) 6 mm away
        comp[_disc(hu.shape, (120, 122), 18)] = ENVELOPE
    before = (comp == ENVELOPE).copy()
    out, moved = reassign_stray_muscle(comp, hu, SP, trunk)
    assert moved == 0
    assert np.array_equal(out == ENVELOPE, before)


def test_large_island_is_never_moved() -> None:
    hu, comp, trunk = _abdomen()
    blob = _disc(hu.shape, (120, 140), 13)  # 5.3 cm² > max_island_cm2
    comp[blob] = ENVELOPE
    out, moved = reassign_stray_muscle(comp, hu, SP, trunk, IslandRule(max_island_cm2=4.0))
    assert moved == 0 and (out[blob] == ENVELOPE).all()


def test_pixel_spacing_is_honoured() -> None:
    """The same speck, 20 px from bone: at 1 mm pixels unanchored (> 15 mm), at 0.5 mm anchored."""
    hu, comp, trunk = _abdomen()
    comp[_disc(hu.shape, (120, 161), 3)] = ENVELOPE
    hu[_disc(hu.shape, (120, 131), 7)] = 500.0  # bone edge 20 px from the speck's edge
    _, moved_1mm = reassign_stray_muscle(comp, hu, (1.0, 1.0), trunk)
    _, moved_half = reassign_stray_muscle(comp, hu, (0.5, 0.5), trunk)
    assert moved_1mm == 1 and moved_half == 0


def test_real_renal_sinus_is_not_muscle() -> None:
    """TCIA Pancreas-CT slice (L1–L2): model 3.0.0 without this check labelled a 0.7 cm² speck
    in the left renal sinus as muscle (docs/model-card.md); rows 310–335, columns 315–342 of the
    display-oriented slice hold the sinus. With the check no muscle is left there, while the
    psoas beside the vertebra (rows 300–345, columns 200–240) stays muscle."""
    path = REAL_CT / "edge-cases" / "explicit_VR-UN.dcm"
    model = REPO_ROOT / "models" / "sarcoscope-l3.onnx"
    require(path.is_file(), f"real CT file {path}")
    require(model.is_file(), f"shipped model {model}")
    from sarcoscope.io import read_ct

    vol = read_ct(path)
    hu = vol.slice_hu(0)
    labels = OnnxSegmenter(model).segment(hu, vol.pixel_spacing_mm)
    assert not (labels[310:336, 315:343] == 1).any()
    assert (labels[300:346, 200:241] == 1).sum() * vol.pixel_spacing_mm[0] * vol.pixel_spacing_mm[1] / 100 > 1.0


def test_no_anchor_of_a_kind_at_all() -> None:
    """A slice with no large muscle and no bone (distance to nothing is infinite, not garbage)."""
    hu, comp, trunk = _abdomen()
    comp[comp == ENVELOPE] = SUBCUTANEOUS  # no wall muscle at all
    near_sat = _disc(hu.shape, (120, 190), 3)  # 8 mm inside the former wall: near subcutaneous fat
    deep = _disc(hu.shape, (120, 120), 3)
    comp[near_sat | deep] = ENVELOPE
    out, moved = reassign_stray_muscle(comp, hu, SP, trunk)
    assert moved == 1
    assert (out[deep] == VISCERAL).all() and (out[near_sat] == ENVELOPE).all()
