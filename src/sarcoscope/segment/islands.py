"""Muscle islands with no anatomical anchor are organs, not skeletal muscle.

From T12 to L5 every skeletal muscle of the trunk lies against the skeleton (psoas, crura,
paraspinals, quadratus lumborum, iliacus), against the body wall's subcutaneous fat (obliques,
transversus, rectus) or beside a larger muscle. A small "muscle" island deep in the abdomen,
away from all of these, is soft tissue of an organ that the network mistook — on real CT the
shipped model did so in a renal sinus and at a splenic hilum (docs/model-card.md). Such
islands are handed to the visceral compartment: their fat-HU pixels count as VAT, the rest as
background.

The anchors are deliberately generous (any bone-dense structure, contrast-filled vessels
included; the vertebra found as in the baseline; subcutaneous fat; air outside the body; a
muscle region of at least ``large_muscle_cm2``), so a doubtful island stays muscle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.segment.body import BODY_HU, crop_box
from sarcoscope.segment.vertebra import find_vertebra

logger = logging.getLogger(__name__)

#: Compartment values of ``segment.onnx_model`` (0 none, 1 muscle envelope, 2 visceral, 3 subcutaneous).
ENVELOPE, VISCERAL, SUBCUTANEOUS = 1, 2, 3
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class IslandRule:
    """When a muscle-envelope island counts as stray.

    Attributes
    ----------
    max_island_cm2:
        Only islands smaller than this are checked (a psoas at L3 is 8–20 cm²).
    anchor_mm:
        An island within this distance of bone, the vertebra, subcutaneous fat or the air
        around the body stays muscle.
    muscle_anchor_mm:
        An island within this distance of a larger muscle stays muscle (kept shorter: organs
        such as the kidneys lie against psoas and quadratus lumborum).
    large_muscle_cm2:
        Envelope regions at least this large count as larger muscle.
    bone_hu, bone_smooth_mm, bone_min_cm2:
        Bone (and contrast) anchors: HU above ``bone_hu`` after a Gaussian of
        ``bone_smooth_mm``, in pieces of at least ``bone_min_cm2``.
    vertebra_hu:
        Dense threshold (after the same smoothing) for finding the vertebra, whose soft
        trabecular body is below ``bone_hu`` in older patients.
    """

    max_island_cm2: float = 4.0
    anchor_mm: float = 15.0
    muscle_anchor_mm: float = 10.0
    large_muscle_cm2: float = 8.0
    bone_hu: float = 200.0
    bone_smooth_mm: float = 1.0
    bone_min_cm2: float = 0.3
    vertebra_hu: float = 150.0


def reassign_stray_muscle(
    compartments: np.ndarray,
    hu: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    trunk: np.ndarray,
    rule: IslandRule = IslandRule(),
) -> tuple[np.ndarray, int]:
    """Move unanchored small muscle-envelope islands to the visceral compartment.

    Parameters
    ----------
    compartments:
        (rows, cols) uint8 compartments 0..3 on the slice's own pixels.
    hu:
        The slice (HU), same shape.
    trunk:
        The trunk mask (``segment.body.trunk_mask``) the compartments were cut to.

    Returns
    -------
    The new compartments (a copy only when something changed) and the number of islands moved.
    """
    envelope = compartments == ENVELOPE
    if not envelope.any():
        return compartments, 0
    sp = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    px_cm2 = sp[0] * sp[1] / 100.0
    reach = int(np.ceil(rule.anchor_mm / min(sp))) + 1
    box = crop_box(trunk | envelope, reach + 1)
    lab, n = ndi.label(envelope[box], structure=_EIGHT)
    sizes_cm2 = np.bincount(lab.ravel(), minlength=n + 1) * px_cm2
    small = np.flatnonzero(sizes_cm2[1:] < rule.max_island_cm2) + 1
    if small.size == 0:
        return compartments, 0
    comp, h = compartments[box], hu[box]
    is_large = sizes_cm2 >= rule.large_muscle_cm2
    is_large[0] = False
    objects = ndi.find_objects(lab)
    # cheap anchors first, island by island in a window reaching anchor_mm around it: nearly
    # every island lies beside subcutaneous fat, the air around the body or a larger muscle
    candidates = []
    for i in small:
        win = tuple(slice(max(0, s.start - reach), s.stop + reach) for s in objects[i - 1])
        distance = _distance_to(lab[win] == i, sp)
        if (is_large[lab[win]] & (distance <= rule.muscle_anchor_mm)).any():
            continue
        if (((comp[win] == SUBCUTANEOUS) | (h[win] < BODY_HU)) & (distance <= rule.anchor_mm)).any():
            continue
        candidates.append((i, win, distance))
    if not candidates:
        return compartments, 0
    # the skeleton only for the few left: smoothing and the vertebra cost more than the rest
    smooth = ndi.gaussian_filter(h, sigma=(rule.bone_smooth_mm / sp[0], rule.bone_smooth_mm / sp[1]), truncate=3.0)
    skeleton = _pieces(smooth > rule.bone_hu, rule.bone_min_cm2 / px_cm2)
    vertebra = find_vertebra(trunk[box] & (smooth > rule.vertebra_hu), trunk[box], sp)
    if vertebra is not None:
        skeleton |= vertebra
    stray = np.array(
        [i for i, win, distance in candidates if not (skeleton[win] & (distance <= rule.anchor_mm)).any()], dtype=int
    )
    if stray.size == 0:
        return compartments, 0
    out = compartments.copy()
    out[box][np.isin(lab, stray)] = VISCERAL
    logger.debug(
        "%d muscle island(s) of %.2f cm² in all lie more than %.0f mm from bone and subcutaneous fat and "
        "%.0f mm from larger muscle: counted as visceral",
        stray.size, float(sizes_cm2[stray].sum()), rule.anchor_mm, rule.muscle_anchor_mm,
    )
    return out, int(stray.size)


def _distance_to(mask: np.ndarray, sp: tuple[float, float]) -> np.ndarray:
    """Distance (mm) from every pixel to the nearest True pixel of ``mask``; inf where it has none."""
    if not mask.any():
        return np.full(mask.shape, np.inf)
    return ndi.distance_transform_edt(~mask, sampling=sp)


def _pieces(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """The 8-connected parts of ``mask`` with at least ``min_pixels`` pixels."""
    lab, n = ndi.label(mask, structure=_EIGHT)
    if n == 0:
        return mask
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    return counts[lab] >= min_pixels
