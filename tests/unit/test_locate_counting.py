"""Counting rules of the L3 finder, on hand-made lists of judged vertebral bodies.

Each failure type found in the phantom evaluation (docs/l3-localisation.md) gets a small,
deterministic case here: bodies are (bottom, top) z with a rib / ala verdict and a measured
transverse-process reach, listed bottom to top as the finder sees them.
"""

from __future__ import annotations

import math

from sarcoscope.locate.finder import CONF_BOTH, CONF_CONFLICT, _Body, _count
from sarcoscope.locate.vertebrae import Segment

NAN = math.nan


def _bodies(spec: list[tuple[bool | None, bool | None, float]], first_cut: bool = False) -> list[_Body]:
    """Bodies 27 mm tall with 10 mm discs, from z = 0 up; spec = (rib, ala, tp_mm) each."""
    out = []
    z = 0.0
    for n, (rib, ala, tp) in enumerate(spec):
        out.append(_Body(Segment(z, z + 27.0, not (first_cut and n == 0), True), rib, ala, tp))
        z += 37.0
    return out


# Typical reaches (mm): L1 32, L2 40, L3 47, L4 44, L5 39; thoracic bodies 26; sacrum NaN.
LUMBAR = {"L1": 32.0, "L2": 40.0, "L3": 47.0, "L4": 44.0, "L5": 39.0}


def test_ordinary_spine_both_ends_agree() -> None:
    spec = [(False, True, NAN)] + [(False, False, LUMBAR[f"L{5 - n}"]) for n in range(5)]
    spec += [(True, False, 26.0)] * 3
    c = _count(_bodies(spec, first_cut=True))
    assert c.l3 == 3 and c.names[3] == "L3" and c.names[0] == "S1" and c.names[6] == "T12"
    assert c.confidence == CONF_BOTH and not c.warnings


def test_bone_beside_the_lowest_bodies_of_a_chest_scan_is_not_the_sacrum() -> None:
    # Chest / upper-abdomen scan: the lowest body (L1, cut by the scan) has ala-like bone
    # beside it (a kidney with contrast), every body above carries ribs. Before the fix the
    # finder counted up from this "sacrum" and named an L3 inside the thoracic spine.
    spec = [(False, True, NAN)] + [(True, False, 26.0)] * 6
    c = _count(_bodies(spec, first_cut=True))
    assert c.l3 is None
    assert "S1" not in c.names


def test_rib_count_one_off_is_settled_by_the_transverse_processes() -> None:
    # A short 12th rib missed: the rib count sees 6 lumbar-type bodies; the sacrum count is
    # right, and the body it names L3 has the longest processes.
    spec = [(False, True, NAN)] + [(False, False, LUMBAR[f"L{5 - n}"]) for n in range(5)]
    spec += [(False, False, 27.0)]  # T12 with its short rib not seen
    spec += [(True, False, 26.0)] * 2
    c = _count(_bodies(spec, first_cut=True))
    assert c.l3 == 3 and c.names[3] == "L3"
    assert c.confidence == CONF_CONFLICT
    assert any("disagree" in w and "transverse processes" in w for w in c.warnings), c.warnings


def test_true_sacralisation_keeps_the_rib_count() -> None:
    # Four lumbar vertebrae (L1 32, L2 40, L3 47, L4 40): the sacrum count would call L2 "L3";
    # the processes side with the ribs, and the disagreement is still reported.
    spec = [(False, True, NAN), (False, False, 40.0), (False, False, 47.0), (False, False, 40.0),
            (False, False, 32.0)] + [(True, False, 26.0)] * 3
    c = _count(_bodies(spec, first_cut=True))
    assert c.l3 == 2 and c.names[2] == "L3"
    assert c.confidence == CONF_CONFLICT
    assert any("disagree" in w for w in c.warnings)


def test_processes_too_alike_keep_the_rib_count_and_say_so() -> None:
    spec = [(False, True, NAN), (False, False, 44.0), (False, False, 44.5), (False, False, 44.2),
            (False, False, 44.0)] + [(True, False, 26.0)] * 3
    c = _count(_bodies(spec, first_cut=True))
    assert c.l3 == 2 and c.confidence == CONF_CONFLICT
    assert any("did not tell them apart" in w for w in c.warnings), c.warnings


