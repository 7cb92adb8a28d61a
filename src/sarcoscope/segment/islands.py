"""Muscle islands with no anatomical anchor are organs, not skeletal muscle.

From T12 to L5 every skeletal muscle of the trunk lies against the skeleton (psoas, crura,
paraspinals, quadratus lumborum, iliacus), against the body wall's subcutaneous fat (obliques,
transversus, rectus) or beside another muscle. A small "muscle" island deep in the abdomen,
away from all of these, is soft tissue of an organ that the network mistook — on real CT the
shipped model did so in a renal sinus and at a splenic hilum (docs/model-card.md). Such
islands are handed to the visceral compartment: their fat-HU pixels count as VAT, the rest as
background.

The anchors are deliberately generous (any bone-dense structure, contrast-filled vessels
included; the vertebra; subcutaneous fat; everything outside the trunk, and the image border
where the body is cut off; gas — the lung bases, which the diaphragm lines, and bowel gas;
every muscle region too large to be checked, and any island anchored by these, link by
link), so a doubtful island stays muscle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.segment.body import crop_box, distance_mm, drop_small, gaussian_mm
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
        Only islands smaller than this are checked; larger regions stay muscle and anchor
        their neighbours. 8 cm² takes in a 5 cm² organ blob seen on real CT, while a small
        psoas or quadratus lumborum of that size lies within ``anchor_mm`` of bone (or
        ``muscle_anchor_mm`` of anchored muscle) and stays.
    anchor_mm:
        An island within this distance of bone, the vertebra, subcutaneous fat, gas,
        anything outside the trunk or the image border where the body is cut off stays muscle.
    muscle_anchor_mm:
        An island within this distance of anchored muscle stays muscle — a region too large
        to be checked, or an island anchored itself (a muscle the network split into pieces).
        Kept shorter than ``anchor_mm``: organs such as the kidneys lie against psoas and
        quadratus lumborum.
    gas_hu:
        Pixels below this HU are gas (lung, bowel gas) and anchor: without them, diaphragm
        lining the lung bases at T12–L2 was taken on the development phantoms.
    bone_hu, bone_smooth_mm, bone_min_cm2:
        Bone (and contrast) anchors: HU above ``bone_hu`` after a Gaussian of
        ``bone_smooth_mm``, in pieces of at least ``bone_min_cm2``.
    vertebra_hu:
        Dense threshold (after the same smoothing) for finding the vertebra
        (``segment.vertebra.find_vertebra``, the baseline's finder), whose soft trabecular
        body is below ``bone_hu`` in older patients.
    """

    max_island_cm2: float = 8.0
    anchor_mm: float = 15.0
    muscle_anchor_mm: float = 10.0
    gas_hu: float = -500.0
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
        (rows, cols) uint8 compartments 0..3 on the slice's own pixels; not modified.
    hu:
        The slice (HU), same shape.
    pixel_spacing_mm:
        (row, column) pixel size; every distance of ``rule`` is in millimetres.
    trunk:
        The trunk mask (``segment.body.trunk_mask``) the compartments were cut to.
    rule:
        Sizes, distances and thresholds (``IslandRule``).

    Returns
    -------
    The new compartments (a copy only when something changed) and the number of islands moved.
    """
    envelope = compartments == ENVELOPE
    if not envelope.any():
        return compartments, 0
    sp = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    px_cm2 = sp[0] * sp[1] / 100.0
    reach = int(np.ceil(max(rule.anchor_mm, rule.muscle_anchor_mm) / min(sp))) + 1
    box = crop_box(trunk | envelope, reach + 1)
    lab, n = ndi.label(envelope[box], structure=_EIGHT)
    sizes_cm2 = np.bincount(lab.ravel(), minlength=n + 1) * px_cm2
    checked = sizes_cm2 < rule.max_island_cm2
    checked[0] = False
    small = np.flatnonzero(checked)
    if small.size == 0:
        return compartments, 0
    anchored = ~checked  # per label: regions too large to check anchor their neighbours
    anchored[0] = False
    outside = _outside_trunk(trunk, box) | (hu[box] < rule.gas_hu)
    subcutaneous = compartments[box] == SUBCUTANEOUS
    objects = ndi.find_objects(lab)
    # cheap anchors first, island by island in a window reaching anchor_mm around it: nearly
    # every island lies beside subcutaneous fat, the body's edge, gas or a larger muscle
    pending = []
    for i in small:
        win = tuple(slice(max(0, s.start - reach), s.stop + reach) for s in objects[i - 1])
        distance = distance_mm(lab[win] != i, sp)  # from the island, mm
        if (anchored[lab[win]] & (distance <= rule.muscle_anchor_mm)).any():
            anchored[i] = True
        elif ((subcutaneous[win] | outside[win]) & (distance <= rule.anchor_mm)).any():
            anchored[i] = True
        else:
            pending.append((i, win, distance))
    if not pending:
        return compartments, 0
    # the skeleton only for the few left: smoothing and the vertebra cost more than the rest
    smooth = gaussian_mm(hu[box], rule.bone_smooth_mm, sp)
    skeleton = drop_small(smooth > rule.bone_hu, 100.0 * rule.bone_min_cm2, sp)
    vertebra = find_vertebra(trunk[box] & (smooth > rule.vertebra_hu), trunk[box], sp)
    if vertebra is not None:
        skeleton |= vertebra
    for i, win, distance in pending:
        anchored[i] = bool((skeleton[win] & (distance <= rule.anchor_mm)).any())
    # a piece of a muscle split by the network anchors the pieces beside it, link by link
    grew = True
    while grew:
        grew = False
        for i, win, distance in pending:
            if not anchored[i] and (anchored[lab[win]] & (distance <= rule.muscle_anchor_mm)).any():
                anchored[i] = grew = True
    stray = np.array([i for i, _, _ in pending if not anchored[i]], dtype=int)
    if stray.size == 0:
        return compartments, 0
    out = compartments.copy()
    out_box = out[box]  # a view: writing it writes ``out``
    out_box[np.isin(lab, stray)] = VISCERAL
    logger.info(
        "%d muscle island(s) of %.2f cm² in all lie more than %.0f mm from bone, subcutaneous fat, gas and "
        "the body's edge and %.0f mm from anchored muscle: counted as visceral",
        stray.size, float(sizes_cm2[stray].sum()), rule.anchor_mm, rule.muscle_anchor_mm,
    )
    return out, int(stray.size)


def _outside_trunk(trunk: np.ndarray, box: tuple[slice, slice]) -> np.ndarray:
    """Outside the trunk within ``box``, plus the image border where the trunk reaches it
    (a body cut off by the field of view: its skin and fat lie beyond the image)."""
    outside = ~trunk[box]
    rows, cols = box
    if rows.start == 0:
        outside[0] |= trunk[0, cols]
    if rows.stop == trunk.shape[0]:
        outside[-1] |= trunk[-1, cols]
    if cols.start == 0:
        outside[:, 0] |= trunk[rows, 0]
    if cols.stop == trunk.shape[1]:
        outside[:, -1] |= trunk[rows, -1]
    return outside
