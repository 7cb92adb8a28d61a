"""The phantom slice: parameters, labels against HU and anatomy, areas against ANATOMY.md."""

from __future__ import annotations

import numpy as np
import pytest

from sarcoscope.phantom import (
    SLICE_LEVELS,
    PhantomParams,
    Structure,
    make_slice,
    random_params,
    tissue_labels,
)
from sarcoscope.tissues import FAT_HU, MUSCLE_HU, Tissue

SMALL = dict(matrix=(192, 192), pixel_spacing_mm=2.2)  # fast: whole body fits, 2.2 mm pixels


def small_params(seed: int = 0, **kw) -> PhantomParams:
    return PhantomParams(seed=seed, **{**SMALL, **kw})


# ---------------------------------------------------------------- parameters
def test_params_reject_bad_values_with_a_message():
    with pytest.raises(ValueError, match="sex must be 'M' or 'F'"):
        PhantomParams(sex="X")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise_sd=99"):
        PhantomParams(noise_sd=99)
    with pytest.raises(ValueError, match="leaves no room inside a body"):
        PhantomParams(body_lateral_mm=260, body_ap_mm=180, sat_mm=60)
    with pytest.raises(ValueError, match="matrix must be two integers"):
        PhantomParams(matrix=(512, 5))


def test_random_params_deterministic_and_overridable():
    a = random_params(np.random.default_rng(5))
    b = random_params(np.random.default_rng(5))
    assert a == b
    c = random_params(np.random.default_rng(5), sex="F", noise_sd=30.0)
    assert c.sex == "F" and c.noise_sd == 30.0
    with pytest.raises(ValueError, match="unknown override"):
        random_params(np.random.default_rng(0), colour="red")


# ---------------------------------------------------------------- one slice
def test_slice_shapes_types_and_determinism():
    p = small_params(3)
    s1, s2 = make_slice(p), make_slice(p)
    assert s1.hu.shape == (192, 192) and s1.hu.dtype == np.float32
    assert s1.labels.dtype == np.uint8 and int(s1.labels.max()) <= 4
    assert s1.pixel_spacing_mm == (2.2, 2.2)
    np.testing.assert_array_equal(s1.hu, s2.hu)
    np.testing.assert_array_equal(s1.labels, s2.labels)
    s3 = make_slice(small_params(4))
    assert not np.array_equal(s1.hu, s3.hu)
    # HU are integers within the CT range
    assert np.all(s1.hu == np.rint(s1.hu))
    assert s1.hu.min() >= -1024 and s1.hu.max() <= 3071


def test_labels_follow_the_alberta_windows():
    s = make_slice(small_params(7, noise_sd=30.0))
    hu, lab = s.hu, s.labels
    for t in (Tissue.IMAT, Tissue.VAT, Tissue.SAT):
        v = hu[lab == t]
        assert v.size > 0
        assert v.min() >= FAT_HU[0] and v.max() <= FAT_HU[1]
    m = hu[lab == Tissue.MUSCLE]
    assert m.min() >= MUSCLE_HU[0] and m.max() <= MUSCLE_HU[1]
    # recomputing from the structure map gives the same labels
    np.testing.assert_array_equal(tissue_labels(s.structures, hu), lab)
    # truth areas are label counts times the pixel area
    px = s.pixel_area_cm2
    assert s.areas_cm2["sat"] == pytest.approx(float((lab == Tissue.SAT).sum()) * px)


def test_tissue_means_are_in_anatomy_ranges():
    s = make_slice(small_params(2, noise_sd=10.0, muscle_hu=45.0))
    hu, lab = s.hu, s.labels
    assert -125 < hu[lab == Tissue.SAT].mean() < -80
    assert -115 < hu[lab == Tissue.VAT].mean() < -65
    # partial volume with fat and marbling lower the measured mean below the tissue HU
    assert 28 < hu[lab == Tissue.MUSCLE].mean() < 47