def test_sacrum_only_needs_every_possible_l3_in_the_scan() -> None:
    # Lower-abdomen scan of a lumbarised spine: S1, L6, L5, L4 whole, the top body cut
    # (its processes not in the scan). The ordinary count would name L4 "L3"; a sixth lumbar
    # vertebra would put L3 in the cut body, so no L3 is named.
    spec = [(False, True, NAN), (False, False, 36.0), (False, False, 39.0), (False, False, 44.0),
            (False, False, NAN)]
    c = _count(_bodies(spec, first_cut=True))
    assert c.l3 is None
    assert "L3 may lie above the scan" in c.missing
    assert c.names[0] == "S1" and all(nm == "" for nm in c.names[1:])


def test_sacrum_only_names_the_body_with_the_longest_processes() -> None:
    # No ribs in the scan, S1 + 5 bodies seen: the 3rd above S1 has the longest processes.
    spec = [(False, True, NAN), (False, False, 39.0), (False, False, 44.0), (False, False, 47.0),
            (False, False, 40.0), (False, False, 32.0)]
    c = _count(_bodies(spec, first_cut=True))
    assert c.l3 == 3 and c.names[3] == "L3" and c.confidence < 0.9
    assert any("sacrum only" in w for w in c.warnings)
    # The same scan of a lumbarised spine: the 4th body above S1 has the longest processes.
    spec = [(False, True, NAN), (False, False, 36.0), (False, False, 39.0), (False, False, 44.0),
            (False, False, 47.0), (False, False, 40.0)]
    c = _count(_bodies(spec, first_cut=True))
    assert c.l3 == 4 and c.confidence <= 0.5
    assert any("transitional lumbosacral vertebra is likely" in w for w in c.warnings), c.warnings


def test_agreeing_counts_contradicted_by_the_processes_are_flagged() -> None:
    spec = [(False, True, NAN)] + [(False, False, v) for v in (39.0, 44.0, 40.0, 47.0, 32.0)]
    spec += [(True, False, 26.0)] * 3
    c = _count(_bodies(spec, first_cut=True))
    assert c.l3 == 3 and c.confidence <= 0.5
    assert any("does not have the longest transverse processes" in w for w in c.warnings)


def test_rib_count_alone_needs_the_body_below_l3() -> None:
    # Upper-abdomen scan ending just below the body the rib count calls L3: a missed short
    # 12th rib would make that body L2, and only the processes of the body below could show
    # it, so no L3 is named.
    spec = [(False, False, 47.0), (False, False, 40.0), (False, False, 32.0)]
    spec += [(True, False, 26.0)] * 3
    c = _count(_bodies(spec))
    assert c.l3 is None
    assert "short 12th rib" in c.missing and "below the scan" in c.missing
    # With the body below in the scan, the count stands (confidence of a one-end count).
    spec = [(False, False, 44.0)] + spec
    c = _count(_bodies(spec))
    assert c.l3 == 1 and c.names[1] == "L3" and 0.5 < c.confidence < 0.9


def test_upper_abdomen_with_two_missed_ribs_names_no_l3() -> None:
    # Seed-7 case 176 of the evaluation: an upper-abdomen scan (L2 lowest) where the ribs of
    # T12 and T11 were not seen, so counting down from "T12" (really T10) calls L1 "L3". The
    # lowest body (really L2) has clearly longer processes than the body counted as L3 and
    # nothing below it can be compared: no L3 is named.
    spec = [(False, False, 49.0), (False, False, 37.0), (False, False, 29.0), (False, False, 26.0)]
    spec += [(True, False, 26.0)] * 3
    c = _count(_bodies(spec, first_cut=True))
    assert c.l3 is None
    assert "longer transverse processes" in c.missing and "below" in c.missing
    assert not any(c.names[: 2])  # the names below the doubtful count are not given


def test_sacrum_like_body_under_rib_bearing_bodies_is_not_counted_from() -> None:
    # A chest scan whose T12 rib is short (not seen): the lowest body has ala-like bone beside
    # it and the bodies above carry ribs except T12. Counting up from it named "L3" inside the
    # thoracic spine (seed 11, case 87, while the disc finder was being changed).
    spec = [(True, True, NAN), (False, False, 27.0)] + [(True, False, 26.0)] * 5
    c = _count(_bodies(spec, first_cut=True))
    assert c.l3 is None
    assert "S1" not in c.names


