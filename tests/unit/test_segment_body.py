"""The trunk outline: arms and table off, the trunk (lungs, folds, thin walls) kept whole."""

from __future__ import annotations

import numpy as np

from sarcoscope.segment.body import trunk_mask

SP = (0.8, 0.8)


def _ellipse(shape, centre, axes):
    r, c = np.ogrid[: shape[0], : shape[1]]
    return ((r - centre[0]) / axes[0]) ** 2 + ((c - centre[1]) / axes[1]) ** 2 <= 1.0


def _trunk(shape=(400, 500)):
    hu = np.full(shape, -1000.0, np.float32)
    body = _ellipse(shape, (200, 250), (120, 170))
    hu[body] = 40.0
    hu[_ellipse(shape, (260, 250), (18, 18))] = 700.0  # vertebra
    return hu, body


def test_arm_resting_broadly_on_the_flank_is_cut_off():
    hu, body = _trunk()
    arm = _ellipse(hu.shape, (200, 455), (45, 45))  # overlaps the flank by ~35 px: a broad contact
    hu[arm] = 40.0
    hu[_ellipse(hu.shape, (200, 465), (10, 10))] = 900.0  # humerus
    mask = trunk_mask(hu, SP)
    assert not mask[200, 465], "the humerus must not be trunk"
    assert not mask[200, 485], "the arm's far side must not be trunk"
    assert mask[body & ~arm].mean() > 0.99
    assert mask[200, 100] and mask[200, 250]


def test_a_fold_without_bone_stays_trunk():
    hu, body = _trunk()
    fold = _ellipse(hu.shape, (330, 250), (40, 60))  # a pannus hanging off the belly, no bone
    hu[fold] = -100.0
    mask = trunk_mask(hu, SP)
    assert mask[fold].mean() > 0.99
    assert mask[body].mean() > 0.99


def test_lungs_behind_a_thin_wall_stay_inside_the_trunk():
    hu, body = _trunk()
    for c in (160, 340):
        lung = _ellipse(hu.shape, (230, c), (80, 70))
        hu[lung & _ellipse(hu.shape, (200, 250), (112, 162))] = -850.0  # leaves a ~6 mm wall
    hu[_ellipse(hu.shape, (300, 160), (4, 20))] = 500.0  # a rib in the thin wall
    mask = trunk_mask(hu, SP)
    assert mask[body].mean() > 0.99


def test_table_and_separate_arm_are_dropped():
    hu, body = _trunk()
    hu[340:350, 20:480] = 100.0  # table, touching the back by a thin bridge
    hu[318:340, 245:255] = 40.0
    arm = _ellipse(hu.shape, (200, 470), (25, 25))
    hu[arm & ~body] = 40.0
    mask = trunk_mask(hu, SP)
    assert not mask[345, 30:470].any()
    assert not mask[200, 480]
    assert mask[body].mean() > 0.99


def test_empty_slice_gives_empty_mask():
    assert not trunk_mask(np.full((64, 64), -1000.0, np.float32), SP).any()