def test_compartments_are_in_anatomical_order():
    """Down the anterior midline: air, skin/SAT, wall (or linea alba), then the cavity; SAT never
    appears inside the wall and VAT never outside it."""
    p = PhantomParams(seed=1, sat_mm=30.0)
    s = make_slice(p)
    st = s.structures
    rows, cols = st.shape
    col = st[:, cols // 2]
    first_body = int(np.argmax(col != Structure.AIR))
    sat_rows = np.nonzero(col == Structure.SAT)[0]
    vat_rows = np.nonzero(col == Structure.VAT)[0]
    assert sat_rows.size and vat_rows.size
    assert first_body < sat_rows.min() < vat_rows.min()
    # SAT is outside: every SAT pixel is closer to the body edge than the nearest VAT pixel on the
    # same column (anterior half)
    for c in range(cols // 2 - 40, cols // 2 + 40, 10):
        colc = st[: rows // 2, c]
        sat = np.nonzero(colc == Structure.SAT)[0]
        vat = np.nonzero(colc == Structure.VAT)[0]
        if sat.size and vat.size:
            assert sat.max() < vat.min()


def test_orientation_anterior_up_patient_right_on_image_left():
    p = PhantomParams(seed=4)
    s = make_slice(p, level="L1")
    st = s.structures
    rows, cols = st.shape
    body_rows = np.nonzero(np.isin(st, (Structure.SKIN, Structure.SAT)).any(axis=1))[0]
    bone = np.argwhere(np.isin(st, (Structure.TRABECULAR,)))
    # the vertebral body lies in the posterior (lower) part of the body
    assert bone[:, 0].mean() > body_rows.mean()
    # the liver is on the patient's right = image left
    liver = np.argwhere(st == Structure.LIVER)
    assert liver.size and liver[:, 1].mean() < cols / 2
    # the aorta lies left of the midline (image right) of the IVC
    ao = np.argwhere(st == Structure.AORTA)[:, 1].mean()
    ivc = np.argwhere(st == Structure.IVC)[:, 1].mean()
    assert ao > ivc


def test_areas_within_anatomy_ranges_over_random_bodies():
    rng = np.random.default_rng(2024)
    m_area = {"M": [], "F": []}
    for _ in range(24):
        p = random_params(rng, matrix=(160, 160), pixel_spacing_mm=3.0, fov_offset_mm=(0.0, 0.0),
                          recon_circle=False)
        a = make_slice(p).areas_cm2
        assert 60 <= a["muscle"] <= 240, (p, a)
        assert 1 <= a["imat"] <= 45, (p, a)
        assert 8 <= a["vat"] <= 450, (p, a)
        assert 5 <= a["sat"] <= 700, (p, a)
        m_area[p.sex].append(a["muscle"])
    assert np.median(m_area["M"]) > np.median(m_area["F"]) + 15


def test_levels_change_the_anatomy():
    p = PhantomParams(seed=9, matrix=(256, 256), pixel_spacing_mm=1.6)
    psoas = {}
    for lv in SLICE_LEVELS:
        st = make_slice(p, level=lv).structures
        psoas[lv] = int((st == Structure.PSOAS).sum())
    assert psoas["T12"] == 0
    assert psoas["L1"] < psoas["L3"] < psoas["L4"] + 1
    t12 = make_slice(p, level="T12").structures
    assert (t12 == Structure.LIVER).sum() > (make_slice(p, level="L3").structures == Structure.LIVER).sum()
    with pytest.raises(ValueError, match="level 'C5' is not one of"):
        make_slice(p, level="C5")


def test_spacing_changes_pixels_not_anatomy():
    a = make_slice(PhantomParams(seed=12, matrix=(512, 512), pixel_spacing_mm=0.8, noise_sd=5.0)).areas_cm2
    b = make_slice(PhantomParams(seed=12, matrix=(192, 192), pixel_spacing_mm=2.1, noise_sd=5.0)).areas_cm2
    for k in ("muscle", "vat", "sat"):
        assert b[k] == pytest.approx(a[k], rel=0.1), k


def test_options_appear_in_the_image():
    base = dict(seed=21, matrix=(256, 256), pixel_spacing_mm=1.7)
    arms = make_slice(PhantomParams(**base, arms="beside"))
    arm = np.isin(arms.structures, (Structure.ARM_MUSCLE, Structure.ARM_FAT))
    assert arm.sum() > 200
    assert not arms.labels[arm].any(), "arms are never labelled as trunk tissue"
    metal = make_slice(PhantomParams(**base, metal_implant=True), level="L3")
    assert (metal.structures == Structure.METAL).any() and metal.hu.max() >= 2500
    art = make_slice(PhantomParams(**base, contrast="arterial"))
    assert art.hu[art.structures == Structure.AORTA].mean() > 150
    plain = make_slice(PhantomParams(**base, contrast="none"))
    assert plain.hu[plain.structures == Structure.AORTA].mean() < 80
    asc = make_slice(PhantomParams(**base, ascites=0.6))
    assert (asc.structures == Structure.ASCITES).sum() > 100
    circ = make_slice(PhantomParams(**base, recon_circle=True))
    assert circ.hu[0, 0] == -1024 and circ.hu[-1, -1] == -1024


def test_fov_offset_cuts_the_body_off():
    p = PhantomParams(seed=5, body_lateral_mm=420, body_ap_mm=300, sat_mm=50, matrix=(256, 256),
                      pixel_spacing_mm=1.5, fov_offset_mm=(90.0, 0.0))
    s = make_slice(p)
    # the field of view moved towards the patient's left: the patient's right side (image left
    # edge) is cut off, the left side is not
    assert (s.structures[:, 0] != Structure.AIR).sum() > 20
    assert (s.structures[:, -1] == Structure.AIR).all() or (s.structures[:, -1] == Structure.TABLE).any()
    full = make_slice(p.with_(fov_offset_mm=(0.0, 0.0), matrix=(400, 400)))
    assert s.areas_cm2["sat"] < full.areas_cm2["sat"]
