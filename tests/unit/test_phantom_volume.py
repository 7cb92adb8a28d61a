"""Phantom volumes: the spine ground truth, variants, coverage, geometry."""

from __future__ import annotations

import numpy as np
import pytest

from sarcoscope.phantom import COVERAGES, PhantomParams, SpineParams, make_volume, random_spine
from sarcoscope.tissues import Tissue
from sarcoscope.types import CTVolume

FAST = dict(matrix=(128, 128), pixel_spacing_mm=3.0)


def vol(seed=0, spine=None, **kw):
    kw.setdefault("slice_spacing_mm", 5.0)
    kw.setdefault("template_step_mm", 20.0)
    return make_volume(PhantomParams(seed=seed, **FAST), spine, **kw)


def names(pv):
    return [v.name for v in pv.vertebrae]


def test_volume_is_a_valid_ctvolume_with_labels_and_truth():
    pv = vol(1)
    v = pv.volume
    assert isinstance(v, CTVolume)
    assert v.hu.dtype == np.int16 and pv.labels.shape == v.hu.shape and pv.labels.dtype == np.uint8
    assert v.series.format == "phantom" and v.patient.sex == "M" and v.patient.height_m == 1.75
    assert v.spacing_mm == pytest.approx((5.0, 3.0, 3.0))
    assert len(set(v.slice_uids)) == v.n_slices
    # vertebrae ordered inferior → superior with non-overlapping bodies and discs 6-14 mm
    zs = [x.z_mm for x in pv.vertebrae]
    assert zs == sorted(zs)
    for lo, hi in zip(pv.vertebrae[:-1], pv.vertebrae[1:]):
        assert lo.z_bottom_mm < lo.z_mm < lo.z_top_mm
        gap = hi.z_bottom_mm - lo.z_top_mm
        assert 2.0 <= gap <= 14.0, (lo.name, hi.name, gap)
    assert names(pv) == ["S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10"]
    # l3_index is the slice nearest mid-L3
    l3 = pv.vertebra("L3")
    k = pv.l3_index
    assert k is not None
    assert abs(v.z_mm(k) - l3.z_mm) <= 2.5 + 1e-6
    assert l3.z_bottom_mm <= v.z_mm(k) <= l3.z_top_mm
    # the L3 slice has all four tissues
    counts = np.bincount(pv.labels[k].ravel(), minlength=5)
    assert all(counts[int(t)] > 0 for t in Tissue)


def test_bone_is_where_the_truth_says():
    """Mid-vertebra slices have dense bone at the spine; disc centres have less."""
    pv = vol(2, slice_spacing_mm=1.0, z_range_mm=(0.0, 120.0))
    v = pv.volume
    col = v.hu.shape[2] // 2
    def bone_at(z):
        k = int(round((z - v.z_mm(0)) / v.spacing_mm[0]))
        return float((v.hu[k, :, col - 4 : col + 5] > 200).sum())
    assert [x.name for x in pv.vertebrae][:4] == ["S1", "L5", "L4", "L3"]
    for lo, hi in zip(pv.vertebrae[1:-1], pv.vertebrae[2:]):
        if hi.z_bottom_mm > 120.0 or lo.z_bottom_mm < 0.0:
            continue
        disc_z = 0.5 * (lo.z_top_mm + hi.z_bottom_mm)
        assert bone_at(lo.z_mm) > bone_at(disc_z), lo.name


@pytest.mark.parametrize(
    "spine, expect_last_lumbar, expect_thoracic",
    [
        (SpineParams(lumbar_count=4), "L4", "T12"),
        (SpineParams(lumbar_count=6), "L6", "T12"),
        (SpineParams(rib_pairs=11), "L5", "T11"),
        (SpineParams(rib_pairs=13), "L5", "T13"),
    ],
)
def test_variants_change_the_counts(spine, expect_last_lumbar, expect_thoracic):
    pv = vol(3, spine, coverage="abdomen-pelvis")
    n = names(pv)
    lumbar = [x for x in n if x.startswith("L")]
    assert lumbar[0] == expect_last_lumbar  # inferior first
    assert expect_thoracic in n
    assert pv.variant == spine.variant != "normal"
    assert pv.l3_index is not None


def test_coverages():
    assert set(COVERAGES) >= {"whole", "abdomen", "chest", "abdomen-pelvis"}
    chest = vol(4, coverage="chest")
    assert chest.l3_index is None and "L3" not in names(chest)
    upper = vol(4, coverage="upper-abdomen")
    assert upper.l3_index is None
    whole = vol(4, coverage="whole", slice_spacing_mm=8.0)
    assert whole.l3_index is not None and "T6" in names(whole) and "S1" in names(whole)
    with pytest.raises(ValueError, match="coverage 'head'"):
        vol(4, coverage="head")


def test_n_slices_and_custom_range():
    pv = make_volume(PhantomParams(seed=5, **FAST), z_range_mm=(-20.0, 60.0), n_slices=9, z_origin_mm=0.0,
                     template_step_mm=20.0)
    assert pv.volume.n_slices == 9
    assert pv.volume.z_mm(0) == pytest.approx(-20.0) and pv.volume.z_mm(8) == pytest.approx(60.0)
    with pytest.raises(ValueError, match="not both"):
        make_volume(PhantomParams(**FAST), n_slices=5, slice_spacing_mm=2.0)


def test_volume_is_deterministic():
    a, b = vol(6), vol(6)
    np.testing.assert_array_equal(a.volume.hu, b.volume.hu)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.volume.affine.tolist() == b.volume.affine.tolist()


def test_random_spine_variant_frequencies():
    rng = np.random.default_rng(0)
    spines = [random_spine(rng) for _ in range(3000)]
    sacral = np.mean([s.lumbar_count == 4 for s in spines])
    lumbar6 = np.mean([s.lumbar_count == 6 for s in spines])
    hypo = np.mean([s.hypoplastic_last_rib for s in spines])
    assert 0.10 < sacral < 0.15 and 0.025 < lumbar6 < 0.055 and 0.10 < hypo < 0.16
    with pytest.raises(ValueError, match="lumbar_count must be 4, 5 or 6"):
        SpineParams(lumbar_count=7)
