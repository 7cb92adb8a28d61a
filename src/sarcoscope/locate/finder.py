"""find_l3: name the vertebrae a CT volume shows and pick the L3 slice, or say why not.

The count runs from both ends where the scan allows it: down from the last rib-bearing
vertebra (T12) and up from the sacrum (the first body with alae beside it, joined to the
iliac wings). Five lumbar bodies between them is the ordinary anatomy; any other number
(transitional vertebra, lumbar rib, 11 or 13 rib pairs, a missed disc) is reported with a low
confidence rather than hidden, and the length of the transverse processes (L3's are the
longest of the lumbar spine) picks between the candidates. From the sacrum alone an L3 is
named only when every body a transitional vertebra could make L3 is in the scan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from sarcoscope.errors import L3NotFound
from sarcoscope.locate.column import (
    Column,
    Work,
    attached_counts,
    beside_body_mm,
    find_column,
    make_work,
    side_counts,
)
from sarcoscope.locate.processes import tp_reach_mm
from sarcoscope.locate.settings import LocateSettings
from sarcoscope.locate.vertebrae import Segment, find_segments
from sarcoscope.types import CTVolume, SliceChoice, VertebraLevel

log = logging.getLogger(__name__)

#: Window beside the spine where the proximal rib shafts run (from the transverse process
#: back and out to the rib angle), and lumbar transverse processes do not reach: lateral
#: distance from the midline and anterior(-)/posterior(+) offset from the body centre.
RIB_LATERAL_MM = (35.0, 60.0)
RIB_AP_MM = (35.0, 110.0)
#: Sacral alae: beyond the side of the widest lumbar body, at the body's own
#: antero-posterior level (lumbar transverse processes lie behind it, the psoas beside it).
ALA_LATERAL_MM = (36.0, 56.0)
ALA_AP_MM = (-12.0, 14.0)
#: Transverse processes: behind the body centre, beyond the body's side.
TP_LATERAL_MM = (28.0, 70.0)
TP_AP_MM = (8.0, 40.0)
#: Smallest bone area (mm²) per side that counts as a structure in a window.
MIN_AREA_MM2 = 12.0
#: Smallest bone area (mm²) on one side for a rib cross-section (a rib shaft is about
#: 10 × 12 mm; noise specks of low-dose scans stay well below).
MIN_RIB_MM2 = 30.0
#: Smallest bone area (mm²) per side for a sacral ala: the ala fills most of its window,
#: while vessels, kidneys with contrast or a transverse process only touch it.
MIN_ALA_MM2 = 50.0
#: Or: bone joined to the body crossing at least this share of the window's width at the
#: window's antero-posterior level (a soft ala whose outline is not closed).
ALA_CROSS_SHARE = 0.8
#: Height (mm) at the top of a body over which alae are looked for.
ALA_TOP_MM = 40.0
#: Rib heads: bone joined to the vertebra running at least this far (mm) beyond the side wall
#: of the body, in the back half of the body, on both sides (``column.beside_body_mm``), on
#: at least ``HEAD_SHARE`` of the slices of the body's upper part (``HEAD_ZONE``, fractions of
#: its height from the bottom) on each side, where the rib of a lower thoracic vertebra
#: articulates.
HEAD_MM = 6.0
HEAD_SHARE = 0.5
HEAD_ZONE = (0.45, 0.85)
#: A rib head is *absent* (v5) when it is seen on fewer than this share of the zone's
#: slices on the side that shows less (a lumbar rib articulates with the transverse
#: process, not the body, so it shows no head; per-body statistics in
#: docs/l3-localisation.md); between this and ``HEAD_SHARE`` the transverse processes
#: decide (``_veto_headless``).
HEAD_ABSENT_SHARE = 0.2
#: A rib head seen on both sides on at least this share of the zone's slices marks a
#: rib-bearing vertebra even where no rib shaft is seen (v5: a short or hypoplastic last rib,
#: a shaft missed on one thoracic vertebra).
HEAD_STRONG_SHARE = 0.8
#: Share of a body's slices that must show the feature for the body to carry it.
RIB_SHARE = 0.35
ALA_SHARE = 0.5
#: A body must be at least this tall in the scan (mm) for its ribs/alae to be judged.
MIN_JUDGED_MM = 8.0
#: Shortest plausible lumbar body (mm) on the profile; lumbar bodies are 25–30 mm high.
MIN_LUMBAR_MM = 15.0
#: Fewest rib-less bodies between the last rib-bearing vertebra and the sacrum.
MIN_LUMBAR_BELOW_RIBS = 3
#: Transverse processes longer by this much (mm, mean of both sides) decide between two
#: candidate L3 bodies; closer than that the length does not tell them apart.
TP_MARGIN_MM = 1.5
#: Transverse processes are read on the lowest this many bodies of the scan.
TP_BODIES = 10
#: (v5) A reach this much (mm) shorter than those of both neighbours is a misread: the
#: processes lengthen from L1 to L3 and shorten again below, level by level, while a walk
#: cut short (a kidney touching the tip, a gap in thin soft bone) gives one short body.
TP_DIP_MM = 6.0
#: Confidence by how the count was anchored.
CONF_BOTH = 0.95
CONF_RIBS_ONLY = 0.8
CONF_SACRUM_ONLY = 0.7
CONF_CONFLICT = 0.3
#: A one-end count that the transverse processes do not confirm.
CONF_TP_DOUBT = 0.5


@dataclass(frozen=True)
class _Body:
    seg: Segment
    rib: bool | None  # None: too little of it in the scan to judge
    ala: bool | None
    tp_mm: float = float("nan")  # reach of the transverse processes from the midline
    head: bool | None = None  # a rib head beside the body (None: not judged)
    head_share: float | None = None  # share of the head zone's slices showing it (lesser side)

    @property
    def head_seen(self) -> float | None:
        """Share of the head zone's slices with a rib head (from ``head`` where not measured)."""
        if self.head_share is not None:
            return self.head_share
        return None if self.head is None else float(self.head)


