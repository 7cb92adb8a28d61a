"""The classical baseline segmenter: interface, geometry handling, accuracy on synthetic slices,
and anatomical sanity on a real CT slice."""

from __future__ import annotations

import numpy as np
import pytest

import sarcoscope
from sarcoscope.segment.base import Segmenter
from sarcoscope.segment.baseline import BaselineSegmenter, segment_slice
from sarcoscope.tissues import AIR_HU, Tissue
from tests.conftest import require

PHANTOM_SEED = 2026
N_PHANTOMS = 20


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / s if s else 1.0


def simple_slice(spacing_mm: float = 0.8, n: int = 512, sat_mm: float = 25.0, noise: float = 12.0,
                 seed: int = 0, table: bool = True, shift_mm: tuple[float, float] = (0.0, 0.0),
                 oral_contrast: bool = False):
    """A deliberately plain L3-like slice with exact labels (ellipses; not the project phantom).

    Skin, SAT, a muscle wall with a linea alba gap, paraspinals with a fat pocket (IMAT),
    psoas beside a vertebra (cortex, trabecular bone, canal), kidneys in perirenal fat, aorta,
    bowel with gas and fluid in visceral fat, and a table under the body.
    """
    rng = np.random.default_rng(seed)
    c = (np.arange(n) - (n - 1) / 2) * spacing_mm
    y, x = np.meshgrid(c - shift_mm[0], c - shift_mm[1], indexing="ij")  # mm, + posterior / + left

    def ell(cy, cx, ry, rx):
        return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0

    hu = np.full((n, n), float(AIR_HU))
    lab = np.zeros((n, n), np.uint8)
    ry, rx = 115.0, 160.0
    body = ell(0, 0, ry, rx)
    hu[body] = 40.0  # skin
    inner = ell(0, 0, ry - 2.5, rx - 2.5)
    hu[inner] = -100.0
    lab[inner] = Tissue.SAT
    wall_o = ell(0, 0, ry - sat_mm, rx - sat_mm)
    wall_i = ell(0, 0, ry - sat_mm - 10, rx - sat_mm - 10)
    ring = wall_o & ~wall_i & ~((np.abs(x) < 4) & (y < 0))  # linea alba gap
    cavity = wall_i
    hu[wall_o & ~ring] = -90.0
    lab[wall_o & ~ring] = Tissue.VAT
    hu[ring] = 45.0
    lab[ring] = Tissue.MUSCLE
    gap = wall_o & ~wall_i & ~ring
    hu[gap] = 30.0  # linea alba: fascia, no label
    lab[gap] = 0
    by = ry - sat_mm - 10  # inner posterior wall y
    para = (ell(by - 30, -30, 30, 28) | ell(by - 30, 30, 30, 28)) & wall_o
    hu[para] = 45.0
    lab[para] = Tissue.MUSCLE
    pocket = ell(by - 30, -35, 5, 5)
    hu[pocket] = -80.0
    lab[pocket] = Tissue.IMAT
    vcy = by - 55  # vertebral body centre, in front of the paraspinals
    vb = ell(vcy, 0, 16, 22)
    arch = ell(vcy + 30, 0, 14, 12) | ((np.abs(x) < 4) & (y > vcy + 30) & (y < vcy + 55))
    canal = ell(vcy + 27, 0, 7, 9)
    bone = (vb | arch) & ~canal
    hu[bone] = 600.0
    hu[ell(vcy, 0, 13, 19)] = 220.0
    hu[canal] = 10.0
    lab[vb | arch] = 0
    psoas = ell(vcy - 2, -38, 15, 16) | ell(vcy - 2, 38, 15, 16)
    psoas &= ~vb
    hu[psoas] = 45.0
    lab[psoas] = Tissue.MUSCLE
    kid = ell(vcy - 5, -85, 30, 20) | ell(vcy - 5, 85, 30, 20)
    hu[kid] = 35.0
    lab[kid] = 0
    aorta = ell(vcy - 32, 12, 11, 11)
    hu[aorta] = 45.0
    lab[aorta] = 0
    for cy_, cx_, r in ((-40, -50, 20), (-35, 50, 22), (-80, 0, 16), (-35, -100, 10)):
        loop = ell(cy_, cx_, r, r)
        hu[loop] = 40.0
        hu[ell(cy_, cx_, r - 3, r - 3)] = -1000.0 if r > 17 else 10.0
        lab[loop] = 0
    if oral_contrast:  # a large contrast-filled loop in front of the spine, bigger than it
        loop = ell(vcy - 45, 0, 16, 40)
        hu[loop] = 400.0
        lab[loop] = 0
    if table:
        plate = (y > ry + 15) & (y < ry + 20) & (np.abs(x) < 200)
        hu[plate] = 150.0
    hu = hu + rng.normal(0, noise, hu.shape)
    hu[hu < AIR_HU] = AIR_HU
    # the labels follow the Alberta thresholds on the final pixels, as the phantom's do
    fat = (hu >= -190) & (hu <= -30)
    soft = (hu >= -29) & (hu <= 150)
    lab[(lab == Tissue.MUSCLE) & fat] = Tissue.IMAT
    lab[(lab == Tissue.MUSCLE) & ~soft & ~fat] = 0
    lab[(lab == Tissue.IMAT) & soft] = Tissue.MUSCLE
    lab[np.isin(lab, (Tissue.VAT, Tissue.SAT)) & ~fat] = 0
    return hu.astype(np.float32), lab, (spacing_mm, spacing_mm)


