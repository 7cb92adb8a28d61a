"""Stray muscle islands (segment.islands): organ specks go visceral, anchored muscle stays."""

from __future__ import annotations

import numpy as np
import pytest

from sarcoscope.segment.islands import ENVELOPE, SUBCUTANEOUS, VISCERAL, IslandRule, reassign_stray_muscle
from sarcoscope.segment.onnx_model import OnnxSegmenter
from tests.conftest import REAL_CT, REPO_ROOT, require

SP = (1.0, 1.0)
SHAPE = (240, 240)
CENTRE = (120, 120)


def _disc(centre: tuple[int, int], r: float, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


def _abdomen(wall: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A round trunk of radius 100 px: SAT ring 85–100, a muscle wall ring 75–85 (or, with
    ``wall=False``, SAT down to 75), visceral soft tissue (HU 40) inside."""
    trunk = _disc(CENTRE, 100)
    hu = np.where(trunk, 40.0, -1000.0).astype(np.float32)
    hu[trunk & ~_disc(CENTRE, 85)] = -100.0
    comp = np.zeros(SHAPE, np.uint8)
    comp[trunk] = SUBCUTANEOUS
    comp[_disc(CENTRE, 85)] = ENVELOPE if wall else SUBCUTANEOUS
    comp[_disc(CENTRE, 75)] = VISCERAL
    return hu, comp, trunk


def _moved(comp: np.ndarray, hu: np.ndarray, trunk: np.ndarray, sp=SP) -> tuple[np.ndarray, int]:
    before = comp.copy()
    out, n = reassign_stray_muscle(comp, hu, sp, trunk)
    assert np.array_equal(comp, before)  # the input is never modified
    return out, n


def test_island_deep_in_the_abdomen_becomes_visceral() -> None:
    hu, comp, trunk = _abdomen()
    speck = _disc((120, 150), 4)  # 0.5 cm², 40 mm from the wall, no bone
    comp[speck] = ENVELOPE
    out, moved = _moved(comp, hu, trunk)
    assert moved == 1
    assert (out[speck] == VISCERAL).all()
    assert (out[(comp == ENVELOPE) & ~speck] == ENVELOPE).all()


@pytest.mark.parametrize("where", ["bone", "subcutaneous fat", "large muscle", "outside the trunk", "gas"])
def test_each_anchor_alone_keeps_an_island(where: str) -> None:
    """No wall muscle, so only the anchor under test is near the speck (8 mm away)."""
    hu, comp, trunk = _abdomen(wall=False)
    speck = _disc((120, 150), 3)
    if where == "bone":
        hu[_disc((120, 134), 5)] = 400.0
    elif where == "subcutaneous fat":
        comp[_disc((120, 164), 3)] = SUBCUTANEOUS  # a tongue of subcutaneous fat
    elif where == "large muscle":  # psoas-sized, 10 cm²
        comp[_disc((120, 121), 18)] = ENVELOPE
    elif where == "outside the trunk":  # the body's edge: a thin patient with no subcutaneous fat there
        trunk = trunk & ~_disc((120, 200), 40)
        comp[~trunk] = 0
    else:  # a lung base or gas bubble (the diaphragm lines the lung)
        hu[_disc((120, 164), 4)] = -900.0
    comp[speck] = ENVELOPE
    out, moved = _moved(comp, hu, trunk)
    assert moved == 0 and (out[speck] == ENVELOPE).all()
    # and without that anchor the same speck is moved
    _, comp_bare, trunk_bare = _abdomen(wall=False)
    comp_bare[speck] = ENVELOPE
    hu_bare = np.where(trunk_bare, np.where(comp_bare == SUBCUTANEOUS, -100.0, 40.0), -1000.0).astype(np.float32)
    assert _moved(comp_bare, hu_bare, trunk_bare)[1] == 1


def test_soft_vertebra_anchors_psoas() -> None:
    """A vertebral body of 170 HU (osteoporotic: below the 200 HU bone threshold) at the back
    of the trunk anchors a small psoas 8 mm beside it; at 120 HU there is no vertebra to find."""
    for body_hu, expected in ((170.0, 0), (120.0, 1)):
        hu, comp, trunk = _abdomen(wall=False)
        vertebra = _disc((160, 120), 14)  # 6 cm², posterior midline
        hu[vertebra] = body_hu
        comp[vertebra] = 0
        psoas = _disc((150, 145), 3)  # 8 mm from the vertebra's side, 25 mm from anything else
        comp[psoas] = ENVELOPE
        assert _moved(comp, hu, trunk)[1] == expected, body_hu


def test_large_island_is_never_moved() -> None:
    hu, comp, trunk = _abdomen()
    blob = _disc((120, 140), 13)  # 5.3 cm², above the max_island_cm2 set here
    comp[blob] = ENVELOPE
    out, moved = reassign_stray_muscle(comp, hu, SP, trunk, IslandRule(max_island_cm2=4.0))
    assert moved == 0 and (out[blob] == ENVELOPE).all()


def test_region_too_large_to_check_anchors_its_neighbour() -> None:
    """A 9 cm² muscle (above max_island_cm2, so never checked) keeps a speck 6 mm beside it,
    and a 6 cm² blob deep in the abdomen is checked and moved."""
    hu, comp, trunk = _abdomen(wall=False)
    comp[_disc((120, 110), 17)] = ENVELOPE  # 9.1 cm²
    speck = _disc((120, 136), 3)
    comp[speck] = ENVELOPE
    out, moved = _moved(comp, hu, trunk)
    assert moved == 0 and (out[speck] == ENVELOPE).all()
    hu, comp, trunk = _abdomen(wall=False)
    blob = _disc((120, 110), 14)  # 6.2 cm², 40 mm from everything
    comp[blob] = ENVELOPE
    out, moved = _moved(comp, hu, trunk)
    assert moved == 1 and (out[blob] == VISCERAL).all()


@pytest.mark.parametrize("spacing, expected", [((1.0, 1.0), 1), ((0.5, 0.5), 0), ((1.0, 0.5), 1), ((0.5, 1.0), 0)])
def test_pixel_spacing_is_honoured(spacing: tuple[float, float], expected: int) -> None:
    """A speck 20 px *below* bone: more than 15 mm away when rows are 1 mm, 10 mm at 0.5 mm
    rows, whatever the column spacing."""
    hu, comp, trunk = _abdomen(wall=False)
    hu[_disc((100, 120), 7)] = 500.0  # bone, lower edge at row 107
    speck = _disc((130, 120), 3)  # upper edge at row 127: 20 rows below the bone
    comp[speck] = ENVELOPE
    assert _moved(comp, hu, trunk, spacing)[1] == expected


def test_a_split_muscle_anchors_its_pieces_link_by_link() -> None:
    """Three pieces in a chain running *up* from bone below them (against the label order),
    6 px apart: the first 7 px from the bone, the others 17 and 27 px (more than 15 mm); all
    stay muscle. Without the first piece the other two are moved."""
    hu, comp, trunk = _abdomen(wall=False)
    hu[_disc((165, 120), 6)] = 400.0  # bone, upper edge at row 159
    pieces = [_disc((r, 120), 2) for r in (150, 140, 130)]  # lower edges 7 / 17 / 27 rows above the bone
    for piece in pieces:
        comp[piece] = ENVELOPE
    out, moved = _moved(comp, hu, trunk)
    assert moved == 0 and all((out[p] == ENVELOPE).all() for p in pieces)
    comp[pieces[0]] = VISCERAL
    out, moved = _moved(comp, hu, trunk)
    assert moved == 2 and (out[pieces[1] | pieces[2]] == VISCERAL).all()


def test_body_cut_off_by_the_image_border() -> None:
    """A wall fragment where the body leaves the image: its fat lies beyond the border."""
    hu, comp, trunk = _abdomen(wall=False)
    crop = np.s_[:, 40:]  # the left part of the body is outside the field of view
    hu, comp, trunk = hu[crop].copy(), comp[crop].copy(), trunk[crop].copy()
    comp[trunk] = VISCERAL  # no subcutaneous fat left in view near the cut
    fragment = _disc((120, 8), 3, comp.shape)  # 5 px from the image border
    comp[fragment] = ENVELOPE
    out, moved = _moved(comp, hu, trunk)
    assert moved == 0 and (out[fragment] == ENVELOPE).all()


def test_real_renal_sinus_is_not_muscle() -> None:
    """TCIA Pancreas-CT slice (L1–L2): model 3.0.0 without this check labelled a 0.7 cm² speck
    in the left renal sinus as muscle (docs/model-card.md); rows 310–335, columns 315–342 of the
    display-oriented slice hold the sinus. With the check no muscle is left there, while the
    small right psoas beside the vertebra (rows 300–345, columns 200–240) stays muscle."""
    path = REAL_CT / "edge-cases" / "explicit_VR-UN.dcm"
    model = REPO_ROOT / "models" / "sarcoscope-l3.onnx"
    require(path.is_file(), f"real CT file {path}")
    require(model.is_file(), f"shipped model {model}")
    from sarcoscope.io import read_ct

    vol = read_ct(path)
    hu = vol.slice_hu(0)
    labels = OnnxSegmenter(model).segment(hu, vol.pixel_spacing_mm)
    assert not (labels[310:336, 315:343] == 1).any()
    # the network alone does label the speck (else this test would show nothing)
    alone = OnnxSegmenter(model, island_rule=None).segment(hu, vol.pixel_spacing_mm)
    assert (alone[310:336, 315:343] == 1).sum() > 20
    assert (labels[300:346, 200:241] == 1).sum() * vol.pixel_spacing_mm[0] * vol.pixel_spacing_mm[1] / 100 > 1.0
