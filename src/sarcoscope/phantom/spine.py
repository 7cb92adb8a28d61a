"""The phantom's spine along z: which vertebra (or disc) each height falls in.

z is patient-superior mm (DICOM LPS z). The top of the first sacral segment sits at z = 0;
vertebrae stack upwards with their discs. ``level_coordinate(z)`` maps z to a continuous
anatomical index ``s`` (0 at the mid-body of the last rib-bearing vertebra, +1 per vertebra
downwards) that the organs are placed along, so that the viscera follow the spine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .params import SpineParams

#: Lumbar transverse-process half-length factors (L3 longest, ANATOMY.md).
TP_LENGTH_MM = {1: 15.0, 2: 22.0, 3: 29.0, 4: 25.0, 5: 22.0, 6: 20.0}

#: Thoracic transverse processes (mm beyond the pedicle, before ``size_scale``), counted from
#: the last rib-bearing vertebra upwards. T1–T10 carry long processes whose tips articulate
#: with the rib tubercles; T11's are short and have no costal facet; the last thoracic
#: vertebra (T12 in a 12-rib spine) has only rudimentary processes, a few millimetres, its
#: mammillary and accessory tubercles taking their place (Gray's Anatomy; ANATOMY.md). The
#: long processes of a spine start at L1.
THORACIC_TP_MM = 25.0
LAST_THORACIC_TP_MM = {0: 4.0, 1: 14.0}  # key: 0 = last rib-bearing vertebra, 1 = the one above


@dataclass(frozen=True)
class Vertebra:
    name: str
    region: str  # "T", "L" or "S"
    number: int  # 1-based within its region
    s: float  # anatomical index (0 = last rib-bearing vertebra)
    z_top_mm: float
    z_bottom_mm: float
    rib: str  # "none", "full", "short" (hypoplastic), "rudimentary" (lumbar rib)
    width_mm: float
    depth_mm: float

    @property
    def z_mm(self) -> float:
        return 0.5 * (self.z_top_mm + self.z_bottom_mm)

    @property
    def height_mm(self) -> float:
        return self.z_top_mm - self.z_bottom_mm


class SpineModel:
    """Vertebrae from T1 to the sacrum for one subject."""

    def __init__(self, spine: SpineParams, rng: np.random.Generator) -> None:
        self.params = spine
        sc = spine.size_scale
        n_t, n_l = spine.rib_pairs, spine.lumbar_count
        verts: list[Vertebra] = []
        # Sacrum (S1 body ~ 30 mm, the whole sacrum ~ 100 mm downwards).
        s_sacrum = float(n_l + 1)
        verts.append(Vertebra("S1", "S", 1, s_sacrum, 0.0, -30.0 * sc, "none", 48.0 * sc, 32.0 * sc))
        z = 0.0
        # lumbar from the bottom up
        for i in range(n_l, 0, -1):
            disc = spine.disc_mm * (0.85 if i == n_l else 1.0) * rng.uniform(0.92, 1.08)
            z += disc
            h = 27.0 * sc * rng.uniform(0.95, 1.05) * (0.93 if i == 1 else 1.0)
            rib = "rudimentary" if (i == 1 and spine.lumbar_rib) else "none"
            w = (43.0 + 1.5 * i) * sc
            verts.append(Vertebra(f"L{i}", "L", i, float(i), z + h, z, rib, w, (31.0 + 0.8 * i) * sc))
            z += h
        for i in range(n_t, 0, -1):
            frac = (i - 1) / max(n_t - 1, 1)  # 0 at T1, 1 at last thoracic
            disc = (3.5 + 3.0 * frac) * sc * rng.uniform(0.9, 1.1)
            z += disc
            h = (15.0 + 9.0 * frac) * sc * rng.uniform(0.95, 1.05)
            rib = "full"
            if i == n_t and spine.hypoplastic_last_rib:
                rib = "short"
            w = (26.0 + 14.0 * frac) * sc
            verts.append(Vertebra(f"T{i}", "T", i, float(i - n_t), z + h, z, rib, w, (18.0 + 10.0 * frac) * sc))
            z += h
        self.vertebrae: tuple[Vertebra, ...] = tuple(sorted(verts, key=lambda v: v.z_mm))
        zs = np.array([v.z_mm for v in self.vertebrae])
        ss = np.array([v.s for v in self.vertebrae])
        # s decreases upwards; np.interp needs increasing x.
        self._z = zs
        self._s = ss
        self.n_lumbar = n_l
        self.n_thoracic = n_t
        self.z_top_mm = self.vertebrae[-1].z_top_mm
        self.z_sacrum_bottom_mm = -100.0 * sc

    def tp_length_mm(self, v: Vertebra) -> float:
        """Transverse-process length beyond the pedicle (mm, size-scaled) of vertebra ``v``.

        Rudimentary on the last thoracic vertebra, short on the one above, long from L1 down
        with L3's the longest (``TP_LENGTH_MM``; the last lumbar's × 0.9); 0 for the sacrum.
        """
        sc = self.params.size_scale
        if v.region == "T":
            return LAST_THORACIC_TP_MM.get(self.n_thoracic - v.number, THORACIC_TP_MM) * sc
        if v.region == "L":
            tl = TP_LENGTH_MM.get(v.number, 25.0) * sc
            return tl * 0.9 if v.number == self.n_lumbar else tl
        return 0.0

    def by_name(self, name: str) -> Vertebra:
        for v in self.vertebrae:
            if v.name == name:
                return v
        names = ", ".join(v.name for v in self.vertebrae)
        raise ValueError(f"level {name!r} is not in this spine ({names})")

    def level_coordinate(self, z_mm: float) -> float:
        """Continuous anatomical index s at height z (extrapolated beyond the ends)."""
        zs, ss = self._z, self._s
        if z_mm < zs[0]:
            return float(ss[0] + (zs[0] - z_mm) / 30.0)
        if z_mm > zs[-1]:
            return float(ss[-1] - (z_mm - zs[-1]) / 25.0)
        return float(np.interp(z_mm, zs, ss))

    def at(self, z_mm: float) -> tuple[Vertebra | None, Vertebra | None, Vertebra | None]:
        """(vertebra containing z or None, vertebra below, vertebra above)."""
        below = above = inside = None
        for v in self.vertebrae:
            if v.z_bottom_mm <= z_mm <= v.z_top_mm:
                inside = v
            elif v.z_top_mm < z_mm:
                below = v
            elif v.z_bottom_mm > z_mm and above is None:
                above = v
        return inside, below, above

    def lordosis_mm(self, s: float) -> float:
        """Anterior displacement of the spine (mm) at level s: peaks at L3–L4."""
        n = self.n_lumbar
        lo, hi = -1.0, n + 1.5
        if s <= lo or s >= hi:
            return 0.0
        t = (s - lo) / (hi - lo)
        return float(self.params.lordosis_mm * np.sin(np.pi * t) ** 1.5)
