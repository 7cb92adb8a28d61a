"""The vertebra on an axial abdominal slice, found from its dense bone alone.

Both segmenters need it: the baseline builds the psoas and paraspinal zones around it, and
the model's island check (``segment.islands``) accepts muscle lying against it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.segment.body import fill_holes

#: Smallest vertebra cross-section accepted (mm²); ribs and calcified vessels are smaller.
VERTEBRA_MIN_MM2 = 300.0


def find_vertebra(
    dense: np.ndarray,
    body: np.ndarray,
    spacing: tuple[float, float],
    min_area_mm2: float = VERTEBRA_MIN_MM2,
) -> np.ndarray | None:
    """The dense component near the midline that reaches furthest back (at least ``min_area_mm2``).

    Only a window around the body's midline (±20 % of its width, behind the front quarter of
    its depth) is searched: the vertebra is there in every abdominal slice, ribs,
    contrast-filled bowel and calcified vessels mostly elsewhere. The component is closed over
    1.5 mm gaps and its holes filled, so a thin cortex around soft (osteoporotic) trabecular
    bone still gives the whole vertebral body. None when no component is large enough.
    """
    rows, cols = np.nonzero(body)
    if rows.size == 0:
        return None
    cx = cols.mean()
    width = (cols.max() - cols.min() + 1) * spacing[1]
    half = int(0.2 * width / spacing[1]) + 1
    r0 = int(rows.min() + 0.25 * (rows.max() - rows.min()))
    c0, c1 = max(0, int(cx) - half), min(body.shape[1], int(cx) + half + 1)
    win = dense[r0:, c0:c1]
    if not win.any():
        return None
    it = max(1, round(1.5 / min(spacing)))
    closed = ndi.binary_closing(np.pad(win, it), structure=np.ones((3, 3), bool), iterations=it)
    closed = fill_holes(closed[it:-it, it:-it])
    lab, n = ndi.label(closed)
    if n == 0:
        return None
    area = np.bincount(lab.ravel())[1:] * spacing[0] * spacing[1]
    ok = np.flatnonzero(area >= min_area_mm2) + 1
    if ok.size == 0:
        return None
    # the vertebra reaches furthest back (spinous process); contrast-filled bowel, a calcified
    # aorta or the kidneys' enhancing cortex lie in front of it
    rows_idx = np.arange(lab.shape[0])[:, None]
    back_row = ndi.maximum(np.broadcast_to(rows_idx, lab.shape), lab, ok)
    best = int(ok[int(np.argmax(back_row))])
    out = np.zeros(dense.shape, bool)
    out[r0:, c0:c1] = lab == best
    return out