@dataclass(frozen=True)
class _Count:
    names: list[str]  # per body, bottom to top ("" where unnamed)
    l3: int | None  # index into bodies
    confidence: float
    warnings: list[str]
    anchor_text: str
    missing: str = ""  # where L3 lies when it is not in the scan


def _share(z: np.ndarray, flag: np.ndarray, lo_mm: float, hi_mm: float) -> float | None:
    sel = (z >= lo_mm) & (z <= hi_mm)
    if not sel.any():
        return None
    return float(flag[sel].mean())


def _judge_bodies(
    segments: list[Segment], z: np.ndarray, rib: np.ndarray, ala: np.ndarray,
    tp: list[float] | None = None, head: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[_Body]:
    bodies = []
    tp = tp if tp is not None else [float("nan")] * len(segments)
    for seg, tp_mm in zip(segments, tp):
        if seg.height_mm < MIN_JUDGED_MM:
            bodies.append(_Body(seg, None, None, tp_mm))
            continue
        # A rib leaves its vertebra near the top of the body and runs down as it goes
        # lateral; the rib from the vertebra above crosses the upper part of this one, so
        # only the lower half of the body is judged.
        # A body cut by the top of the scan is judged on what is seen of it.
        upper = seg.bottom_mm + 0.5 * seg.height_mm if seg.top_seen else seg.top_mm
        r = _share(z, rib, seg.bottom_mm, upper)
        hs = None
        if head is not None and seg.top_seen:
            # Where a rib articulates with this vertebra: its head beside the body, in the
            # body's upper part (share of slices, the lesser of the two sides).
            h = seg.height_mm
            lo_h, hi_h = seg.bottom_mm + HEAD_ZONE[0] * h, seg.bottom_mm + HEAD_ZONE[1] * h
            sides = [_share(z, hd, lo_h, hi_h) for hd in head]
            hs = None if any(v is None for v in sides) else min(sides)
        # The alae flank the first sacral body: judge the top of the segment, which (the
        # sacrum's segments being fused) may run far down.
        a = _share(z, ala, max(seg.bottom_mm, seg.top_mm - ALA_TOP_MM), seg.top_mm)
        bodies.append(
            _Body(seg, None if r is None else r >= RIB_SHARE, None if a is None else a >= ALA_SHARE, tp_mm,
                  None if hs is None else hs >= HEAD_SHARE, hs)
        )
    return _veto_headless(bodies)


def _veto_headless(bodies: list[_Body]) -> list[_Body]:
    """Rib-like bone beside a body below the lowest rib-bearing body whose rib head is seen is
    not a rib of that body.

    A rib articulates with its own vertebra (its head beside the body); the lower ribs of a
    slim patient run down and out past L1 and L2, and a kidney or bowel with contrast can sit
    behind them, putting rib-like bone beside bodies with no rib head. Above the lowest body
    with both a shaft and a head, a head that is not seen (thin neck, coarse pixels) is no
    reason to doubt the shaft: only the bodies below it are judged by the head.

    (v5) A head seen on some of the zone's slices but fewer than half (a thin or soft neck of
    a last rib, or bone near a lumbar rib's attachment) is settled by the transverse
    processes: the last thoracic vertebra has rudimentary processes, shorter than those of
    the first lumbar vertebra below it, while a lumbar rib continues the process of L1
    outwards and makes it reach farther than L2's. Such a body keeps its rib only when its
    processes reach less far than those of the body below (both measured). A head seen on
    no more than the odd slice (``HEAD_ABSENT_SHARE``) vetoes as before.
    """
    confirmed = [i for i, b in enumerate(bodies) if b.rib and b.head]
    if not confirmed:
        return bodies
    lowest = confirmed[0]

    def vetoed(i: int, b: _Body) -> bool:
        if not (i < lowest and b.rib and b.head is False):
            return False
        h = b.head_seen
        if h is None or h < HEAD_ABSENT_SHARE or i == 0:
            return True
        below = bodies[i - 1].tp_mm
        return not (np.isfinite(b.tp_mm) and np.isfinite(below) and b.tp_mm < below)

    return [
        replace(b, rib=False) if vetoed(i, b) else b
        for i, b in enumerate(bodies)
    ]


def _strong_head(b: _Body) -> bool:
    """Rib heads seen on both sides on most of the body's head zone (a rib articulates here)."""
    h = b.head_seen
    return h is not None and h >= HEAD_STRONG_SHARE and b.seg.complete


def _top_anchor(bodies: list[_Body], above: int = 0) -> tuple[int | None, bool, list[str], int | None]:
    """Index (bottom-to-top order) of T12, whether every body seen carries ribs, warnings,
    and the body right below T12 when it shows rib heads but no rib shaft (else None).

    T12 is the lowest rib-bearing body whose upper neighbour carries ribs too (or is the
    top of the scan): a single body with rib-like bone lower down (a lumbar rib, the
    posterior iliac crest) is not taken for the thoracic spine, and a rib missed on one
    thoracic vertebra does not cut the thoracic spine short.

    (v5) A rib articulates with its own vertebra, so rib heads seen on both sides
    (``_strong_head``) mark a rib-bearing vertebra where the shaft is not seen: the upper
    neighbour "carries ribs" when its heads are seen (a shaft missed on one thoracic body).
    The body right below the lowest rib-bearing one, with heads but no shaft, may be T12
    with a short or hypoplastic last rib whose shaft ends before the rib window; it is only
    returned as a candidate: bone just behind a lumbar body (a process's root) can pass for
    a head, so the caller takes it only where the sacrum or the processes agree (``_count``).
    """
    warnings: list[str] = []
    # Bodies below ``above`` (the sacrum and the two above it, beside the iliac crests) are
    # left out: the pelvis is not ribs.
    judged = [i for i in range(above, len(bodies)) if bodies[i].rib is not None]  # bottom to top
    if not judged:
        return None, False, warnings, None
    for pos, i in enumerate(judged):
        if not bodies[i].rib:
            continue
        above = judged[pos + 1] if pos + 1 < len(judged) else None
        if above is None or bodies[above].rib or _strong_head(bodies[above]):
            if pos == 0:
                return None, True, warnings, None  # ribs down to the lowest body seen
            head_only = i - 1 if judged[pos - 1] == i - 1 and _strong_head(bodies[i - 1]) else None
            lonely = [j for j in judged[:pos] if bodies[j].rib]
            if lonely:
                warnings.append(
                    "rib-like bone beside a lumbar vertebra (a lumbar rib or the iliac crest) "
                    "was not counted as a rib"
                )
            return i, False, warnings, head_only
    return None, False, warnings, None


def _bottom_anchor(bodies: list[_Body], t12: int | None) -> int | None:
    """Index of the first sacral body (S1): the top of the run of bodies with alae that ends
    at the bottom of the scan. Alae-like bone higher up, with plain vertebrae below it, is not
    the sacrum."""
    judged = [i for i in range(len(bodies)) if bodies[i].ala is not None]
    if not judged or not bodies[judged[0]].ala:
        return None
    # (Rib-like bone beside a sacral body is the iliac wing at the sacroiliac joint; alae-like
    # bone beside a thoracic body is ruled out below by the ribs above it.)
    s1 = judged[0]
    for i in judged[1:]:
        if not bodies[i].ala or (t12 is not None and i >= t12):
            break
        s1 = i
    # At least three rib-less lumbar bodies lie between the last rib and the sacrum in every
    # spine (four lumbar vertebrae with a lumbar rib on L1 is the fewest): bone beside the
    # lowest bodies of a chest or upper-abdomen scan (a kidney with contrast, the lower ribs)
    # with the rib-bearing thoracic spine right above it is not the sacrum. (One or two
    # rib-like bodies just above a true sacrum are the iliac crests, not ribs.)
    above = [bodies[i].rib for i in range(s1 + 1, min(len(bodies), s1 + 1 + MIN_LUMBAR_BELOW_RIBS))]
    if above and all(r is not False for r in above) and any(above):
        return None
    return s1


def _names_from(anchor: int, anchor_is_t12: bool, n: int) -> list[str]:
    names = [""] * n
    for i in range(n):
        if anchor_is_t12:
            steps = anchor - i  # bodies below T12
            if steps <= 0:
                names[i] = f"T{12 + steps}" if 12 + steps >= 1 else ""
            else:
                names[i] = f"L{steps}"
        else:
            steps = i - anchor  # bodies above S1
            if steps <= 0:
                names[i] = "S1" if steps == 0 else ""
            elif steps <= 5:
                names[i] = f"L{6 - steps}"
            else:
                names[i] = f"T{12 - (steps - 6)}" if 12 - (steps - 6) >= 1 else ""
    return names


def _tp(bodies: list[_Body], idx: int | None) -> float:
    if idx is None or not 0 <= idx < len(bodies):
        return float("nan")
    return bodies[idx].tp_mm


def _longest_tp(bodies: list[_Body], candidates: list[int]) -> int | None:
    """The candidate whose transverse processes reach clearly farthest (L3's are the longest
    of the lumbar spine), or None when they are not measured or too close to tell."""
    vals = [(bodies[i].tp_mm, i) for i in candidates if 0 <= i < len(bodies)]
    if len(vals) < 2 or not all(np.isfinite(v) for v, _ in vals):
        return None
    vals.sort(reverse=True)
    if vals[0][0] - vals[1][0] < TP_MARGIN_MM:
        return None
    return vals[0][1]


def _dips(bodies: list[_Body], i: int) -> bool:
    """Whether body ``i``'s processes read clearly shorter than both neighbours' (a misread)."""
    if not 0 < i < len(bodies) - 1:
        return False
    here, lo, hi = bodies[i].tp_mm, bodies[i - 1].tp_mm, bodies[i + 1].tp_mm
    return bool(np.isfinite([here, lo, hi]).all() and here <= min(lo, hi) - TP_DIP_MM)


def _tp_text(bodies: list[_Body], idxs: list[int]) -> str:
    return ", ".join(
        f"z {bodies[i].seg.centre_mm:.0f} mm: {bodies[i].tp_mm:.0f} mm" for i in idxs
        if 0 <= i < len(bodies) and np.isfinite(bodies[i].tp_mm)
    )


def _count(bodies: list[_Body]) -> _Count:
    n = len(bodies)
    s1 = _bottom_anchor(bodies, None)
    if s1 is not None and s1 == n - 1:
        s1 = None  # nothing above it to count
    t12, all_ribbed, warnings, short_rib = _top_anchor(bodies, 0 if s1 is None else s1 + 3)
    head_only = False
    if t12 is not None and short_rib is not None:
        # A body with rib heads but no shaft right below the last rib-bearing one: T12 with a
        # short last rib, or a lumbar body whose process roots look like heads. Taken as T12
        # when that makes the count from the sacrum agree (6 lumbar-type bodies otherwise), or,
        # without the sacrum, when the body it would make L3 has clearly longer transverse
        # processes than the one the ribs name (L3's are the longest). Flagged either way.
        if s1 is not None:
            take = t12 - s1 - 1 == 6
        else:
            take = t12 - 4 >= 0 and _longest_tp(bodies, [t12 - 3, t12 - 4]) == t12 - 4
        if take:
            t12, head_only = short_rib, True
            warnings.append(
                "the last rib-bearing vertebra was recognised by its rib heads alone, without a "
                "rib shaft beside it (a short or hypoplastic last rib), because "
                + ("the count from the sacrum then agrees (otherwise the counts disagree: 6 "
                   "lumbar-type bodies, a transitional vertebra or this short rib)" if s1 is not None else
                   "the body it makes L3 has the longest transverse processes")
                + " — check spine.png"
            )
    if t12 is not None:
        names = _names_from(t12, True, n)
        if s1 is not None:
            for i in range(s1 + 1):
                names[i] = "S1" if i == s1 else ""
        top_l3 = t12 - 3 if t12 - 3 >= 0 else None
        if s1 is not None:
            n_lumbar = t12 - s1 - 1
            bottom_l3 = s1 + 3
            if n_lumbar == 5:
                conf = CONF_TP_DOUBT if head_only else CONF_BOTH
                nb = [top_l3 - 1, top_l3, top_l3 + 1]
                pick = _longest_tp(bodies, nb)
                if pick is not None and pick != top_l3:
                    # Both ends agree but the processes do not: a misread at both ends at once
                    # (a short last rib missed in a lumbarised spine, say) — flagged, not changed.
                    warnings.append(
                        "both counts agree but the body counted as L3 does not have the longest "
                        f"transverse processes of its neighbours ({_tp_text(bodies, nb)}) — check spine.png"
                    )
                    conf = CONF_TP_DOUBT
                return _Count(names, top_l3, conf, warnings,
                              "counted down from the last rib (T12) and up from the sacrum: both agree")
            # The two counts disagree. Either the lumbar spine really has 4 or 6 vertebrae (a
            # transitional lumbosacral vertebra: the names follow the ribs) or one end was
            # misread (a short 12th rib missed, a lumbar rib taken for a rib). L3 has the
            # longest transverse processes: among the bodies from one candidate to the other,
            # the one whose processes reach clearly farthest is taken; when they cannot be told
            # apart the rib count stays. Either way the conflict is reported.
            lo_c, hi_c = (bottom_l3, bottom_l3) if top_l3 is None else sorted((top_l3, bottom_l3))
            cands = [i for i in range(max(lo_c, s1 + 1), min(hi_c, n - 1) + 1)]
            pick = _longest_tp(bodies, cands)
            dipped = [i for i in cands if _dips(bodies, i)]
            if dipped and pick is not None:
                # A candidate whose processes read shorter than both neighbours' was misread
                # (the reach rises to L3 and falls below it level by level, never dips at one
                # body); comparing reaches would only reflect the misreading.
                pick = None
            l3 = pick if pick is not None else top_l3
            how = (
                "the body with the longest transverse processes (L3's are the longest of the "
                f"lumbar spine; {_tp_text(bodies, cands)}) was used"
                if pick is not None
                else "the transverse processes of the body at z "
                f"{_z(bodies, dipped[0])} read clearly shorter than both its neighbours' (a misread), "
                "so the rib count was used"
                if dipped
                else "the transverse processes did not tell them apart, so the rib count was used"
            )
            warnings.append(
                f"vertebra counts disagree: {n_lumbar} lumbar-type bodies between the last "
                "rib-bearing vertebra and the sacrum (5 expected) — a transitional lumbosacral "
                "vertebra, a lumbar rib, a short last rib, 11 or 13 rib pairs, or a missed disc; "
                f"counting down from the last rib puts L3 at z {_z(bodies, top_l3)}, counting up "
                f"from the sacrum at z {_z(bodies, bottom_l3)}; {how} — check spine.png"
            )
            if l3 is not None and l3 != top_l3:
                names = _names_from(l3 + 3, True, n)
                for i in range(s1 + 1):
                    names[i] = "S1" if i == s1 else ""
            return _Count(names, l3 if l3 is not None and l3 > s1 else None,
                          CONF_CONFLICT, warnings, "counts from the ribs and the sacrum disagree")
        # From the ribs alone, a last rib recognised by its heads only is not confirmed.
        conf = CONF_TP_DOUBT if head_only else CONF_RIBS_ONLY
        below_unread = (
            top_l3 is not None and top_l3 > 0 and bodies[top_l3 - 1].seg.complete
            and not np.isfinite(bodies[top_l3 - 1].tp_mm)
        )
        if below_unread:
            # The body below is wholly in the scan but its processes could not be read (metal
            # of pedicle screws, a walk that found no process): a missed short 12th rib cannot
            # be ruled out, but the body it would make L3 is in the scan too. Named, flagged.
            warnings.append(
                "the transverse processes of the body below the one counted as L3 could not be "
                "read (metal, or no process found), so a missed short 12th rib (L3 one body "
                "lower) cannot be ruled out — check spine.png"
            )
            conf = CONF_TP_DOUBT
        elif top_l3 is not None and (top_l3 == 0 or not np.isfinite(bodies[top_l3 - 1].tp_mm)):
            # Counting down from the ribs alone: a short 12th rib that was missed puts L3 one
            # body lower. Only the processes of the body below can show it (L3's are longer),
            # so without that body in the scan no L3 is named.
            names[top_l3] = ""
            return _Count(names, None, 0.0, warnings,
                          "counted down from the last rib-bearing vertebra (T12); the sacrum is not in the scan",
                          f"counting down from the last rib, L3 would be the body at z {_z(bodies, top_l3)}, "
                          "but the body below it is not in the scan with its transverse processes, so a "
                          "missed short 12th rib (L3 one body lower) cannot be ruled out: L3 may lie "
                          "below the scan")
        if top_l3 is not None:
            # A check of the rib count: a neighbour with clearly longer processes hints at a
            # misread last rib (flagged; the count from the ribs is kept).
            nb = [i for i in (top_l3 - 1, top_l3, top_l3 + 1) if 0 <= i < t12]
            pick = _longest_tp(bodies, nb)
            if pick is not None and pick == top_l3 - 1 and (
                pick == 0 or not np.isfinite(bodies[pick - 1].tp_mm)
            ):
                # The body below has clearly longer processes: the last rib (or two) was
                # probably missed and L3 is lower still — maybe below the scan, since the
                # body under that one cannot be compared. No L3 is named.
                for i in range(top_l3 + 1):
                    names[i] = ""  # their names are in doubt
                return _Count(names, None, 0.0, warnings,
                              "counted down from the last rib-bearing vertebra (T12); the sacrum is not in the scan",
                              f"counting down from the last rib, L3 would be the body at z {_z(bodies, top_l3)}, "
                              f"but the body below it has clearly longer transverse processes "
                              f"({_tp_text(bodies, nb)}), so the last rib may have been missed and "
                              "L3 may lie lower, at or below the edge of the scan")
            if pick is not None and pick != top_l3:
                warnings.append(
                    "the body counted as L3 from the last rib does not have the longest "
                    f"transverse processes of its neighbours ({_tp_text(bodies, nb)}): the last "
                    "rib may be misread (a short 12th rib, a lumbar rib) — check spine.png"
                )
                conf = CONF_TP_DOUBT
            if t12 - 6 >= 0:
                # The scan reaches below the fifth lumbar-type body, where the sacrum would
                # be in a spine of five lumbar vertebrae (or a sixth lumbar one), yet no
                # sacrum was recognised: the count cannot be checked from the other end.
                warnings.append(
                    "the scan reaches below the fifth body under the last rib-bearing vertebra "
                    "but no sacrum (alae beside the body) was recognised there, so a "
                    "transitional lumbosacral vertebra (4 or 6 lumbar vertebrae) or a misread "
                    "last rib cannot be ruled out — check spine.png"
                )
                conf = min(conf, CONF_TP_DOUBT)
        return _Count(names, top_l3, conf, warnings,
                      "counted down from the last rib-bearing vertebra (T12); the sacrum is not in the scan",
                      "" if top_l3 is not None else "L3 lies below the scan")
    if s1 is not None:
        # Counting up from the sacrum alone: with a transitional lumbosacral vertebra L3 is the
        # second, third or fourth body above S1. Name one only when all three are in the scan
        # with their processes (so L3 is in the scan whatever the variant), taking the one
        # with the longest transverse processes.
        cands = [s1 + 2, s1 + 3, s1 + 4]
        ribbed = [i for i in (s1 + 2, s1 + 3, s1 + 4) if i < n and bodies[i].rib]
        if len(ribbed) == 3:
            # Rib-like bone beside each of the 2nd, 3rd and 4th bodies above the "sacrum":
            # the iliac crest reaches only the one or two bodies right above a true sacrum, a
            # kidney with contrast the odd lumbar body, and of these three at most one (L1 with
            # a lumbar rib, in a sacralised spine) can carry a real rib. So this is the lower
            # thoracic spine (a short 12th rib hid the count from the top) and the "alae"
            # beside its lowest body were ribs or a kidney.
            names = [""] * n
            return _Count(names, None, 0.0, warnings,
                          "no anchor: the sacrum-like lowest body has rib-bearing bodies above it",
                          f"the lowest body (z {_z(bodies, s1)}) looks like the sacrum, but the 2nd to "
                          "4th bodies above it carry rib-like bone, so it is more likely the "
                          "lower thoracic spine: L3 probably lies below the scan")
        in_scan = (
            all(i < n and bodies[i].seg.complete for i in cands[:2])
            and cands[2] < n
            and bool(np.isfinite(bodies[cands[2]].tp_mm))
        )
        # With one anchor every disc up from it counts: a body bounded by a disc that was
        # placed from the spacing (not seen), or one too short for a lumbar body (two
        # levels split wrongly, or one level split in two), makes the count a guess.
        doubtful = [
            i for i in range(s1 + 1, min(n, s1 + 4))
            if bodies[i].seg.inferred or (bodies[i].seg.complete and bodies[i].seg.height_mm < MIN_LUMBAR_MM)
        ]
        if in_scan and doubtful:
            names = _names_from(s1, False, n)
            for i in range(s1 + 1, n):
                names[i] = ""
            return _Count(names, None, 0.0, warnings,
                          "counted up from the sacrum; the last rib is not in the scan",
                          "counting up from the sacrum, a level between it and L3 was not clearly "
                          f"seen (the body at z {_z(bodies, doubtful[0])} is bounded by a disc placed "
                          "from the spacing or is too short for a lumbar body), so L3 may lie above "
                          "the scan or be miscounted")
        warnings.append(
            "counted up from the sacrum only (no rib-bearing vertebra in the scan): a "
            "transitional lumbosacral vertebra (4 or 6 lumbar vertebrae) would shift this count "
            "by one level"
        )
        if not in_scan:
            names = _names_from(s1, False, n)
            for i in range(s1 + 1, n):
                names[i] = ""  # above S1 the names depend on the variant
            return _Count(names, None, 0.0, warnings,
                          "counted up from the sacrum; the last rib is not in the scan",
                          "counting up from the sacrum, L3 is the 2nd, 3rd or 4th body above S1 "
                          "(4, 5 or 6 lumbar vertebrae) and the scan does not show all three "
                          "with their transverse processes, so L3 may lie above the scan")
        pick = _longest_tp(bodies, cands)
        l3 = pick if pick is not None else s1 + 3
        conf = CONF_SACRUM_ONLY if pick == s1 + 3 else CONF_TP_DOUBT
        if pick is None:
            warnings.append(
                "the transverse processes of the 2nd–4th bodies above the sacrum are too alike "
                f"to confirm which is L3 ({_tp_text(bodies, cands)}); the ordinary count (5 "
                "lumbar vertebrae) was used — check spine.png"
            )
        elif pick != s1 + 3:
            warnings.append(
                f"the body with the longest transverse processes ({_tp_text(bodies, cands)}) "
                f"is the {pick - s1}th above the sacrum, not the 3rd: a transitional "
                "lumbosacral vertebra is likely; that body was taken as L3 — check spine.png"
            )
        names = _names_from(l3 + 3, True, n)
        for i in range(s1 + 1):
            names[i] = "S1" if i == s1 else ""
        for i in range(s1 + 1, n):
            if names[i].startswith("T"):
                names[i] = ""  # no ribs seen: thoracic names would be a guess
        return _Count(names, l3, conf, warnings,
                      "counted up from the sacrum and checked with the transverse processes; "
                      "the last rib is not in the scan")
    names = [""] * n
    if all_ribbed:
        return _Count(names, None, 0.0, warnings, "every vertebra seen carries ribs (thoracic spine)")
    return _Count(names, None, 0.0, warnings,
                  "neither the last rib (T12) nor the sacrum is in the scan, so the vertebrae cannot be counted")


def _z(bodies: list[_Body], idx: int | None) -> str:
    if idx is None or not 0 <= idx < len(bodies):
        return "outside the scan"
    return f"{bodies[idx].seg.centre_mm:.0f} mm"


#: A stretch of spine longer than this (mm) with no vertebral body told apart in it — below
#: the lowest body found, or between two bodies — hides at least one vertebra (a body and its
#: disc span 30–40 mm here).
UNREAD_MM = 40.0
#: A whole "body" taller than this (mm) is two or more vertebrae whose disc was not seen.
MERGED_MM = 45.0


def _unread_stretches(work: Work, bodies: list[_Body]) -> list[tuple[float, float]]:
    """Stretches (bottom, top mm) of the scan where vertebrae went unseen or merged, low to high."""
    z0 = float(work.z_mm[0])
    if not bodies:
        return [(z0, float(work.z_mm[-1]))]
    out = []
    if bodies[0].seg.bottom_mm - z0 > UNREAD_MM:
        out.append((z0, bodies[0].seg.bottom_mm))
    for lower, upper in zip(bodies, bodies[1:]):
        if lower.seg.complete and lower.seg.height_mm > MERGED_MM:
            out.append((lower.seg.bottom_mm, lower.seg.top_mm))
        if upper.seg.bottom_mm - lower.seg.top_mm > UNREAD_MM:
            out.append((lower.seg.top_mm, upper.seg.bottom_mm))
    return out


def _coverage(work: Work, bodies: list[_Body], count: _Count | None, rib_share: float) -> str:
    """One sentence on what the scan shows: its z range and the vertebrae it could name.

    "L3 lies below the scan" is said only when the vertebrae were read down to the scan's
    lower edge, one by one; where a stretch of the spine could not be divided into vertebrae
    (thick slices, coarse pixels or soft bone blur the discs), L3 may lie in it and the count
    above it is uncertain.
    """
    text = _coverage_text(work, bodies, count, rib_share)
    names = count.names if count else []
    t12_bottom = next((b.seg.bottom_mm for b, nm in zip(bodies, names) if nm == "T12"), float("inf"))
    stretches = [(lo, hi) for lo, hi in _unread_stretches(work, bodies) if lo < t12_bottom]  # L3 is below T12
    if stretches and "below the scan" in text:
        where = ", ".join(f"z {lo:.0f}…{hi:.0f} mm" for lo, hi in stretches)
        doubt = (
            f"but the spine could not be divided into vertebrae at {where} (thick slices, coarse "
            "pixels or soft bone can hide the discs), so L3 may lie there"
        )
        for claim in ("L3 probably lies below the scan", "L3 lies below the scan"):
            text = text.replace(claim, doubt)
        text = text.replace("too short to tell vertebrae apart", "vertebrae not told apart")
    return text


def _coverage_text(work: Work, bodies: list[_Body], count: _Count | None, rib_share: float) -> str:
    z0, z1 = float(work.z_mm[0]), float(work.z_mm[-1])
    text = f"covers z {z0:.0f}…{z1:.0f} mm ({len(work.z_mm)} slices, {z1 - z0:.0f} mm)"
    names = count.names if count else []
    named = [(nm, b) for nm, b in zip(names, bodies) if nm]
    if named:
        lo_name, hi_name = named[0][0], named[-1][0]
        if lo_name == hi_name:
            text += f", {len(bodies)} vertebral bodies seen, only {lo_name} named"
        else:
            text += f", about {hi_name}–{lo_name}: the lowest vertebra seen is {lo_name}, the highest {hi_name}"
        if count is not None and count.l3 is None and count.missing:
            text += f": {count.missing}"
    elif count is not None and "thoracic" in count.anchor_text:
        text += (
            f", {len(bodies)} vertebral bodies seen, every one carrying ribs (thoracic spine): "
            "L3 lies below the scan"
        )
    elif rib_share >= 0.5 and sum(b.seg.complete for b in bodies) < 2:
        text += (
            f", too short to tell vertebrae apart; rib-like bone beside the spine on "
            f"{rib_share:.0%} of slices (thoracic level): L3 lies below the scan"
        )
    elif bodies:
        text += (
            f", {len(bodies)} vertebral bodies seen but neither the last rib (T12) nor the "
            "sacrum, so they cannot be counted"
        )
    else:
        text += ", no vertebral bodies could be told apart along the spine"
    return text


def _nearest_k(work: Work, z: float) -> int:
    return int(np.clip(np.rint((z - work.z_mm[0]) / work.dz_mm), 0, len(work.z_mm) - 1))


def _tp_slice(work: Work, column: Column, seg: Segment) -> int | None:
    right, left = side_counts(work, column, TP_LATERAL_MM, TP_AP_MM)
    both = (right >= MIN_AREA_MM2) & (left >= MIN_AREA_MM2)
    ks = [k for k in range(len(work.z_mm)) if seg.bottom_mm <= work.z_mm[k] <= seg.top_mm]
    for k in sorted(ks, reverse=True):  # from the top of L3 down
        if both[k]:
            return k
    return None


def _tp_per_body(
    work: Work, column: Column, segments: list[Segment], skip: list[bool] | None = None
) -> list[float]:
    """Transverse-process reach of each body (NaN where it cannot be read).

    The processes leave the upper part of a body, so a body cut by the scan is measured only
    when at least 70 % of an ordinary lumbar height is seen (its processes are then in the
    scan), the zone placed from the endplate that is seen.
    """
    done = [sg.height_mm for sg in segments if sg.complete]
    typical = float(np.median(done)) if done else 27.0
    out = []
    skip = skip or [False] * len(segments)
    for sg, no in zip(segments, skip):
        if no:
            out.append(float("nan"))
        elif sg.complete:
            out.append(tp_reach_mm(work, column, sg.bottom_mm, sg.top_mm))
        elif sg.bottom_seen and sg.height_mm >= 0.7 * typical:
            h = max(sg.height_mm, typical)
            out.append(tp_reach_mm(work, column, sg.bottom_mm, min(sg.bottom_mm + h, sg.top_mm + 0.15 * h)))
        elif sg.top_seen and sg.height_mm >= 0.7 * typical:
            # cut by the bottom of the scan: the processes leave the upper part, which is seen
            h = max(sg.height_mm, typical)
            out.append(tp_reach_mm(work, column, sg.top_mm - h, sg.top_mm))
        else:
            out.append(float("nan"))
    return out


def find_l3(volume: CTVolume, settings: LocateSettings | None = None) -> SliceChoice:
    """Pick the L3 slice(s) of ``volume``; raise ``L3NotFound`` when L3 is not in the scan.

    Parameters
    ----------
    volume
        Display-oriented CT (k runs inferior → superior).
    settings
        Which definition of the L3 level and how many millimetres to average around it.

    Returns
    -------
    SliceChoice
        ``method="auto"``, the chosen indices and their z, a confidence in 0..1, every vertebra
        identified, and warnings (e.g. when the counts from the ribs and the sacrum disagree).
    """
    settings = settings or LocateSettings()
    work = make_work(volume)
    if volume.n_slices < 3:
        coverage = f"covers {volume.n_slices} slice(s) at z {work.z_mm[0]:.0f} mm"
        raise L3NotFound(
            f"too few slices to count vertebrae: the scan {coverage}. "
            "Give the slice to analyse with --slices.",
            coverage=coverage,
        )
    column = find_column(work)
    if column is None:
        coverage = f"covers z {work.z_mm[0]:.0f}…{work.z_mm[-1]:.0f} mm, no bone found"
        raise L3NotFound(f"no spine found: the scan {coverage}; give the slice with --slices", coverage=coverage)
    rib_r, rib_l = side_counts(work, column, RIB_LATERAL_MM, RIB_AP_MM, inside_body=True)
    rib = np.minimum(rib_r, rib_l) >= MIN_RIB_MM2  # both sides: ribs come in pairs
    # An ala on each side: dense bone filling the window (as before), or bone joined to the
    # body filling it once outlines are filled, or running out across it (soft bone whose
    # marrow is below the bone threshold and whose outline is not closed on the coarse grid).
    ala_r, ala_l = side_counts(work, column, ALA_LATERAL_MM, ALA_AP_MM)
    att_r, att_l, cross_r, cross_l = attached_counts(work, column, ALA_LATERAL_MM, ALA_AP_MM)
    ala = (
        ((ala_r >= MIN_ALA_MM2) | (att_r >= MIN_ALA_MM2) | (cross_r >= ALA_CROSS_SHARE))
        & ((ala_l >= MIN_ALA_MM2) | (att_l >= MIN_ALA_MM2) | (cross_l >= ALA_CROSS_SHARE))
    )
    head_r, head_l = beside_body_mm(work, column)
    head = (head_r >= HEAD_MM, head_l >= HEAD_MM)  # judged per side: ribs come in pairs
    segments = find_segments(work.z_mm, column.density)
    # Processes are compared between the lumbar bodies, which lie among the lowest ten of
    # any scan that shows them (the sacrum, at most six lumbar vertebrae, a few rib-like
    # bodies where the rib detector errs); the thoracic spine above is not read (time).
    tp = _tp_per_body(work, column, segments, skip=[n >= TP_BODIES for n in range(len(segments))])
    # (the veto of rib-like bone without a rib head compares the processes, so they come first)
    bodies = _judge_bodies(segments, work.z_mm, rib, ala, tp=tp, head=head)
    count = _count(bodies) if bodies else None
    # For a scan too short to tell vertebrae apart: how often is there rib-like bone anywhere
    # beside and behind the spine (a wider window than the one that judges each vertebra).
    wide_r, wide_l = side_counts(work, column, (35.0, 100.0), (0.0, 110.0), inside_body=True)
    rib_share = float((np.maximum(wide_r, wide_l) >= MIN_RIB_MM2).mean())
    log.debug(
        "column i=%d; %d bodies; ribs %s; alae %s", column.i_c, len(bodies),
        [b.rib for b in bodies], [b.ala for b in bodies],
    )
    levels = tuple(
        VertebraLevel(name, b.seg.centre_mm, b.seg.top_mm if b.seg.top_seen else None,
                      b.seg.bottom_mm if b.seg.bottom_seen else None)
        for name, b in zip(count.names if count else [], bodies)
        if name
    )
    if count is None or count.l3 is None:
        coverage = _coverage(work, bodies, count, rib_share)
        raise L3NotFound(
            f"L3 not found: the scan {coverage}. Give the slice to analyse with --slices if you know it.",
            coverage=coverage,
        )
    body = bodies[count.l3].seg
    if not body.complete:
        coverage = _coverage(work, bodies, count, rib_share)
        edge = "lower" if not body.bottom_seen else "upper"
        raise L3NotFound(
            f"L3 is only partly in the scan (its {edge} part is cut off): the scan {coverage}. "
            "Give the slice to analyse with --slices if you know it.",
            coverage=coverage,
        )
    warnings = list(count.warnings)
    confidence = count.confidence
    guessed = [nm for nm, b in zip(count.names, bodies) if b.seg.inferred and nm]
    if guessed:
        warnings.append(
            "no disc was visible at one or more levels (fused vertebrae, an implant or thick "
            f"slices): the boundaries of {', '.join(guessed)} were placed from the spacing of "
            "the neighbouring discs — check spine.png"
        )
        confidence = min(confidence, 0.5)
    # Counted from the ribs alone, a missed disc below L4 cannot move L3 (the names run from
    # the top); the lowest segment there is often the fused sacrum whose alae were not seen,
    # and a tall "body" there is no sign of a miscount.
    first = count.l3 - 1 if "S1" not in count.names else 0
    heights = [
        b.seg.height_mm
        for n_b, (b, nm) in enumerate(zip(bodies, count.names))
        if nm.startswith("L") and b.seg.complete and n_b >= first
    ]
    if len(heights) >= 3:
        med = float(np.median(heights))
        odd = [h for h in heights if abs(h - med) > 0.4 * med]
        if odd:
            warnings.append(
                f"lumbar body heights are irregular ({', '.join(f'{h:.0f}' for h in heights)} mm): "
                "a disc may have been missed or a vertebra is fused or collapsed — check spine.png"
            )
            confidence = min(confidence, 0.5)
    if settings.definition == "mid-L3":
        k0 = _nearest_k(work, body.centre_mm)
    elif settings.definition == "L3-inferior-endplate":
        k0 = _nearest_k(work, body.bottom_mm)
    else:
        tp = _tp_slice(work, column, body)
        if tp is None:
            raise L3NotFound(
                "L3 was found (z "
                f"{body.bottom_mm:.0f}…{body.top_mm:.0f} mm) but no slice in it shows both "
                "transverse processes; use the definition mid-L3 or give the slice with --slices",
                coverage=_coverage(work, bodies, count, rib_share),
            )
        k0 = tp
    z0 = float(work.z_mm[k0])
    if settings.average_mm > 0:
        ks = [k for k in range(volume.n_slices) if abs(work.z_mm[k] - z0) <= settings.average_mm + 1e-6]
    else:
        ks = [k0]
    log.info(
        "L3 at slice %d (z %.1f mm, %s), confidence %.2f: %s",
        k0, z0, settings.definition, confidence, count.anchor_text,
    )
    return SliceChoice(
        indices=tuple(int(k) for k in ks),
        z_mm=tuple(volume.z_mm(k) for k in ks),
        method="auto",
        definition=settings.definition,
        confidence=float(confidence),
        vertebrae=levels,
        warnings=tuple(warnings),
    )