def per_class_dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {t.key: dice(pred == t, truth == t) for t in Tissue}


def phantom_dice(n: int, seed: int = PHANTOM_SEED, level: str = "L3") -> list[dict[str, float]]:
    """Per-class Dice of the baseline on ``n`` random project phantoms (fixed seed)."""
    from sarcoscope.phantom import make_slice, random_params

    rng = np.random.default_rng(seed)
    seg = BaselineSegmenter()
    rows = []
    for _ in range(n):
        ps = make_slice(random_params(rng), level=level)
        rows.append(per_class_dice(seg.segment(ps.hu, ps.pixel_spacing_mm), ps.labels))
    return rows


def test_implements_the_segmenter_protocol():
    seg = BaselineSegmenter()
    assert isinstance(seg, Segmenter)
    assert seg.name == "baseline-threshold"
    assert seg.version == sarcoscope.__version__
    assert seg.sha256 is None


def test_output_shape_dtype_and_values():
    hu, _, sp = simple_slice(n=256, spacing_mm=1.6)
    out = BaselineSegmenter().segment(hu, sp)
    assert out.shape == hu.shape and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 1, 2, 3, 4}


@pytest.mark.parametrize("spacing", [0.6, 0.8, 1.5, 3.0])
def test_simple_slice_accuracy_across_pixel_spacings(spacing):
    n = int(round(512 * 0.8 / spacing))
    hu, truth, sp = simple_slice(spacing_mm=spacing, n=n)
    d = per_class_dice(BaselineSegmenter().segment(hu, sp), truth)
    assert d["muscle"] >= 0.85, d
    assert d["sat"] >= 0.90, d
    assert d["vat"] >= 0.85, d


def test_labels_never_outside_alberta_windows():
    hu, _, sp = simple_slice(seed=3)
    out = BaselineSegmenter().segment(hu, sp)
    m = out == Tissue.MUSCLE
    f = np.isin(out, (Tissue.IMAT, Tissue.VAT, Tissue.SAT))
    assert m.any() and f.any()
    assert hu[m].min() >= -29 and hu[m].max() <= 150
    assert hu[f].min() >= -190 and hu[f].max() <= -30


