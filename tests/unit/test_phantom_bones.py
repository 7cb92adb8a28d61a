"""The phantom's bones where counting the spine depends on them: lumbar ribs and T12.

A lumbar rib (an extra rib on L1) articulates with the tip of L1's transverse process and
has no joint with the vertebral body; the last thoracic vertebra (T12) has rudimentary
transverse processes (a few mm) while L1–L5 have long ones, L3's the longest
(/work/shared/ANATOMY.md, anatomy textbooks). The L3 finder reads both signs, so the
phantom it is scored on must draw them right.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sarcoscope.phantom import PhantomParams, SpineParams, make_volume
from sarcoscope.phantom.anatomy import Subject
from sarcoscope.phantom.shapes import Canvas
from sarcoscope.phantom.slice import grid_for
from sarcoscope.phantom.structures import S

FINE = dict(matrix=(320, 320), pixel_spacing_mm=0.5)


def _bones(subject: Subject, z_mm: float):
    """Clean bone mask (no soft tissue, no noise) at height z, with its grid and frame.

    Bone is what the painter labels cortex or marrow (soft marrow can be below 100 HU).
    """
    grid = grid_for(subject.p)
    cv = Canvas(grid, -1000.0, int(S.AIR))
    fr = subject.frame(z_mm)
    subject.paint_bones(cv, fr, 1.0)
    x = grid.xs()[None, :]
    y = grid.ys()[:, None]
    return np.isin(cv.sid, (int(S.CORTEX), int(S.TRABECULAR))), x, y, fr


def _head_zone_pixels(subject: Subject, name: str) -> list[int]:
    """Bone pixels joined to the body beside its back half, per slice of the rib-head zone.

    The costovertebral joint of a thoracic rib lies on the side of its own body at the
    pedicle level; the zone is 5–20 mm beyond the body's side wall, from the body's centre to
    0.45 of its depth behind it (pedicles and facets stay inside the body's width there).
    """
    v = subject.spine.by_name(name)
    counts = []
    for z in np.linspace(v.z_top_mm - 0.55 * v.height_mm, v.z_top_mm - 0.15 * v.height_mm, 6):
        bone, x, y, fr = _bones(subject, float(z))
        lab, _ = ndimage.label(bone)
        r = int(np.argmin(np.abs(y[:, 0] - fr.y_vb)))
        c = int(np.argmin(np.abs(x[0, :])))
        assert bone[r, c], "the vertebral body is drawn at this height"
        joined = lab == lab[r, c]
        ax = np.abs(x)
        zone = (ax > fr.vb_w / 2 + 5.0) & (ax < fr.vb_w / 2 + 20.0) & (y > fr.y_vb) & (y < fr.y_vb + 0.45 * fr.vb_d)
        counts.append(int((joined & zone).sum()))
    return counts


@pytest.mark.parametrize("seed", [0, 5])
def test_lumbar_rib_has_no_head_on_the_l1_body(seed):
    subject = Subject(PhantomParams(seed=seed, **FINE), SpineParams(lumbar_rib=True))
    # the thoracic rib of T12 does articulate with its body (control: the zone sees a head)
    assert min(_head_zone_pixels(subject, "T12")) > 20
    # the lumbar rib does not: nothing joined to L1 beside the back half of its body
    assert max(_head_zone_pixels(subject, "L1")) == 0


def test_lumbar_rib_starts_at_the_tip_of_the_l1_transverse_process():
    subject = Subject(PhantomParams(seed=2, **FINE), SpineParams(lumbar_rib=True))
    plain = Subject(PhantomParams(seed=2, **FINE), SpineParams(lumbar_rib=False))
    sp = subject.spine
    l1 = sp.by_name("L1")
    z = l1.z_top_mm - 0.3 * l1.height_mm
    bone, x, y, fr = _bones(subject, z)
    bone0, *_ = _bones(plain, z)
    rib = bone & ~bone0
    tip_mm = fr.vb_w * 0.33 + sp.tp_length_mm(l1)
    for side in (-1, 1):
        mine = rib & (np.sign(x) == side)
        assert mine.sum() > 50, "the lumbar rib is drawn on both sides"
        ax = np.abs(np.broadcast_to(x, bone.shape))[mine]
        # it begins at the process's tip and reaches well beyond it, never near the body
        assert ax.min() > tip_mm - 6.0
        assert ax.max() > tip_mm + 20.0
    # and it is one piece with the vertebra (fused to / articulating with the process tip)
    lab, _ = ndimage.label(bone)
    r = int(np.argmin(np.abs(y[:, 0] - fr.y_vb)))
    c = int(np.argmin(np.abs(x[0, :])))
    assert np.all(lab[rib] == lab[r, c])


def _tp_span_mm(subject: Subject, name: str) -> float:
    """Tip-to-tip width of the posterior elements at the pedicle level (ribs not drawn)."""
    v = subject.spine.by_name(name)
    spans = []
    for z in np.linspace(v.z_top_mm - 0.5 * v.height_mm, v.z_top_mm - 0.2 * v.height_mm, 5):
        bone, x, y, fr = _bones(subject, float(z))
        y_post = fr.y_vb + fr.vb_d / 2
        band = bone & (y > y_post - 3.0) & (y < y_post + 40.0)
        xs = np.broadcast_to(x, bone.shape)[band]
        spans.append(float(xs.max() - xs.min()))
    return max(spans)


@pytest.mark.parametrize("rib_pairs", [11, 12, 13])
def test_last_thoracic_transverse_processes_are_rudimentary(monkeypatch, rib_pairs):
    # only the processes are compared: the rib necks would pass where a long process lies
    monkeypatch.setattr(Subject, "_rib_neck", lambda *a, **k: None)
    monkeypatch.setattr(Subject, "_rib_shafts", lambda *a, **k: None)
    subject = Subject(PhantomParams(seed=1, **FINE), SpineParams(rib_pairs=rib_pairs))
    last = f"T{rib_pairs}"
    span = {name: _tp_span_mm(subject, name) for name in (f"T{rib_pairs - 3}", last, "L1", "L2", "L3", "L4")}
    assert span[last] < span["L1"] - 15.0, span
    assert span[last] < span[f"T{rib_pairs - 3}"] - 30.0, span  # the mid-thoracic ones are long
    assert span["L1"] < span["L2"] < span["L3"] and span["L4"] < span["L3"], span  # L3 longest


def test_transverse_process_lengths_by_level():
    sp = Subject(PhantomParams(seed=0, **FINE), SpineParams(lumbar_count=6)).spine
    mm = {v.name: sp.tp_length_mm(v) for v in sp.vertebrae}
    assert mm["T12"] <= 6.0 and mm["T11"] < mm["T10"]
    lumbar = [mm[f"L{i}"] for i in range(1, 7)]
    assert min(lumbar) >= 15.0 and max(lumbar) == mm["L3"]
    assert mm["S1"] == 0.0


def test_lumbar_rib_in_a_rendered_volume_leaves_the_l1_body_free():
    params = PhantomParams(seed=4, matrix=(200, 200), pixel_spacing_mm=1.2, noise_sd=8.0)
    spine = SpineParams(lumbar_rib=True)
    subject = Subject(params, spine)
    l1, t12 = subject.spine.by_name("L1"), subject.spine.by_name("T12")
    pv = make_volume(params, spine, z_range_mm=(l1.z_bottom_mm, t12.z_top_mm), slice_spacing_mm=2.0,
                     template_step_mm=20.0, z_origin_mm=0.0)
    hu = pv.volume.hu
    z0 = pv.volume.affine[2, 3]
    grid = grid_for(params)
    x = grid.xs()[None, :]
    y = grid.ys()[:, None]

    def head_pixels(v):
        # dense bone (> 250 HU; the scan is without contrast) beside the back half of the body
        out = []
        for k in range(hu.shape[0]):
            z = z0 + 2.0 * k
            if not v.z_top_mm - 0.55 * v.height_mm <= z <= v.z_top_mm - 0.15 * v.height_mm:
                continue
            fr = subject.frame(z)
            ax = np.abs(x)
            zone = (ax > fr.vb_w / 2 + 3) & (ax < fr.vb_w / 2 + 20) & (y > fr.y_vb) & (y < fr.y_vb + 0.5 * fr.vb_d + 3)
            out.append(int(((hu[k] > 250) & zone).sum()))
        return out

    assert head_pixels(l1) and max(head_pixels(l1)) == 0
    assert min(head_pixels(t12)) > 5  # control: T12's own rib heads are seen there
