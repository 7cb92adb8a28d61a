"""Find the spinal column in a CT volume and follow its vertebral bodies from bottom to top.

Works on a coarse copy of the volume (about 2 mm in-plane, every slice): the finder only needs
bone positions to a few millimetres, and striding the array costs a few tens of milliseconds
where full-resolution filtering would cost seconds.
"""

from __future__ import annotations

import logging
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
#: Depth (mm) of the window that scores a vertebral body along the anterior-posterior axis.
BODY_DEPTH_MM = 24.0
#: Half-depth (mm) of the core box whose density profile separates bodies from discs.
CORE_HALF_MM = 8.0


@dataclass(frozen=True, eq=False)
class Work:
    """The coarse working copy of a volume and where it sits in patient space."""

    hu: np.ndarray  # (k, j, i) float32, coarse in j and i, every slice
    z_mm: np.ndarray  # (k,) superior coordinate of each slice centre
    dz_mm: float
    dj_mm: float
    di_mm: float
    step_j: int
    step_i: int


@dataclass(frozen=True, eq=False)
class Column:
    """Where the vertebral bodies are: the midline column ``i_c`` and body centre ``j_body[k]``.

    Both are indices of the coarse working grid. ``density`` is the mean clipped HU of a small
    box at the body centre on every slice: high in bodies, low in discs.
    """

    i_c: int
    j_body: np.ndarray  # (k,) int
    density: np.ndarray  # (k,) float, mean HU clipped to [-100, 1000]
    bone_fraction: np.ndarray  # (k,) float, share of the core box above BONE_HU
    present: np.ndarray  # (k,) bool: the spine is plausibly under the track on this slice


def make_work(volume: CTVolume, spacing_mm: float = WORK_SPACING_MM) -> Work:
    """Stride the volume in-plane to about ``spacing_mm`` (no copy of the full array)."""
    dz, dj, di = volume.spacing_mm
    step_j = max(1, int(round(spacing_mm / dj)))
    step_i = max(1, int(round(spacing_mm / di)))
    hu = np.asarray(volume.hu[:, ::step_j, ::step_i], dtype=np.float32)
    n = volume.n_slices
    ks = np.arange(n, dtype=float)
    ci = (volume.hu.shape[2] - 1) / 2
    cj = (volume.hu.shape[1] - 1) / 2
    a = volume.affine
    z = a[2, 0] * ci + a[2, 1] * cj + a[2, 2] * ks + a[2, 3]
    return Work(hu, z, dz, dj * step_j, di * step_i, step_j, step_i)


def _spine_column_i(work: Work, bone: np.ndarray) -> int | None:
    """Column (i) of the spine: the bone most constantly present near the body's midline."""
    body = work.hu > BODY_HU
    body_cols = body.sum(axis=(0, 1)).astype(float)
    if body_cols.max() <= 0:
        return None
    weights = body_cols / body_cols.sum()
    idx = np.arange(body_cols.size)
    centre = float((weights * idx).sum())
    spread = float(np.sqrt((weights * (idx - centre) ** 2).sum()))
    bone_cols = bone.sum(axis=(0, 1)).astype(float)
    # The spine and everything hanging on it (ribs, pelvis) is mirror-symmetric about the
    # midline; a contrast-filled aorta or bowel is not. Score each column by how well the bone
    # on its two sides matches.
    reach = max(2, int(round(45.0 / work.di_mm)))
    n = bone_cols.size
    padded = np.concatenate([np.zeros(reach), bone_cols, np.zeros(reach)])
    sym = np.zeros(n)
    for d in range(0, reach + 1):
        sym += np.minimum(padded[reach - d : reach - d + n], padded[reach + d : reach + d + n])
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


def find_column(work: Work) -> Column | None:
    """Locate the spine's midline column and follow the vertebral bodies slice by slice."""
    hu = work.hu
    bone = hu > BONE_HU
    i_c = _spine_column_i(work, bone)
    if i_c is None:
        return None
    nb = max(1, int(round(SLAB_HALF_MM / work.di_mm)))
    lo, hi = max(0, i_c - nb), min(hu.shape[2], i_c + nb + 1)
    slab = bone[:, :, lo:hi].mean(axis=2)  # (k, j) bone fraction in the sagittal slab
    depth = max(1, int(round(BODY_DEPTH_MM / work.dj_mm)))
    score = uniform_filter1d(slab, size=depth, axis=1, mode="constant")
    j_body = _track(score, work.dz_mm, work.dj_mm)
    half = max(1, int(round(CORE_HALF_MM / work.dj_mm)))
    clipped = np.clip(hu[:, :, lo:hi], -100.0, 1000.0)
    n_k, n_j = hu.shape[0], hu.shape[1]
    density = np.empty(n_k)
    frac = np.empty(n_k)
    for k in range(n_k):
        a, b = max(0, j_body[k] - half), min(n_j, j_body[k] + half + 1)
        density[k] = clipped[k, a:b].mean()
        frac[k] = bone[k, a:b, lo:hi].mean()
    present = score[np.arange(n_k), j_body] > 0.15
    return Column(i_c, j_body, density, frac, present)


def side_counts(
    work: Work,
    column: Column,
    lateral_mm: tuple[float, float],
    ap_mm: tuple[float, float],
    threshold_hu: float = BONE_HU,
) -> tuple[np.ndarray, np.ndarray]:
    """Bone area (mm²) per slice in two windows beside the spine, patient right and left.

    ``lateral_mm`` is the distance range from the spine's midline, ``ap_mm`` the range in the
    anterior(-)/posterior(+) direction relative to the body centre on that slice.
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
        ja, jb = max(0, column.j_body[k] + a0), min(n_j, column.j_body[k] + a1 + 1)
        if jb <= ja:
            continue
        block = hu[k, ja:jb]
        if r_hi > r_lo:
            right[k] = np.count_nonzero(block[:, r_lo:r_hi] > threshold_hu) * px
        if g_hi > g_lo:
            left[k] = np.count_nonzero(block[:, g_lo:g_hi] > threshold_hu) * px
    return right, left