def test_organs_are_never_muscle_and_table_is_ignored():
    hu, truth, sp = simple_slice(seed=1)
    out = BaselineSegmenter().segment(hu, sp)
    n = hu.shape[0]
    c = (np.arange(n) - (n - 1) / 2) * sp[0]
    y, x = np.meshgrid(c, c, indexing="ij")
    vcy = 115.0 - 25.0 - 10 - 55
    kidney = ((y - vcy + 5) / 30) ** 2 + ((np.abs(x) - 85) / 20) ** 2 <= 0.8
    aorta = ((y - vcy + 32) / 11) ** 2 + ((x - 12) / 11) ** 2 <= 0.8
    table = y > 125
    assert (out[kidney] == Tissue.MUSCLE).mean() < 0.02
    assert (out[aorta] == Tissue.MUSCLE).mean() < 0.02
    assert not out[table].any()


def test_body_cut_off_at_field_edge_and_padding():
    hu, truth, sp = simple_slice(shift_mm=(0.0, 60.0), table=False)  # left flank outside the FOV
    assert (hu[:, -1] > -500).any()
    d = per_class_dice(BaselineSegmenter().segment(hu, sp), truth)
    assert d["muscle"] >= 0.85 and d["sat"] >= 0.85, d


def test_empty_and_bad_input():
    out = BaselineSegmenter().segment(np.full((64, 64), AIR_HU, np.float32), (1.0, 1.0))
    assert not out.any()
    with pytest.raises(ValueError, match="2-D slice"):
        BaselineSegmenter().segment(np.zeros((2, 8, 8), np.float32), (1.0, 1.0))
    with pytest.raises(ValueError, match="pixel spacing must be positive"):
        BaselineSegmenter().segment(np.zeros((8, 8), np.float32), (0.0, 1.0))


def _read_real_slice(path):
    """One real CT slice through the project reader (display-oriented: the file's flipped rows
    are turned so that anterior is up)."""
    from sarcoscope.io import read_ct

    volume = read_ct(path)
    return volume.slice_hu(0), volume.pixel_spacing_mm


def test_real_slice_anatomy(real_ct):
    """TCIA Pancreas-CT slice (about L1–L2, portal venous contrast): regions checked by eye on
    an overlay (docs/baseline.md). Organs must not be muscle; back muscles must; SAT stays SAT."""
    path = real_ct / "edge-cases" / "explicit_VR-UN.dcm"
    require(path.is_file(), str(path))
    hu, sp = _read_real_slice(path)
    assert sp == pytest.approx((0.859375, 0.859375))
    lab = BaselineSegmenter().segment(hu, sp)
    rois = {  # (row0, row1, col0, col1) in display orientation
        "liver": (230, 290, 140, 190),
        "right kidney": (295, 335, 185, 215),
        "left kidney": (300, 335, 303, 335),
        "spleen": (280, 320, 355, 385),
        "aorta": (258, 272, 255, 272),
        "right paraspinal": (360, 385, 215, 245),
        "left paraspinal": (360, 385, 280, 310),
        "anterior SAT": (150, 162, 230, 290),  # above the linea alba
        "posterior SAT": (386, 392, 300, 330),
    }
    frac = {k: np.bincount(lab[r0:r1, c0:c1].ravel(), minlength=5) / ((r1 - r0) * (c1 - c0))
            for k, (r0, r1, c0, c1) in rois.items()}
    for organ in ("liver", "right kidney", "left kidney", "spleen", "aorta"):
        assert frac[organ][Tissue.MUSCLE] < 0.01, (organ, frac[organ])
    for muscle in ("right paraspinal", "left paraspinal"):
        assert frac[muscle][Tissue.MUSCLE] > 0.85, (muscle, frac[muscle])
    for fat in ("anterior SAT", "posterior SAT"):
        assert frac[fat][Tissue.SAT] > 0.9, (fat, frac[fat])
    area_cm2 = {t.key: float((lab == t).sum()) * sp[0] * sp[1] / 100 for t in Tissue}
    assert 60 < area_cm2["muscle"] < 200, area_cm2


