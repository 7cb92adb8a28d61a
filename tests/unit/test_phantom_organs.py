"""Organ realism of the phantom: kidney phases and variants, spleen at T12, bowel against muscle.

These are the structures the model confused with muscle on real CT (renal medulla, spleen,
fluid bowel by the psoas); the phantom must show them often and in every contrast phase.
"""

from __future__ import annotations

import numpy as np
import pytest

from sarcoscope.phantom import make_slice, random_params
from sarcoscope.phantom.anatomy import Subject
from sarcoscope.phantom.structures import S
from sarcoscope.tissues import Tissue

ORGANS = (S.KIDNEY_CORTEX, S.KIDNEY_MEDULLA, S.URINE, S.SPLEEN, S.LIVER, S.BOWEL_WALL, S.FLUID)


def _small(rng, **kw):
    """Random body on a coarse grid (fast) with the full field of view."""
    return random_params(rng, pixel_spacing_mm=1.5, matrix=(320, 320), fov_offset_mm=(0.0, 0.0), **kw)


def _touching(sid: np.ndarray, a: tuple, b: tuple) -> int:
    """Number of ``a`` pixels 4-adjacent to a ``b`` pixel (from the structure map)."""
    ma, mb = np.isin(sid, a), np.isin(sid, b)
    nb = np.zeros_like(mb)
    nb[1:] |= mb[:-1]
    nb[:-1] |= mb[1:]
    nb[:, 1:] |= mb[:, :-1]
    nb[:, :-1] |= mb[:, 1:]
    return int((ma & nb).sum())


def test_kidney_hu_covers_every_renal_phase():
    rng = np.random.default_rng(5)
    subs = [Subject(random_params(rng)) for _ in range(150)]
    phases = {s.renal_phase for s in subs}
    assert phases == {"unenhanced", "corticomedullary", "nephrographic", "excretory"}
    for s in subs:
        cortex, medulla = s.hu[S.KIDNEY_CORTEX], s.hu[S.KIDNEY_MEDULLA]
        if s.renal_phase == "unenhanced":
            assert 30 <= cortex <= 45 and 20 <= medulla <= cortex  # inside the muscle window
            assert s.p.contrast == "none"
        elif s.renal_phase == "excretory":
            assert s.p.contrast == "portal" and 300 <= s.urine_hu <= 1500 and 120 <= cortex <= 180
        else:
            assert s.p.contrast != "none" and s.urine_hu <= 20
    # corticomedullary: medulla inside the muscle window, cortex far above it
    cm = [s for s in subs if s.renal_phase == "corticomedullary"]
    assert all(60 <= s.hu[S.KIDNEY_MEDULLA] <= 140 and s.hu[S.KIDNEY_CORTEX] >= 150 for s in cm)


def test_kidney_variants_occur():
    rng = np.random.default_rng(6)
    var = [Subject(random_params(rng)).kidney_var for _ in range(400)]
    absent = sum(not v[side][0] for v in var for side in (1, -1))
    atrophic = sum(v[side][1] < 0.8 for v in var for side in (1, -1))
    cysts = sum(len(v[side][2]) > 0 for v in var for side in (1, -1))
    assert 4 <= absent <= 40 and 20 <= atrophic <= 110 and 80 <= cysts <= 300
    assert all(v[1][0] or v[-1][0] for v in var)  # never both kidneys removed


def test_excretory_collecting_system_is_bright_and_unlabelled():
    rng = np.random.default_rng(8)
    for _ in range(200):
        p = _small(rng, contrast="portal")
        if Subject(p).renal_phase == "excretory":
            break
    else:
        pytest.fail("no excretory-phase subject in 200 portal draws")
    sl = make_slice(p, "L2")
    urine = sl.structures == S.URINE
    assert urine.sum() > 0 and np.percentile(sl.hu[urine], 90) > 250
    kid = np.isin(sl.structures, (S.KIDNEY_CORTEX, S.KIDNEY_MEDULLA))
    assert kid.sum() > 0 and np.all(sl.labels[kid] == 0)


def test_organs_never_labelled_muscle_and_spleen_present_at_t12():
    rng = np.random.default_rng(9)
    with_spleen = 0
    n = 14
    for i in range(n):
        p = _small(rng, contrast=("none", "arterial", "portal")[i % 3])
        sl = make_slice(p, "T12")
        org = np.isin(sl.structures, ORGANS)
        assert not np.any(sl.labels[org] == Tissue.MUSCLE)
        spleen_cm2 = (sl.structures == S.SPLEEN).sum() * sl.pixel_area_cm2
        with_spleen += spleen_cm2 > 8.0
    assert with_spleen >= 0.75 * n


def test_bowel_often_touches_psoas_and_wall_muscle():
    rng = np.random.default_rng(10)
    bowel = (S.BOWEL_WALL, S.FLUID, S.GAS, S.FAECES, S.ORAL_CONTRAST)
    n, psoas, wall = 16, 0, 0
    for i in range(n):
        sl = make_slice(_small(rng), ("L2", "L3")[i % 2])
        psoas += _touching(sl.structures, bowel, (S.PSOAS,)) >= 10
        wall += _touching(sl.structures, bowel, (S.WALL, S.RECTUS, S.QL)) >= 10
    assert psoas >= 0.5 * n
    assert wall >= 0.6 * n
