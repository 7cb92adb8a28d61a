"""Slice streams of the training data (train.data)."""

from __future__ import annotations

import numpy as np


def test_draw_phantom_params_is_the_draw_slice_draw() -> None:
    """The cheap parameter draw gives the level and body of the slice draw_slice renders."""
    from sarcoscope.phantom import make_slice
    from sarcoscope.train.assess import heldout_source
    from sarcoscope.train.data import draw_phantom_params, draw_slice

    src = heldout_source()
    level, params = draw_phantom_params(src, 3)
    drawn = draw_slice(src, 3)
    assert level == drawn.level
    assert np.array_equal(make_slice(params, level=level).hu, drawn.hu)