def test_sacrum_only_count_through_a_placed_disc_names_no_l3() -> None:
    # Lower-abdomen scan of a lumbarised spine whose L6–S1 disc was not seen: the discs above
    # the sacrum were placed from the spacing and split the bodies into short pieces, and the
    # ordinary count named a body above the scan's real L4 "L3" although L3 was not in the
    # scan (seed 11, case 83 of the evaluation). Counting from one end through a disc that
    # was not seen is a guess: no L3.
    bodies = _bodies([(False, True, NAN), (False, False, 36.0), (False, False, 44.0),
                      (False, False, 47.0), (False, False, 40.0)], first_cut=True)
    b = bodies[1]
    bodies[1] = _Body(Segment(b.seg.bottom_mm, b.seg.top_mm, True, True, inferred=True), b.rib, b.ala, b.tp_mm)
    c = _count(bodies)
    assert c.l3 is None
    assert "not clearly seen" in c.missing and "above the scan" in c.missing
    # A body far too short for a lumbar vertebra (12 mm) is just as doubtful.
    bodies = _bodies([(False, True, NAN), (False, False, 36.0), (False, False, 44.0),
                      (False, False, 47.0), (False, False, 40.0)], first_cut=True)
    b = bodies[2]
    bodies[2] = _Body(Segment(b.seg.bottom_mm, b.seg.bottom_mm + 12.0, True, True), b.rib, b.ala, b.tp_mm)
    assert _count(bodies).l3 is None
    # The same scan with every disc seen names L3 (the body with the longest processes).
    bodies = _bodies([(False, True, NAN), (False, False, 36.0), (False, False, 44.0),
                      (False, False, 47.0), (False, False, 40.0)], first_cut=True)
    assert _count(bodies).l3 == 3


def test_rib_count_past_an_unrecognised_sacrum_is_flagged() -> None:
    # The scan reaches below L5 (by the rib count) but no body there carries alae: the
    # sacrum was not recognised (soft bone, the scan starting in the middle of S1), so a
    # transitional vertebra cannot be ruled out. The rib count stands but is flagged.
    spec = [(False, False, NAN)] + [(False, False, LUMBAR[f"L{5 - n}"]) for n in range(5)]
    spec += [(True, False, 26.0)] * 3
    c = _count(_bodies(spec, first_cut=True))
    assert c.l3 == 3 and c.names[3] == "L3"
    assert c.confidence <= 0.5
    assert any("no sacrum" in w and "transitional" in w for w in c.warnings), c.warnings
    # Ending at L5 (nothing below it in the scan) the count is not flagged for that.
    c = _count(_bodies(spec[1:], first_cut=True))
    assert c.l3 == 2 and c.confidence > 0.5 and not any("no sacrum" in w for w in c.warnings)


def test_rib_like_bone_below_the_lowest_rib_head_is_not_a_rib() -> None:
    from sarcoscope.locate.finder import _veto_headless

    # bottom to top: S1, L5..L1 (L2 and L1 with rib-like bone but no rib head: the lower ribs
    # of a slim patient running down past them), T12 with its head seen, T11 whose head was
    # not seen (kept: above the lowest confirmed rib head), T10.
    spec = [(False, True, NAN)] + [(False, False, LUMBAR[f"L{5 - n}"]) for n in range(3)]
    spec += [(True, False, 40.0), (True, False, 32.0)] + [(True, False, 26.0)] * 3
    heads = [None, False, False, False, False, False, True, False, True]
    bodies = [_Body(b.seg, b.rib, b.ala, b.tp_mm, h) for b, h in zip(_bodies(spec, first_cut=True), heads)]
    judged = _veto_headless(bodies)
    assert [b.rib for b in judged] == [False, False, False, False, False, False, True, True, True]
    c = _count(judged)
    assert c.l3 == 3 and c.names[6] == "T12" and c.confidence == CONF_BOTH
    # Without the veto the two headless bodies make L2 "T12" and the counts disagree.
    assert _count(bodies).l3 != 3 or _count(bodies).confidence < CONF_BOTH
    # No rib head seen anywhere (a scan too coarse for it): the shafts are kept.
    bare = [_Body(b.seg, b.rib, b.ala, b.tp_mm, False if b.rib else None) for b in bodies]
    assert [b.rib for b in _veto_headless(bare)] == [b.rib for b in bare]


def test_rib_count_with_unreadable_processes_below_is_named_and_flagged() -> None:
    # Pedicle screws in L3 and L4: their processes cannot be read (NaN). The body below the
    # counted L3 is wholly in the scan, so whichever body a missed short rib would make L3
    # is in the scan too: L3 is named, flagged (seed 31, case 22: v4 first raised
    # L3NotFound here).
    spec = [(False, False, 36.0), (False, False, NAN), (False, False, NAN), (False, False, 40.0),
            (False, False, 32.0)] + [(True, False, 26.0)] * 3
    c = _count(_bodies(spec))
    assert c.l3 == 2 and c.names[2] == "L3" and c.confidence <= 0.5
    assert any("could not be read" in w for w in c.warnings), c.warnings
    # The body below cut by the edge of the scan: still no L3 (it may lie below the scan).
    c = _count(_bodies(spec[1:], first_cut=True))
    assert c.l3 is None and "below the scan" in c.missing


