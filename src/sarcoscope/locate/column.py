"""Find the spinal column in a CT volume and follow its vertebral bodies from bottom to top.

Works on a coarse copy of the volume (about 2 mm in-plane, every slice): the finder only needs
bone positions to a few millimetres, and striding the array costs a few tens of milliseconds
where full-resolution filtering would cost seconds.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d

from sarcoscope.types import CTVolume

log = logging.getLogger(__name__)

#: Bone threshold (HU). Trabecular bone 100–300, cortex 400–1200, discs 70–110.
BONE_HU = 180.0
#: Anything above this is treated as metal (implants): still "solid", but clipped in profiles.
METAL_HU = 2000.0
#: Tissue of the body (HU) as opposed to air outside it.
BODY_HU = -400.0
#: Target in-plane spacing of the working copy (mm).
WORK_SPACING_MM = 2.0
#: Half-width (mm) of the sagittal slab around the midline of the spine.
SLAB_HALF_MM = 10.0
#: Antero-posterior depths (mm) tried for the vertebral body (thoracic ≈ 20, lumbar ≈ 33).
BODY_DEPTHS_MM = (18.0, 24.0, 30.0, 36.0)
#: Where the spinal canal starts and ends behind the body's posterior wall (mm).
CANAL_BEHIND_MM = (2.0, 10.0)
#: Cerebrospinal fluid (HU): the canal behind the body is close to it, fat and air are not.
CSF_HU = 15.0
#: Upper clip (HU) of the slab the track scores.
SLAB_MAX_HU = 200.0
#: Where the posterior arch (laminae, spinous process) lies behind the body's posterior wall.
ARCH_BEHIND_MM = (16.0, 40.0)
#: The wall profile looks this far (mm) beyond the estimated front and back of the body,
#: over a midline slab this wide (half-width, mm).
WALL_MARGIN_MM = 4.0
#: Half-width (mm) of the cross-section box of the mean-HU profile.
BOX_HALF_WIDTH_MM = 22.0
WALL_SLAB_HALF_MM = 8.0
#: Threshold (HU) of the shell profile and its weight (HU per unit share) in the density.
SHELL_HU = 200.0
SHELL_WEIGHT_HU = 600.0
#: How far (mm) beyond its windows ``attached_counts`` reads, so that bone outlines are whole.
ATTACHED_MARGIN_MM = 25.0
#: Share of the body core's median HU, and the floor (HU, above muscle and psoas), of the
#: threshold for bone attached to the body.
ATTACHED_SHARE = 0.8
ATTACHED_MIN_HU = 100.0
#: HU range the profile is clipped to (cortex capped, fat floored).
PROFILE_HU = (0.0, 700.0)


@dataclass(frozen=True, eq=False)
class Work:
    """The coarse working copy of a volume and where it sits in patient space."""

    hu: np.ndarray  # (k, j, i) int16 or float32, coarse in j and i, every slice
    z_mm: np.ndarray  # (k,) superior coordinate of each slice centre
    dz_mm: float
    dj_mm: float
    di_mm: float
    step_j: int
    step_i: int
    full: np.ndarray  # the volume's own (k, j, i) array, read only where fine detail matters


@dataclass(frozen=True, eq=False)
class Column:
    """Where the vertebral bodies are: the midline column ``i_c`` and body centre ``j_body[k]``.

    Both are indices of the coarse working grid. ``density`` is the mean clipped HU of a small
    box at the body centre on every slice: high in bodies, low in discs.
    """

    i_c: int
    j_body: np.ndarray  # (k,) int
    density: np.ndarray  # (k,) float, brightness of the body's walls (see _wall_profile)
    present: np.ndarray  # (k,) bool: the spine is plausibly under the track on this slice
    back_px: np.ndarray  # (k,) int: rows from the body centre back to the skin of the back
    depth_mm: np.ndarray  # (k,) float: antero-posterior depth of the body (running median)


def make_work(volume: CTVolume, spacing_mm: float = WORK_SPACING_MM) -> Work:
    """Stride the volume in-plane to about ``spacing_mm`` (no copy of the full array)."""
    dz, dj, di = volume.spacing_mm
    step_j = max(1, int(round(spacing_mm / dj)))
    step_i = max(1, int(round(spacing_mm / di)))
    # Keep the stored dtype (int16 for DICOM): half the memory traffic of float32.
    hu = np.ascontiguousarray(volume.hu[:, ::step_j, ::step_i])
    n = volume.n_slices
    ks = np.arange(n, dtype=float)
    ci = (volume.hu.shape[2] - 1) / 2
    cj = (volume.hu.shape[1] - 1) / 2
    a = volume.affine
    z = a[2, 0] * ci + a[2, 1] * cj + a[2, 2] * ks + a[2, 3]
    return Work(hu, z, dz, dj * step_j, di * step_i, step_j, step_i, volume.hu)


def _spine_column_i(work: Work, bone: np.ndarray) -> int | None:
    """Column (i) of the spine's midline.

    Only bone behind the middle of the body is used (posterior arches, canal ring, ribs
    near their heads, the back of the pelvis): a contrast-filled aorta or bowel lies in
    front and would pull the estimate sideways. That bone is mirror-symmetric about the
    midline, so each column is scored by how well the bone on its two sides matches.
    """
    # A slice every ~4 mm is plenty for one midline estimate.
    every = max(1, int(round(4.0 / work.dz_mm)))
    sub = work.hu[::every]
    body = sub > BODY_HU
    n_k, n_j, n_i = body.shape
    rows = body.sum(axis=2).astype(float)  # (k, j) body width per row
    mass = rows.sum(axis=1)
    if mass.max() <= 0:
        return None
    j_idx = np.arange(n_j, dtype=float)
    j_centre = (rows * j_idx).sum(axis=1) / np.maximum(mass, 1.0)  # (k,)
    posterior = j_idx[None, :] >= j_centre[:, None]  # (k, j)
    bone_cols = (bone & posterior[:, :, None]).sum(axis=(0, 1)).astype(float)
    body_cols = body.sum(axis=(0, 1)).astype(float)
    idx = np.arange(n_i, dtype=float)
    weights = body_cols / body_cols.sum()
    centre = float((weights * idx).sum())
    spread = float(np.sqrt((weights * (idx - centre) ** 2).sum()))
    reach = max(2, int(round(45.0 / work.di_mm)))
    padded = np.concatenate([np.zeros(reach), bone_cols, np.zeros(reach)])
    sym = np.zeros(n_i)
    for d in range(0, reach + 1):
        sym += np.minimum(padded[reach - d : reach - d + n_i], padded[reach + d : reach + d + n_i])
    prior = np.exp(-0.5 * ((idx - centre) / max(spread, 1.0)) ** 2)
    score = sym * prior
    if score.max() <= 0:
        return None
    return int(np.argmax(score))


def _track(score: np.ndarray, dz_mm: float, dj_mm: float, penalty_per_mm: float = 0.1) -> np.ndarray:
    """Best smooth path j(k) through ``score[k, j]`` (dynamic programming).

    Scores are weighted by slice spacing and shifts penalised per millimetre, so the result
    does not depend on slice thickness. The path may move up to about 1 mm in j per mm in z
    (lordosis, the sacrum's tilt).
    """
    n_k, n_j = score.shape
    max_step = max(1, int(np.ceil(1.0 * dz_mm / dj_mm)))
    acc = score[0] * dz_mm
    back = np.zeros((n_k, n_j), dtype=np.int16)
    neg = -1e18
    for k in range(1, n_k):
        best = acc.copy()
        arg = np.zeros(n_j, dtype=np.int16)
        for d in range(1, max_step + 1):
            cost = penalty_per_mm * d * dj_mm
            # from j-d (moving posterior) and from j+d (moving anterior)
            from_lo = np.full(n_j, neg)
            from_lo[d:] = acc[:-d] - cost
            from_hi = np.full(n_j, neg)
            from_hi[:-d] = acc[d:] - cost
            better = from_lo > best
            best = np.where(better, from_lo, best)
            arg = np.where(better, -d, arg)
            better = from_hi > best
            best = np.where(better, from_hi, best)
            arg = np.where(better, d, arg)
        back[k] = arg
        acc = best + score[k] * dz_mm
    path = np.zeros(n_k, dtype=int)
    path[-1] = int(np.argmax(acc))
    for k in range(n_k - 1, 0, -1):
        path[k - 1] = path[k] + int(back[k, path[k]])
    return path


def _window_mean(x: np.ndarray, lo_px: int, hi_px: int) -> np.ndarray:
    """Mean of ``x[k, j + lo_px : j + hi_px + 1]`` for every (k, j), zero outside the array."""
    n_k, n_j = x.shape
    c = np.zeros((n_k, n_j + 1))
    np.cumsum(x, axis=1, out=c[:, 1:])
    j = np.arange(n_j)
    a = np.clip(j + lo_px, 0, n_j)
    b = np.clip(j + hi_px + 1, 0, n_j)
    return (c[:, b] - c[:, a]) / max(1, hi_px - lo_px + 1)


def find_column(work: Work) -> Column | None:
    """Locate the spine's midline column and follow the vertebral bodies slice by slice.

    In a thin sagittal slab a vertebral body is a dense block with the spinal canal (fluid,
    about 15 HU) right behind it and the dense posterior arch behind that. The track scores
    that pattern (for a few body depths); a contrast-filled aorta (the body, not a canal,
    behind it) or a spinous process (muscle and fat behind it) does not match it.
    """
    hu = work.hu
    every = max(1, int(round(4.0 / work.dz_mm)))
    i_c = _spine_column_i(work, hu[::every] > BONE_HU)
    if i_c is None:
        return None
    nb = max(1, int(round(SLAB_HALF_MM / work.di_mm)))
    lo, hi = max(0, i_c - nb), min(hu.shape[2], i_c + nb + 1)
    # Mean HU of the sagittal slab, clipped at about trabecular bone: a dense spinous process
    # or cortex must not outweigh the body (discs 70–110 HU stay below the clip).
    slab = np.clip(hu[:, :, lo:hi], -100.0, SLAB_MAX_HU).mean(axis=2)  # (k, j)
    mm = work.dj_mm
    canal = [int(round(c / mm)) for c in CANAL_BEHIND_MM]
    arch = [int(round(c / mm)) for c in ARCH_BEHIND_MM]
    best = np.full(slab.shape, -np.inf)
    best_depth = np.zeros(slab.shape)
    for depth in BODY_DEPTHS_MM:
        h = int(round(depth / 2 / mm))
        body_mean = _window_mean(slab, -h, h)
        canal_mean = _window_mean(slab, h + canal[0], h + canal[1])
        arch_mean = _window_mean(slab, h + arch[0], h + arch[1])
        # Both the body and the arch must be dense (min), the canal between them fluid.
        sc = (
            2.0 * np.minimum(body_mean - CSF_HU, arch_mean - CSF_HU)
            - 2.0 * np.abs(canal_mean - CSF_HU)
        ) / 300.0
        better = sc > best
        best = np.where(better, sc, best)
        best_depth = np.where(better, depth, best_depth)
    score = np.clip(best, -0.5, 1.5)
    j_body = _track(score, work.dz_mm, work.dj_mm)
    n_k, n_j = hu.shape[0], hu.shape[1]
    rows = np.arange(n_k)
    depth_k = best_depth[rows, j_body]
    # The body depth changes slowly along the spine: a running median over ~30 mm.
    win = max(1, int(round(30.0 / work.dz_mm)))
    from scipy.ndimage import median_filter

    depth_k = median_filter(depth_k, size=win, mode="nearest")
    # Two views of the same body: the mean HU over its cross-section (bone density, walls
    # included) and the brightness of its cortical walls; their sum keeps a contrast between
    # body and disc both for dense bone and for osteoporotic bone as soft as a disc.
    density = (
        _box_profile(work, i_c, j_body, depth_k)
        + 0.5 * _wall_profile(work, i_c, j_body, depth_k)
        + SHELL_WEIGHT_HU * _shell_profile(work, i_c, j_body, depth_k)
    )
    present = score[rows, j_body] > 0.15
    back_px = _skin_behind(hu, i_c, j_body, work.dj_mm)
    return Column(i_c, j_body, density, present, back_px, depth_k)


def _box_profile(work: Work, i_c: int, j_body: np.ndarray, depth_mm: np.ndarray) -> np.ndarray:
    """Per slice: mean HU over the body's axial cross-section (coarse grid, metal left out)."""
    hu = work.hu
    n_k, n_j = hu.shape[0], hu.shape[1]
    wi = max(1, int(round(BOX_HALF_WIDTH_MM / work.di_mm)))
    raw = hu[:, :, max(0, i_c - wi) : i_c + wi + 1]
    keep = raw < METAL_HU
    box_sum = (np.clip(raw, PROFILE_HU[0], PROFILE_HU[1]) * keep).sum(axis=2)  # (k, j)
    box_n = keep.sum(axis=2)
    out = np.empty(n_k)
    for k in range(n_k):
        half_px = max(1, int(round((depth_mm[k] / 2 + 1.0) / work.dj_mm)))
        a, b = max(0, j_body[k] - half_px), min(n_j, j_body[k] + half_px + 1)
        out[k] = box_sum[k, a:b].sum() / max(1, int(box_n[k, a:b].sum()))
    return out


def _midline_slab(work: Work, i_c: int, half_mm: float) -> tuple[float, int, int]:
    """Full-resolution row spacing (mm) and the column range ``i0:i1`` of a slab ±``half_mm``
    about the track's column ``i_c`` (given on the working grid)."""
    dj_full = work.dj_mm / work.step_j
    di_full = work.di_mm / work.step_i
    ic = i_c * work.step_i
    half_i = max(1, int(round(half_mm / di_full)))
    return dj_full, max(0, ic - half_i), min(work.full.shape[2], ic + half_i + 1)


def _shell_profile(work: Work, i_c: int, j_body: np.ndarray, depth_mm: np.ndarray) -> np.ndarray:
    """Per slice: share of the body's cross-section (full resolution) denser than ``SHELL_HU``.

    In soft (osteoporotic) bone the trabecular core can be *less* dense than a disc (70–110
    HU), so the mean-HU box no longer dips at the discs; what still tells a body from a disc is
    its cortical shell and the denser trabeculae, a few percent to a fifth of the
    cross-section above ~200 HU, while a disc has almost none (noise of even a low-dose scan
    rarely lifts a 110 HU pixel that far). Read at full resolution inside the box only.
    """
    full = work.full
    n_k = full.shape[0]
    dj_full, i0, i1 = _midline_slab(work, i_c, BOX_HALF_WIDTH_MM)
    out = np.zeros(n_k)
    for k in range(n_k):
        jc = j_body[k] * work.step_j
        half_j = max(1, int(round((depth_mm[k] / 2 + 1.0) / dj_full)))
        block = full[k, max(0, jc - half_j) : jc + half_j + 1, i0:i1]
        if block.size:
            out[k] = np.count_nonzero((block > SHELL_HU) & (block < METAL_HU)) / block.size
    return out


def _wall_profile(work: Work, i_c: int, j_body: np.ndarray, depth_mm: np.ndarray) -> np.ndarray:
    """Per slice: how bright the body's walls are, read at full resolution.

    A vertebral body is a shell of cortex (anterior and posterior walls, endplates) around
    trabecular bone that can be as soft as a disc in osteoporosis; a disc has no shell. For
    each column of a thin midline slab the brightest pixel along the antero-posterior line
    through the body is taken (capped, metal left out), and the median over the columns is
    the slice's value: high in bodies, low in discs, indifferent to a contrast-filled aorta
    touching a few columns. The cortex is 1–2 mm thick, so this reads the full-resolution
    array, only inside the small box around the track.
    """
    full = work.full
    n_k = full.shape[0]
    dj_full, i0, i1 = _midline_slab(work, i_c, WALL_SLAB_HALF_MM)
    out = np.empty(n_k)
    for k in range(n_k):
        jc = j_body[k] * work.step_j
        reach = int(round((depth_mm[k] / 2 + WALL_MARGIN_MM) / dj_full))
        a, b = max(0, jc - reach), min(full.shape[1], jc + reach + 1)
        block = full[k, a:b, i0:i1]
        if block.size == 0:
            out[k] = PROFILE_HU[0]
            continue
        block = np.where(block >= METAL_HU, PROFILE_HU[0], block)
        out[k] = float(np.median(np.clip(block.max(axis=0), PROFILE_HU[0], PROFILE_HU[1])))
    return out


def _skin_behind(hu: np.ndarray, i_c: int, j_body: np.ndarray, dj_mm: float) -> np.ndarray:
    """Rows from the body centre to the skin of the back, along the midline, per slice.

    Everything behind the skin (mattress, table) is outside the patient: a carbon-fibre table
    close behind a thin patient's back must not be taken for ribs.
    """
    n_k, n_j = hu.shape[0], hu.shape[1]
    col = hu[:, :, i_c]
    gap = max(1, int(round(6.0 / dj_mm)))
    out = np.full(n_k, n_j, dtype=int)
    for k in range(n_k):
        air = col[k, j_body[k] :] < -500
        if not air.any():
            continue
        run = np.convolve(air.astype(np.int16), np.ones(gap, dtype=np.int16), "valid")
        hits = np.nonzero(run >= gap)[0]
        if hits.size:
            out[k] = int(hits[0])
    return out


def side_counts(
    work: Work,
    column: Column,
    lateral_mm: tuple[float, float],
    ap_mm: tuple[float, float],
    threshold_hu: float = BONE_HU,
    inside_body: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Bone area (mm²) per slice in two windows beside the spine, patient right and left.

    ``lateral_mm`` is the distance range from the spine's midline, ``ap_mm`` the range in the
    anterior(-)/posterior(+) direction relative to the body centre on that slice;
    ``inside_body`` stops the window 5 mm in front of the skin of the back.
    """
    hu = work.hu
    n_k, n_j, n_i = hu.shape
    l0 = int(round(lateral_mm[0] / work.di_mm))
    l1 = int(round(lateral_mm[1] / work.di_mm))
    r_lo, r_hi = max(0, column.i_c - l1), max(0, column.i_c - l0 + 1)
    g_lo, g_hi = min(n_i, column.i_c + l0), min(n_i, column.i_c + l1 + 1)
    a0 = int(round(ap_mm[0] / work.dj_mm))
    a1 = int(round(ap_mm[1] / work.dj_mm))
    right = np.zeros(n_k)
    left = np.zeros(n_k)
    px = work.dj_mm * work.di_mm
    for k in range(n_k):
        stop = a1 + 1
        if inside_body:
            stop = min(stop, int(column.back_px[k]) - int(round(5.0 / work.dj_mm)))
        ja, jb = max(0, column.j_body[k] + a0), min(n_j, column.j_body[k] + stop)
        if jb <= ja:
            continue
        block = hu[k, ja:jb]
        if r_hi > r_lo:
            right[k] = np.count_nonzero(block[:, r_lo:r_hi] > threshold_hu) * px
        if g_hi > g_lo:
            left[k] = np.count_nonzero(block[:, g_lo:g_hi] > threshold_hu) * px
    return right, left


def attached_counts(
    work: Work,
    column: Column,
    lateral_mm: tuple[float, float],
    ap_mm: tuple[float, float],
    core_mm: tuple[float, float] = (22.0, 10.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Like ``side_counts``, but only bone joined to the vertebral body, outlines filled.

    A bony mass fused to the body (the sacral alae beside S1) is one piece of bone with it;
    a kidney or bowel with contrast, or the psoas, is not. In soft (osteoporotic) bone the
    marrow of such a mass can be less dense than the threshold, leaving only its cortical
    outline above it, so holes inside bone outlines are filled before the area is counted.
    ``core_mm`` is the (lateral, antero-posterior) half-size of the box about the body centre
    whose bone defines "the vertebra" on each slice (antero-posterior: at least half the
    body's depth, so that its cortex is in it); the marrow level is read in the box's middle
    (half its width, 10 mm deep).

    Returns the area (mm²) right and left, and the share of the window's columns (right,
    left) in which bone joined to the body is present at the window's antero-posterior
    level: a soft mass whose outline is not closed on the coarse grid is not filled, but its
    cortex still runs out across the whole window (a rib joined to a thoracic vertebra
    passes the body's level far out, beyond the window, not across it).
    """
    from scipy.ndimage import label

    hu = work.hu
    n_k, n_j, n_i = hu.shape
    # The block read reaches well beyond the windows so that outlines are whole in it.
    margin = ATTACHED_MARGIN_MM
    reach_i = int(round((lateral_mm[1] + margin) / work.di_mm)) + 1
    a0 = int(np.floor((min(ap_mm[0], -core_mm[1]) - margin) / work.dj_mm))
    a1 = int(np.ceil((max(ap_mm[1], core_mm[1]) + margin) / work.dj_mm))
    rows = np.clip(column.j_body[:, None] + np.arange(a0, a1 + 1)[None, :], 0, n_j - 1)  # (k, r)
    cols = np.clip(column.i_c + np.arange(-reach_i, reach_i + 1), 0, n_i - 1)  # (c,)
    block = hu[np.arange(n_k)[:, None, None], rows[:, :, None], cols[None, None, :]]
    r = np.arange(a0, a1 + 1) * work.dj_mm  # mm, posterior +
    c = np.arange(-reach_i, reach_i + 1) * work.di_mm  # mm, patient left +
    core_r = np.abs(r) <= core_mm[1]
    core_c = np.abs(c) <= core_mm[0]
    mid_c = np.abs(c) <= core_mm[0] / 2
    # The marrow of a mass fused to the body is the body's own: in soft bone both are soft.
    # Bone here is what is at least ATTACHED_SHARE as dense as the body's core (median of
    # the core box), between ATTACHED_MIN_HU and BONE_HU.
    core_hu = np.median(block[:, core_r][:, :, mid_c].reshape(n_k, -1), axis=1)  # marrow
    thr = np.clip(ATTACHED_SHARE * core_hu, ATTACHED_MIN_HU, BONE_HU)
    bone = (block > thr[:, None, None]) & (block < METAL_HU)
    plane = np.zeros((3, 3, 3), dtype=bool)
    plane[1] = True  # connectivity within each slice only
    # Fill holes slice by slice: background not connected to the edge of its slice's block.
    bg, _ = label(~bone, structure=plane)
    edge = np.unique(np.concatenate([bg[:, 0].ravel(), bg[:, -1].ravel(), bg[:, :, 0].ravel(), bg[:, :, -1].ravel()]))
    bone |= (bg > 0) & ~np.isin(bg, edge)
    lab, n = label(bone, structure=plane)
    right = np.zeros(n_k)
    left = np.zeros(n_k)
    cross_r = np.zeros(n_k)
    cross_l = np.zeros(n_k)
    if n == 0:
        return right, left, cross_r, cross_l
    # The vertebra: every piece of bone in the body's own box (its cortex included). Labels
    # are per slice (no connectivity across slices) and numbered over the whole block, so one
    # set of labels serves every slice.
    in_body = (np.abs(r)[None, :] <= np.maximum(core_mm[1], column.depth_mm[:, None] / 2 + 2.0))
    in_body = in_body[:, :, None] & core_c[None, None, :]
    ids = np.unique(lab[in_body])
    ids = ids[ids > 0]
    if ids.size == 0:
        return right, left, cross_r, cross_l
    win_r = (r >= ap_mm[0]) & (r <= ap_mm[1])
    lat = np.abs(c)
    win_c = (lat >= lateral_mm[0]) & (lat <= lateral_mm[1])
    keep = np.isin(lab[:, win_r][:, :, win_c], ids)  # (k, rows, cols) in the window
    side = c[win_c]
    px = work.dj_mm * work.di_mm
    right = keep[:, :, side < 0].sum(axis=(1, 2)) * px
    left = keep[:, :, side > 0].sum(axis=(1, 2)) * px
    # share of the window's columns crossed by bone joined to the body at the window's
    # antero-posterior level: an ala is a mass continuous from the body outwards
    crossed = keep.any(axis=1)  # (k, cols)
    cross_r = crossed[:, side < 0].mean(axis=1)
    cross_l = crossed[:, side > 0].mean(axis=1)
    return right, left, cross_r, cross_l
    win_r = (r >= ap_mm[0]) & (r <= ap_mm[1])
    lat = np.abs(c)
    win_c = (lat >= lateral_mm[0]) & (lat <= lateral_mm[1])
    px = work.dj_mm * work.di_mm
    for k in range(n_k):
        # the vertebra: every piece of bone in the body's own box (its cortex included)
        in_body = (np.abs(r) <= max(core_mm[1], column.depth_mm[k] / 2 + 2.0))[:, None] & core_c[None, :]
        ids = np.unique(lab[k][in_body])
        ids = ids[ids > 0]
        if ids.size == 0:
            continue
        keep = np.isin(lab[k][win_r][:, win_c], ids)
        side = c[win_c]
        right[k] = np.count_nonzero(keep[:, side < 0]) * px
        left[k] = np.count_nonzero(keep[:, side > 0]) * px
        # share of the window's columns crossed by bone joined to the body at the window's
        # antero-posterior level: an ala is a mass continuous from the body outwards
        crossed = keep.any(axis=0)
        if (side < 0).any():
            cross_r[k] = float(crossed[side < 0].mean())
        if (side > 0).any():
            cross_l[k] = float(crossed[side > 0].mean())
    return right, left, cross_r, cross_l


def beside_body_mm(work: Work, column: Column) -> tuple[np.ndarray, np.ndarray]:
    """How far (mm) bone joined to the vertebra runs out beyond the body's side wall, behind
    the body's middle, per slice, right and left.

    A rib head articulates with the side of its own vertebral body at the level of the
    pedicle (T11 and T12 on their own body) and the neck runs from it backwards and out, so
    on a rib-bearing vertebra bone continues beyond the body's side wall in the back half
    of the body. A lumbar vertebra has only the psoas there: its pedicles stay within the
    width of the body and its transverse processes leave behind the body. The side wall is
    where the bone of the body's front half ends (the median over its rows: nothing
    attaches there). "Joined" is 8-connected bone above ``BONE_HU`` on the coarse slice that
    touches the body's box.
    """
    from scipy.ndimage import label

    hu = work.hu
    n_k, n_j, n_i = hu.shape
    reach_i = int(round(80.0 / work.di_mm)) + 1
    a0 = int(np.floor(-25.0 / work.dj_mm))
    a1 = int(np.ceil(35.0 / work.dj_mm))
    rows = np.clip(column.j_body[:, None] + np.arange(a0, a1 + 1)[None, :], 0, n_j - 1)
    cols = np.clip(column.i_c + np.arange(-reach_i, reach_i + 1), 0, n_i - 1)
    block = hu[np.arange(n_k)[:, None, None], rows[:, :, None], cols[None, None, :]]
    r = np.arange(a0, a1 + 1) * work.dj_mm
    c = np.arange(-reach_i, reach_i + 1) * work.di_mm
    # The body's cortex (and dense marrow) defines the vertebra here, at the plain bone
    # threshold: at the thoracolumbar junction the liver, spleen and kidneys of a
    # contrast-enhanced scan (100–200 HU) touch the spine and must not join it.
    core = (np.abs(r) <= 8.0)[:, None] & (np.abs(c) <= 22.0)[None, :]
    bone = (block > BONE_HU) & (block < METAL_HU)
    plane = np.zeros((3, 3, 3), dtype=bool)
    plane[1] = True
    lab, n = label(bone, structure=plane)
    right = np.zeros(n_k)
    left = np.zeros(n_k)
    ids = np.unique(lab[:, core])
    ids = ids[ids > 0]
    if ids.size == 0:
        return right, left
    att = np.isin(lab, ids)  # (k, rows, cols): bone joined to the vertebra (labels per slice)
    half = column.depth_mm[:, None] / 2
    front = (r[None, :] >= -0.8 * half) & (r[None, :] <= -0.2 * half)  # (k, rows)
    back = (r[None, :] >= 0.1 * half) & (r[None, :] <= half + 3.0)
    for side, out in ((-1, right), (1, left)):
        sel = (c * side) > 0
        d = np.abs(c[sel])
        # per row, the farthest attached bone (NaN where none); the side wall is the median
        # over the front rows (a vessel or crus touching one row does not move it)
        a = att[:, :, sel]
        ext = np.where(a.any(axis=2), (a * d[None, None, :]).max(axis=2), np.nan)  # (k, rows)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: no bone there
            wall = np.nanmedian(np.where(front, ext, np.nan), axis=1)
            far = np.nanmax(np.where(back, ext, np.nan), axis=1)
        diff = far - wall
        out[:] = np.where(np.isfinite(diff), diff, 0.0)
    return right, left
