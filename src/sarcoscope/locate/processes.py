"""How far the transverse processes of each vertebra reach to the sides.

L3 has the longest transverse processes of the lumbar spine (ANATOMY.md), so their length is a
tie-breaker when counting from the last rib and counting up from the sacrum disagree, and a
check on a count made from one end only. Read on the full-resolution array, in a thin band
behind the body (pedicles and transverse processes), on the slices of the body's upper part
where the processes leave it.
"""

from __future__ import annotations

import numpy as np

from sarcoscope.locate.column import METAL_HU, Column, Work

#: Antero-posterior band (mm behind the body centre) that holds the pedicles and processes.
TP_BAND_MM = (12.0, 40.0)
#: Lateral distance (mm) from the midline where the walk outwards starts (the pedicle).
TP_START_MM = 16.0
#: Inside this lateral distance (mm) the bar may be thick (pedicle, lamina, facet joints).
TP_ROOT_MM = 28.0
#: Bone threshold for the processes (HU): thin bone of marrow and cortex, partial volume.
TP_HU = 150.0
#: A gap of this many mm without bone ends the process.
TP_GAP_MM = 2.0
#: Thickest bar (mm, antero-posterior) still taken for a transverse process.
TP_MAX_THICK_MM = 14.0
#: How far (mm) the bar may move forwards or backwards beyond its root.
TP_MAX_DRIFT_MM = 5.0
#: Part of the body (fraction of its height from the bottom) where the processes are read.
TP_ZONE = (0.35, 0.85)
#: Quantile of the per-slice reaches taken for the body: a slice through the upper or lower
#: edge of a process shows it shorter (partial volume, thick slices), never longer.
TP_QUANTILE = 75.0
#: Most slices read per body, and the in-plane spacing (mm) they are read at.
TP_MAX_SLICES = 5
TP_PIXEL_MM = 1.0
#: A slice with at least this many metal pixels (> 2000 HU) in the band is not read.
TP_METAL_PX = 3
#: Farthest reach (mm) considered: beyond it the bone is a rib or the pelvis.
TP_MAX_MM = 85.0


def _walk(mask: np.ndarray, cols: np.ndarray, d_mm: np.ndarray, dj_mm: float, gap_px: int) -> float:
    """Follow a thin horizontal bone bar outwards through ``mask[row, col]``.

    Starts at the bone run nearest the middle of the band in the first columns (the root of
    the process beside the pedicle) and moves out one column at a time, keeping to within
    one row of the bar; a run thicker than a process (a kidney with contrast, the iliac
    wing, a sacral ala) or a gap of ``gap_px`` columns ends it. Returns the reach in mm.
    """
    n_rows = mask.shape[0]
    max_thick = max(3, int(round(TP_MAX_THICK_MM / dj_mm)))
    row = None
    for n in range(min(len(cols), gap_px + 2)):
        rows = np.nonzero(mask[:, cols[n]])[0]
        if rows.size:
            row = int(rows[np.argmin(np.abs(rows - n_rows / 2))])
            break
    if row is None:
        return float("nan")
    reach = float("nan")
    gap = 0
    root_row = None
    max_drift = max(1, int(round(TP_MAX_DRIFT_MM / dj_mm)))
    for n in range(len(cols)):
        c = mask[:, cols[n]]
        lo, hi = max(0, row - 1), min(n_rows, row + 2)
        hit = np.nonzero(c[lo:hi])[0]
        if hit.size == 0:
            gap += 1
            if gap > gap_px:
                break
            continue
        r = lo + int(hit[np.argmin(np.abs(lo + hit - row))])
        # extent of the bone run through r along the column
        a = r
        while a > 0 and c[a - 1]:
            a -= 1
        b = r
        while b + 1 < n_rows and c[b + 1]:
            b += 1
        if b - a + 1 > max_thick:
            if d_mm[n] > TP_ROOT_MM:
                break
            row = r
        else:
            row = (a + b) // 2
        if d_mm[n] > TP_ROOT_MM:
            # Beyond the root the process runs nearly straight out; a rib or a kidney touching
            # its tip curves away forwards or backwards.
            if root_row is None:
                root_row = row
            elif abs(row - root_row) > max_drift:
                break
        reach = float(d_mm[n])
        gap = 0
    return reach


def tp_reach_mm(work: Work, column: Column, bottom_mm: float, top_mm: float) -> float:
    """Median over the slices of the body's upper part of the mean reach (mm) of the two
    transverse processes from the midline; NaN when no slice shows both."""
    full = work.full
    dz = work.z_mm
    h = top_mm - bottom_mm
    lo, hi = bottom_mm + TP_ZONE[0] * h, bottom_mm + TP_ZONE[1] * h
    ks = np.nonzero((dz >= lo) & (dz <= hi))[0]
    if ks.size == 0:
        return float("nan")
    if ks.size > TP_MAX_SLICES:  # a few slices per body are enough; thin slices cost time
        ks = ks[np.unique(np.linspace(0, ks.size - 1, TP_MAX_SLICES).round().astype(int))]
    # Read at about 1 mm in-plane: fine enough for the tip, cheap on 0.6–0.8 mm pixels.
    sj = max(1, int(round(TP_PIXEL_MM / (work.dj_mm / work.step_j))))
    si = max(1, int(round(TP_PIXEL_MM / (work.di_mm / work.step_i))))
    full = full[:, ::sj, ::si]
    dj = work.dj_mm / work.step_j * sj
    di = work.di_mm / work.step_i * si
    ic = (column.i_c * work.step_i + work.step_i // 2) // si
    n_i = full.shape[2]
    i_start = int(round(TP_START_MM / di))
    i_stop = int(round(TP_MAX_MM / di))
    gap_px = max(1, int(round(TP_GAP_MM / di)))
    vals = []
    for k in ks:
        jc = (column.j_body[k] * work.step_j + work.step_j // 2) // sj
        a = max(0, jc + int(round(TP_BAND_MM[0] / dj)))
        b = min(full.shape[1], jc + int(round(TP_BAND_MM[1] / dj)) + 1)
        if b <= a:
            continue
        block = full[k, a:b]
        if np.count_nonzero(block >= METAL_HU) >= TP_METAL_PX:
            # Pedicle screws or rods: the streaks they cast along the processes lengthen or
            # cut them at random, so this slice says nothing about their reach.
            continue
        mask = (block > TP_HU) & (block < METAL_HU)
        reach = []
        for side in (-1, 1):
            idx = ic + side * np.arange(i_start, i_stop + 1)
            idx = idx[(idx >= 0) & (idx < n_i)]
            if idx.size < 3:
                break
            d_mm = np.abs(idx - ic) * di
            reach.append(_walk(mask, idx, d_mm, dj, gap_px))
        if len(reach) == 2 and np.isfinite(reach).all():
            vals.append(0.5 * (reach[0] + reach[1]))
    return float(np.percentile(vals, TP_QUANTILE)) if vals else float("nan")