# ---- v5: rib heads as evidence of a rib (docs/l3-localisation.md, "v5")


def _with_heads(spec, shares, first_cut=True):
    """Bodies of ``spec`` with a measured rib-head share each (None: not judged)."""
    from sarcoscope.locate.finder import HEAD_SHARE

    return [
        _Body(b.seg, b.rib, b.ala, b.tp_mm, None if h is None else h >= HEAD_SHARE, h)
        for b, h in zip(_bodies(spec, first_cut=first_cut), shares)
    ]


def test_a_last_rib_whose_head_shows_on_a_few_slices_is_not_vetoed() -> None:
    from sarcoscope.locate.finder import _veto_headless

    # S1, L5..L1, T12 (shaft seen, its thin neck on a quarter of the head zone's slices),
    # T11 (shaft and head), T10. v4 vetoed T12 (head share < 0.5): T11 was taken for T12
    # and the counts disagreed (seed 31 case 22, seed 11 case 57 on the fixed phantom).
    spec = [(False, True, NAN)] + [(False, False, LUMBAR[f"L{5 - n}"]) for n in range(5)]
    spec += [(True, False, 23.0), (True, False, 26.0), (True, False, 26.0)]
    bodies = _with_heads(spec, [None, 0.0, 0.0, 0.0, 0.0, 0.0, 0.25, 1.0, 1.0])
    assert [b.rib for b in _veto_headless(bodies)][6] is True
    c = _count(_veto_headless(bodies))
    assert c.l3 == 3 and c.names[6] == "T12" and c.confidence == CONF_BOTH
    # A body with rib-like bone and no head on any slice (lower ribs running past L1) is
    # still vetoed.
    bodies = _with_heads(spec, [None, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 1.0, 1.0])
    assert [b.rib for b in _veto_headless(bodies)][6] is False
    # Head-like bone on a third of the slices beside an L1 whose processes reach farther than
    # L2's (a lumbar rib continuing its process; seed 11 case 135): vetoed — the last
    # thoracic vertebra's processes are rudimentary, shorter than L1's.
    spec_lr = spec[:5] + [(True, False, 52.0)] + [(True, False, 26.0)] * 2
    bodies = _with_heads(spec_lr, [None, 0.0, 0.0, 0.0, 0.0, 0.33, 1.0, 1.0])
    judged = _veto_headless(bodies)
    assert judged[5].rib is False
    c = _count(judged)
    assert c.names[6] == "T12" and c.names[3] == "L3" and c.l3 == 3


def test_a_thoracic_body_whose_shaft_is_missed_but_heads_are_seen_keeps_the_run() -> None:
    # 13 rib pairs with a short last rib (seed 31 case 80): T13 (shaft and head), T12 whose
    # shaft share fell below the threshold but whose heads are seen, T11 (cut by the scan).
    # v4: T13 was a "lonely" rib-like body, T11 became T12, 6 lumbar-type bodies.
    spec = [(False, True, NAN)] + [(False, False, LUMBAR[f"L{4 - n}"]) for n in range(4)]
    spec += [(True, False, 22.0), (False, False, 26.0), (True, False, NAN)]
    bodies = _with_heads(spec, [None, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, None])
    c = _count(bodies)
    assert c.names[5] == "T12" and c.l3 == 2
    # sacralisation (4 lumbar-type bodies): reported as a disagreement, the rib count kept
    assert c.confidence == CONF_CONFLICT and any("disagree" in w for w in c.warnings)
    # Without the heads on that body the run is cut there, as in v4: T11 is counted as the
    # last rib-bearing vertebra (6 lumbar-type bodies; here the processes rescue L3).
    bodies = _with_heads(spec, [None, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, None])
    assert any("6 lumbar-type" in w for w in _count(bodies).warnings)


