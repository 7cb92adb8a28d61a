"""Split the density profile along the spine into vertebral bodies and discs.

Bodies are dense (trabecular bone inside a cortical shell), discs are soft (70–110 HU), so the
mean HU of a small box that follows the bodies falls at every disc. Discs are the prominent
minima of that profile; each endplate sits where the profile crosses half-way between the
disc and the neighbouring body, which stays right under the partial-volume blur of thick slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d, grey_opening, percentile_filter
from scipy.signal import find_peaks

#: Resampling step of the profile along z (mm).
PROFILE_STEP_MM = 0.5
#: Shortest and tallest plausible vertebral body (mm): thoracic ≈ 18, lumbar ≈ 25–30.
MIN_BODY_MM = 10.0
MAX_BODY_MM = 50.0
#: Narrowest bright peak (mm) the profile keeps: endplates and streaks are thinner.
OPENING_MM = 5.0
#: Smallest body-to-disc contrast (HU) of the profile worth segmenting.
MIN_CONTRAST_HU = 20.0
#: Prominence (share of the local body level) of a clear disc, and of a candidate that is
#: only taken to fill a gap where a disc is missing.
STRONG_PROMINENCE = 0.2
WEAK_PROMINENCE = 0.07
#: Length (mm) over which the local body level is taken.
LOCAL_WINDOW_MM = 60.0
#: Spacing between discs, relative to the neighbouring spacings, below which a disc is
#: spurious and above which one is missing.
SHORT_GAP = 0.62
LONG_GAP = 1.6
#: At most this many discs are placed from the neighbours' spacing in one scan.
MAX_INFERRED = 2
#: Height (mm) given to a disc that had to be inferred.
DISC_GUESS_MM = 9.0
#: Share of the profile's range (above its 5th percentile) a body's plateau must reach.
SOFT_SHARE = 0.3
#: Closest two discs can be (mm).
MIN_DISC_SPACING_MM = 17.0


@dataclass(frozen=True)
class Segment:
    """One vertebral body between two discs, bottom and top in patient z (mm).

    ``bottom_seen``/``top_seen`` say whether that endplate was seen, or the body runs out of
    the scan there (then the value is the scan edge).
    """

    bottom_mm: float
    top_mm: float
    bottom_seen: bool
    top_seen: bool
    inferred: bool = False  # a bounding disc was not seen but placed from the neighbours

    @property
    def complete(self) -> bool:
        return self.bottom_seen and self.top_seen

    @property
    def centre_mm(self) -> float:
        return (self.bottom_mm + self.top_mm) / 2

    @property
    def height_mm(self) -> float:
        return self.top_mm - self.bottom_mm


def _crossing(zg: np.ndarray, q: np.ndarray, start: int, stop: int, level: float) -> float | None:
    """First z from index ``start`` towards ``stop`` where ``q`` reaches ``level`` (interpolated)."""
    step = 1 if stop > start else -1
    prev = start
    for idx in range(start + step, stop + step, step):
        if q[idx] >= level:
            a, b = q[prev], q[idx]
            t = 0.0 if b == a else (level - a) / (b - a)
            return float(zg[prev] + t * (zg[idx] - zg[prev]))
        prev = idx
    return None


def _regularise(
    discs: list[int], prom: dict[int, float], step_mm: float, inferred: set[int]
) -> list[int]:
    """Make the disc spacing plausible: vertebrae next to each other have similar heights.

    A spacing much shorter than its neighbours' means a spurious minimum inside a body (the
    weaker of its two discs goes); a spacing much longer means a missed disc (the clearest
    weak minimum near its middle comes in).
    """
    discs = sorted(discs)
    weak = sorted(p for p in prom if p not in discs)
    for _ in range(40):
        if len(discs) < 3:
            break
        gaps = np.diff(discs) * step_mm
        changed = False
        for g in range(len(gaps)):
            ref = float(np.median(np.delete(gaps, g)[max(0, g - 2) : g + 2])) if len(gaps) > 1 else gaps[g]
            if gaps[g] < SHORT_GAP * ref:
                a, b = discs[g], discs[g + 1]
                drop = a if prom.get(a, 0.0) < prom.get(b, 0.0) else b
                discs.remove(drop)
                changed = True
                break
            if gaps[g] > LONG_GAP * ref:
                a, b = discs[g], discs[g + 1]
                mid = (a + b) / 2
                inner = [p for p in weak if a + 0.25 * (b - a) <= p <= b - 0.25 * (b - a)]
                if inner:
                    best = min(inner, key=lambda p: abs(p - mid) / (b - a) - prom[p] / max(prom.values()))
                    discs = sorted(discs + [best])
                    weak.remove(best)
                    changed = True
                    break
                # No minimum at all: the disc is not visible (fusion, implant, thick slices).
                # Place it from the neighbours' spacing and remember it was inferred.
                parts = max(2, int(round(gaps[g] / ref)))
                if parts > 2 or len(inferred) >= MAX_INFERRED:
                    continue  # more than one disc missing here: too uncertain to place
                new = [int(round(a + (b - a) * n / parts)) for n in range(1, parts)]
                discs = sorted(discs + new)
                inferred.update(new)
                changed = True
                break
        if not changed:
            break
    return discs


def find_segments(z_mm: np.ndarray, density: np.ndarray) -> list[Segment]:
    """Vertebral bodies along the profile, bottom to top. Empty when no structure is seen."""
    if z_mm.size < 2 or z_mm[-1] - z_mm[0] < MIN_BODY_MM:
        return []
    zg = np.arange(z_mm[0], z_mm[-1] + 1e-6, PROFILE_STEP_MM)
    q = np.interp(zg, z_mm, density)
    # A grey opening removes peaks narrower than a few mm — the bright endplate slices and
    # single streaky slices — and keeps the discs (valleys) and bodies (plateaus) intact.
    dz = float(np.median(np.diff(z_mm)))
    width = max(OPENING_MM, 1.5 * dz)
    q = grey_opening(q, size=max(1, int(round(width / PROFILE_STEP_MM))), mode="nearest")
    q = gaussian_filter1d(q, 1.0 / PROFILE_STEP_MM, mode="nearest")
    lo, hi = np.percentile(q, [5, 95])
    amp = hi - lo
    if amp < MIN_CONTRAST_HU:
        return []
    # Prominence is judged against the local level of the bodies (a running upper quantile
    # over ~60 mm), not the whole profile: soft stretches where the track leaves the spine
    # (below the sacrum, above the scan's spine) must not make real discs look shallow.
    win = max(3, int(round(LOCAL_WINDOW_MM / PROFILE_STEP_MM)))
    local = np.maximum(percentile_filter(q, 80, size=win, mode="nearest"), 1.0)
    cand, props = find_peaks(
        -q, prominence=MIN_CONTRAST_HU / 2, distance=max(1, int(MIN_DISC_SPACING_MM / PROFILE_STEP_MM))
    )
    prom = {
        int(p): float(v) / float(local[p])
        for p, v in zip(cand, props["prominences"])
        if v >= WEAK_PROMINENCE * local[p] and q[p] < lo + 0.7 * amp
    }
    discs = sorted(p for p, v in prom.items() if v >= STRONG_PROMINENCE)
    inferred: set[int] = set()
    discs = _regularise(discs, prom, PROFILE_STEP_MM, inferred)
    n = zg.size
    # The scan edges bound a body too; an edge that is already soft counts as a seen disc.
    edge_low = q[0] < lo + 0.4 * amp
    edge_high = q[-1] < lo + 0.4 * amp
    bounds = [(0, edge_low)] + [(d, True) for d in discs] + [(n - 1, edge_high)]
    guessed = {d for d in discs if d in inferred}
    segments: list[Segment] = []
    for (a, a_seen), (b, b_seen) in zip(bounds[:-1], bounds[1:]):
        if b - a < 2:
            continue
        inner = q[a : b + 1]
        plateau = float(np.percentile(inner, 75))
        # A soft stretch (the track left the bone, or the edge of the scan) is no body. Judged
        # against the whole profile only loosely (a soft vertebra between dense ones is still a
        # body) and against its own bounding discs: a body stands clearly above them.
        rim = max(q[a] if a_seen else lo, q[b] if b_seen else lo)
        if plateau - rim < MIN_CONTRAST_HU / 2:
            continue
        if plateau < lo + SOFT_SHARE * amp and not (
            # A soft vertebra far below the dense sacrum or thoracic spine of the same scan:
            # still a body when two clear discs bound it at a body's spacing and it stands
            # well above both of them.
            a_seen and b_seen and 0 < a < b < n - 1
            and MIN_BODY_MM <= (b - a) * PROFILE_STEP_MM <= MAX_BODY_MM
            and plateau - rim >= MIN_CONTRAST_HU
        ):
            continue
        if a in guessed:
            bottom = float(zg[a]) + DISC_GUESS_MM / 2
        elif a_seen:
            bottom = _crossing(zg, q, a, b, (q[a] + plateau) / 2)
        else:
            bottom = float(zg[0])
        if b in guessed:
            top = float(zg[b]) - DISC_GUESS_MM / 2
        elif b_seen:
            top = _crossing(zg, q, b, a, (q[b] + plateau) / 2)
        else:
            top = float(zg[-1])
        if bottom is None or top is None or top - bottom < 3.0:
            continue
        seg = Segment(bottom, top, a_seen, b_seen, inferred=(a in guessed or b in guessed))
        if seg.complete and seg.height_mm < MIN_BODY_MM:
            continue
        segments.append(seg)
    return segments