def _phantom_available() -> bool:
    try:
        from sarcoscope.phantom import make_slice, random_params  # noqa: F401
    except ImportError:
        return False
    return True


def test_phantom_dice_over_random_bodies():
    """Per-class Dice against the phantom's exact labels over 20 random bodies/acquisitions.

    Thresholds are what the baseline honestly reaches (docs/baseline.md has the full table);
    the trained model must beat them.
    """
    require(_phantom_available(), "sarcoscope.phantom (make_slice, random_params)")
    rows = phantom_dice(N_PHANTOMS)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    worst = {k: float(np.min([r[k] for r in rows])) for k in rows[0]}
    # margins below the measured numbers (docs/baseline.md) leave room for phantom revisions
    assert mean["muscle"] >= 0.85, (mean, worst)
    assert mean["sat"] >= 0.85, (mean, worst)
    assert mean["vat"] >= 0.85, (mean, worst)
    assert mean["imat"] >= 0.50, (mean, worst)
    assert worst["muscle"] >= 0.70 and worst["vat"] >= 0.70, (mean, worst)


if __name__ == "__main__":  # the numbers in docs/baseline.md
    import argparse
    import math
    import time

    from sarcoscope.phantom import make_slice, random_params

    ap = argparse.ArgumentParser(description="Baseline Dice and speed on random project phantoms")
    ap.add_argument("--phantoms", type=int, default=N_PHANTOMS)
    ap.add_argument("--seed", type=int, default=PHANTOM_SEED)
    ap.add_argument("--level", default="L3")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    seg = BaselineSegmenter()
    res, cpu_ms, cpu_ms_512 = [], [], []
    for _ in range(args.phantoms):
        ps = make_slice(random_params(rng), level=args.level)
        dt = math.inf
        for _ in range(3):  # best of 3: the machine is shared, contention only adds time
            t0 = time.process_time()
            out = seg.segment(ps.hu, ps.pixel_spacing_mm)
            dt = min(dt, (time.process_time() - t0) * 1000)
        cpu_ms.append(dt)
        if ps.hu.shape == (512, 512):
            cpu_ms_512.append(dt)
        res.append(per_class_dice(out, ps.labels))
    print(f"{len(res)} phantoms, seed {args.seed}, level {args.level}")
    print("class   mean   median  p10    min")
    for k in res[0]:
        v = np.array([r[k] for r in res])
        print(f"{k:7s} {v.mean():.3f}  {np.median(v):.3f}   {np.percentile(v, 10):.3f}  {v.min():.3f}")
    print(f"segment CPU time per slice (best of 3, process_time): median {np.median(cpu_ms):.0f} ms (all), "
          f"{np.median(cpu_ms_512) if cpu_ms_512 else float('nan'):.0f} ms "
          f"(512x512, n={len(cpu_ms_512)}), max {max(cpu_ms):.0f} ms")


def test_non_finite_hu_is_treated_as_air():
    hu, truth, sp = simple_slice(n=256, spacing_mm=1.6)
    hu[:10, :10] = np.nan
    hu[-5:, -5:] = np.inf
    out = BaselineSegmenter().segment(hu, sp)
    assert not out[:10, :10].any() and not out[-5:, -5:].any()
    assert per_class_dice(out, truth)["muscle"] >= 0.85


def test_contrast_filled_bowel_is_not_taken_for_the_vertebra():
    hu, truth, sp = simple_slice(oral_contrast=True, seed=5)
    dbg = segment_slice(hu, sp)
    assert dbg.vertebra is not None
    rows = np.nonzero(dbg.vertebra)[0]
    n = hu.shape[0]
    vcy_row = (n - 1) / 2 + (115.0 - 25.0 - 10 - 55) / sp[0]  # vertebral body centre row
    assert rows.min() > vcy_row - 20 / sp[0]  # nothing of the loop (centred 45 mm in front)
    assert per_class_dice(dbg.labels, truth)["muscle"] >= 0.85
