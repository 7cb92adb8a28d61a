"""The trunk on an axial slice: the one body outline both segmenters measure inside.

The Alberta protocol measures the trunk only: arms lying beside the abdomen (or hands on
it), the table, mattress and blankets are not body composition at L3. Air separates them
from the trunk on most scans; where they touch, the contact is either a thin bridge, cut by
an opening of a few mm, or a broad one (an arm resting against the flank). For the broad
case the body is eroded step by step until it falls apart: a part that splits off from the
main body *and holds a bone of its own* is a limb (a fold of abdominal fat has no bone), and
every body pixel nearer to that part than to the main body goes with it. The work runs on a
~2 mm grid; the returned mask keeps the full-resolution outline.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: Pixels above this HU are body (or table, arms, blankets) rather than air.
BODY_HU = -500.0
#: Bridges thinner than twice this (table contact, arms touching) are cut.
BRIDGE_MM = 6.0
#: Erosion depths (mm) tried, in order, to separate a limb resting broadly against the trunk.
LIMB_EROSION_MM = (10.0, 14.0, 18.0, 22.0, 26.0, 30.0, 35.0, 40.0)
#: A limb holds cortical bone: at least this much above ``LIMB_BONE_HU`` (cm²).
LIMB_BONE_HU = 300.0
LIMB_BONE_CM2 = 0.5


def distance_mm(mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Euclidean distance (mm) of each True pixel to the nearest False pixel."""
    return ndi.distance_transform_edt(mask, sampling=spacing)


def gaussian_mm(image: np.ndarray, sigma_mm: float, spacing: tuple[float, float]) -> np.ndarray:
    """Gaussian smoothing with a width in millimetres (per-axis pixels from the spacing)."""
    return ndi.gaussian_filter(image, sigma=(sigma_mm / spacing[0], sigma_mm / spacing[1]), truncate=3.0)


def drop_small(mask: np.ndarray, min_mm2: float, spacing: tuple[float, float]) -> np.ndarray:
    """The 4-connected parts of ``mask`` of at least ``min_mm2``."""
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel()) * spacing[0] * spacing[1]
    keep = sizes >= min_mm2
    keep[0] = False
    return keep[lab]


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask.copy() if n == 1 else mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed background (labels the background once; faster than iterative dilation)."""
    lab, n = ndi.label(~mask)
    if n == 0:
        return mask.copy()
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    hole = np.ones(n + 1, bool)
    hole[border] = False
    hole[0] = False
    return mask | hole[lab]


def crop_box(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Bounding box of a non-empty mask plus ``margin`` pixels, clipped to the array."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1 = max(0, rows[0] - margin), min(mask.shape[0], rows[-1] + margin + 1)
    c0, c1 = max(0, cols[0] - margin), min(mask.shape[1], cols[-1] + margin + 1)
    return slice(r0, r1), slice(c0, c1)


def trunk_mask(
    hu: np.ndarray, spacing: tuple[float, float], body_hu: float = BODY_HU, bridge_mm: float = BRIDGE_MM
) -> np.ndarray:
    """The trunk: largest component without table/arm bridges, holes filled (bool, like ``hu``).

    The opening that cuts thin bridges is a coarse operation, so it runs on a grid of about
    2 mm; the returned mask keeps the full-resolution outline.
    """
    mask = hu > body_hu
    if not mask.any():
        return mask
    mask = largest_component(mask)
    # lungs and bowel gas are body: filled first, so a thin wall around them is no bridge
    box = crop_box(mask, 1)
    mask[box] = fill_holes(mask[box])
    f = (max(1, int(2.0 / spacing[0])), max(1, int(2.0 / spacing[1])))
    coarse = mask[f[0] // 2::f[0], f[1] // 2::f[1]]
    csp = (spacing[0] * f[0], spacing[1] * f[1])
    core = largest_component(distance_mm(np.pad(coarse, 1), csp) > bridge_mm)
    if core.any():
        near = ~(distance_mm(~core, csp) > bridge_mm + 1.5 * max(csp))
        mask = largest_component(mask & _to_full(near[1:-1, 1:-1], f, mask.shape))
    box = crop_box(mask, 1)
    out = np.zeros_like(mask)
    out[box] = fill_holes(mask[box])
    # limbs are judged on the filled outline: lungs and bowel gas must not thin the trunk
    limbs = _limbs(out[f[0] // 2::f[0], f[1] // 2::f[1]], hu[f[0] // 2::f[0], f[1] // 2::f[1]], csp)
    if limbs is not None:
        out = largest_component(out & ~_to_full(limbs, f, out.shape))
    return out


def _to_full(coarse: np.ndarray, f: tuple[int, int], shape: tuple[int, ...]) -> np.ndarray:
    """A mask sampled every ``f`` pixels back on the full grid (edge rows/columns repeated)."""
    big = np.repeat(np.repeat(coarse, f[0], axis=0), f[1], axis=1)
    full = np.zeros(shape, dtype=bool)
    full[: big.shape[0], : big.shape[1]] = big[: shape[0], : shape[1]]
    if big.shape[0] < shape[0]:
        full[big.shape[0]:, : big.shape[1]] = full[big.shape[0] - 1: big.shape[0], : big.shape[1]]
    if big.shape[1] < shape[1]:
        full[:, big.shape[1]:] = full[:, big.shape[1] - 1: big.shape[1]]
    return full


def _limbs(body: np.ndarray, hu: np.ndarray, spacing: tuple[float, float]) -> np.ndarray | None:
    """Coarse-grid mask of limbs broadly touching the trunk, or None when there are none."""
    if not body.any():
        return None
    depth = distance_mm(np.pad(body, 1), spacing)[1:-1, 1:-1]
    bone = body & (hu > LIMB_BONE_HU)
    px_cm2 = spacing[0] * spacing[1] / 100.0
    for r in LIMB_EROSION_MM:
        cores, n = ndi.label(depth > r)
        if n < 2:
            if n == 0:
                return None
            continue
        # every body pixel goes with the nearest core
        _, (ri, ci) = ndi.distance_transform_edt(cores == 0, sampling=spacing, return_indices=True)
        owner = np.where(body, cores[ri, ci], 0)
        sizes = np.bincount(owner.ravel(), minlength=n + 1)
        sizes[0] = 0
        main = int(np.argmax(sizes))
        bone_cm2 = np.bincount(owner[bone], minlength=n + 1) * px_cm2
        limb_ids = [k for k in range(1, n + 1) if k != main and bone_cm2[k] >= LIMB_BONE_CM2]
        if limb_ids:
            return np.isin(owner, limb_ids)
    return None