def test_a_short_last_rib_seen_by_its_heads_alone_is_taken_where_the_sacrum_agrees() -> None:
    # S1, L5..L1, T12 with heads but no shaft (a hypoplastic rib), T11, T10.
    spec = [(False, True, NAN)] + [(False, False, LUMBAR[f"L{5 - n}"]) for n in range(5)]
    spec += [(False, False, 23.0), (True, False, 26.0), (True, False, 26.0)]
    shares = [None, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    c = _count(_with_heads(spec, shares))
    assert c.l3 == 3 and c.names[6] == "T12" and c.names[3] == "L3"
    assert c.confidence <= 0.5 and any("rib heads alone" in w for w in c.warnings), c.warnings
    # v4 (no head evidence): 6 lumbar-type bodies, a conflict at 0.3.
    c = _count(_bodies(spec, first_cut=True))
    assert c.confidence == CONF_CONFLICT
    # A true sacralisation (4 lumbar vertebrae) whose L1 shows head-like bone is not changed:
    # the shift would not make the counts agree.
    spec4 = [(False, True, NAN)] + [(False, False, LUMBAR[f"L{4 - n}"]) for n in range(4)]
    spec4 += [(True, False, 26.0)] * 3
    c = _count(_with_heads(spec4, [None, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]))
    assert c.names[5] == "T12" and c.confidence == CONF_CONFLICT


def test_a_short_last_rib_without_the_sacrum_needs_the_processes() -> None:
    # No sacrum in the scan: L5..L1, "T12" with heads but no shaft, T11, T10.
    lum = [(False, False, LUMBAR[f"L{5 - n}"]) for n in range(5)]
    spec = lum + [(False, False, 23.0), (True, False, 26.0), (True, False, 26.0)]
    shares = [0.0] * 5 + [1.0, 1.0, 1.0]
    c = _count(_with_heads(spec, shares, first_cut=False))
    # the body the heads make L3 (z index 2) has the longest processes: taken, flagged
    assert c.l3 == 2 and c.names[5] == "T12" and c.confidence <= 0.5
    assert any("rib heads alone" in w for w in c.warnings)
    # Head-like bone beside a lumbar L1 (the root of its processes): the body it would make
    # L3 (really L4) has shorter processes than the rib count's L3, so the rib count stays.
    spec = lum + [(True, False, 26.0)] * 3
    c = _count(_with_heads(spec, [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], first_cut=False))
    assert c.l3 == 2 and c.names[5] == "T12"
    assert not any("rib heads alone" in w for w in c.warnings)


def test_a_conflict_is_not_settled_by_a_misread_dip_in_the_processes() -> None:
    # Lumbarisation (6 lumbar-type bodies): S1, L6..L1, T12..T11. L3's processes were read
    # short (29 mm between L2's 38 and L4's 43: a kidney touching the tip cut the walk; seed
    # 31 case 57), so the comparison would take L4. v5 keeps the rib count and says why.
    spec = [(False, True, NAN), (False, False, 36.0), (False, False, 39.0), (False, False, 43.0),
            (False, False, 29.0), (False, False, 38.0), (False, False, 31.0),
            (True, False, 25.0), (True, False, 26.0)]
    c = _count(_bodies(spec, first_cut=True))
    assert c.l3 == 4 and c.names[4] == "L3" and c.confidence == CONF_CONFLICT
    assert any("clearly shorter than both its neighbours" in w for w in c.warnings), c.warnings
    # Read right (L3 the longest), the processes agree with the rib count anyway.
    spec[4] = (False, False, 47.0)
    c = _count(_bodies(spec, first_cut=True))
    assert c.l3 == 4 and c.confidence == CONF_CONFLICT


def _work(z0: float, z1: float):
    import numpy as np

    from sarcoscope.locate.column import Work

    z = np.arange(z0, z1 + 0.1, 5.0)
    empty = np.zeros((z.size, 1, 1), np.int16)
    return Work(empty, z, 5.0, 1.0, 1.0, 1, 1, empty)


def test_l3_is_said_to_lie_below_the_scan_only_when_the_spine_was_read_down_to_its_edge() -> None:
    from sarcoscope.locate.finder import _coverage

    # Four rib-bearing bodies read one by one down to the lower edge: a chest scan.
    bodies = _bodies([(True, False, 26.0)] * 4, first_cut=True)
    count = _count(bodies)
    assert count.l3 is None
    text = _coverage(_work(0.0, 140.0), bodies, count, rib_share=1.0)
    assert "L3 lies below the scan" in text and "may lie there" not in text
    # The same bodies with 150 mm of scan below them where no vertebra was told apart (thick
    # slices blur the discs): saying "L3 lies below the scan" would be a guess.
    shifted = [_Body(Segment(b.seg.bottom_mm + 150, b.seg.top_mm + 150, True, True), b.rib, b.ala, b.tp_mm)
               for b in bodies]
    text = _coverage(_work(0.0, 290.0), shifted, _count(shifted), rib_share=1.0)
    assert "L3 lies below the scan" not in text
    assert "could not be divided into vertebrae at z 0…150 mm" in text and "L3 may lie there" in text
