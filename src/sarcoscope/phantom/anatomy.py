"""One synthetic subject: its body, organs and skeleton painted at any height z.

A :class:`Subject` draws everything random about a patient once (shape harmonics, organ
sizes, bowel loop layout, HU of each tissue) from ``params.seed``; ``paint_soft`` and
``paint_bones`` then paint the axial cross-section at height ``z_mm`` onto a
:class:`~.shapes.Canvas`. Because shapes are functions of the continuous level coordinate,
neighbouring heights give neighbouring pictures (what volumes need).

Coordinates: x towards the patient's left, y posterior (mm), body centre at x = 0; the
patient lies supine on the table, so the back is at the bottom of the display image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .params import PhantomParams, SpineParams
from .shapes import (Blob, Canvas, Grid, PolarTable, blob_dist, blob_mask, blob_shell, capsule_mask, random_harm,
                     smooth_field, soft_from_dist)
from .spine import TP_LENGTH_MM, SpineModel, Vertebra
from .structures import MUSCLE_ENVELOPE, S

PI = math.pi
HALF_PI = 0.5 * math.pi


def _soft(d: np.ndarray, px: float) -> np.ndarray:
    return np.clip(d * (1.0 / px) + 0.5, 0.0, 1.0)


def _wrap(a: np.ndarray) -> np.ndarray:
    """Wrap angles that lie within -3π..3π into -π..π."""
    a = np.where(a > PI, a - 2 * PI, a)
    return np.where(a < -PI, a + 2 * PI, a)


class Knots:
    """A random smooth vector-valued function of the level coordinate s."""

    def __init__(self, rng: np.random.Generator, n: int, sd: float, s_lo: float = -12.0, s_hi: float = 12.0,
                 step: float = 1.5) -> None:
        self.s = np.arange(s_lo, s_hi + step, step)
        self.v = rng.normal(0.0, sd, size=(len(self.s), n))
        # correlate neighbours so that the function is smooth
        self.v = 0.6 * self.v + 0.4 * np.roll(self.v, 1, axis=0)

    def __call__(self, s: float) -> np.ndarray:
        return np.array([np.interp(s, self.s, self.v[:, i]) for i in range(self.v.shape[1])])


@dataclass
class Frame:
    """Body geometry at one height: outline, fascia and wall tables around (0, yc)."""

    z_mm: float
    s: float
    yc: float
    a: float
    b: float
    skin: float
    body: PolarTable
    fascia: PolarTable
    inner: PolarTable
    wall: PolarTable
    y_vb: float  # vertebral body centre y
    vb_w: float
    vb_d: float
    inner_a: float
    inner_b: float

    @staticmethod
    def blend(fa: "Frame", fb: "Frame", w: float, z_mm: float, s: float) -> "Frame":
        """Linear blend of two frames (what the blended soft-tissue templates show at z)."""
        def lin(x: float, y: float) -> float:
            return (1.0 - w) * x + w * y

        def tab(x: PolarTable, y: PolarTable) -> PolarTable:
            t = PolarTable.__new__(PolarTable)
            t.values = ((1.0 - w) * x.values + w * y.values).astype(np.float32)
            return t

        return Frame(z_mm, s, lin(fa.yc, fb.yc), lin(fa.a, fb.a), lin(fa.b, fb.b), lin(fa.skin, fb.skin),
                     tab(fa.body, fb.body), tab(fa.fascia, fb.fascia), tab(fa.inner, fb.inner),
                     tab(fa.wall, fb.wall), lin(fa.y_vb, fb.y_vb), lin(fa.vb_w, fb.vb_w), lin(fa.vb_d, fb.vb_d),
                     lin(fa.inner_a, fb.inner_a), lin(fa.inner_b, fb.inner_b))

    def point(self, theta: float, table: PolarTable, frac: float = 1.0) -> tuple[float, float]:
        r = float(table.at(np.array([theta]))[0]) * frac
        return r * math.cos(theta), self.yc + r * math.sin(theta)


class Subject:
    """Everything random about one patient, drawn once from ``params.seed``."""

    def __init__(self, params: PhantomParams, spine: SpineParams | None = None) -> None:
        self.p = params
        rng = np.random.default_rng([params.seed, 7])
        self.spine_params = spine or SpineParams()
        self.spine = SpineModel(self.spine_params, np.random.default_rng([params.seed, 11]))
        p = params
        male = p.sex == "M"
        self.male = male
        # ---- HU of each tissue (ANATOMY.md)
        con = p.contrast
        sat_hu = rng.uniform(-115, -92)
        muscle = p.muscle_hu + (rng.uniform(6, 9) if con != "none" else 0.0)
        self.hu = {
            S.AIR: rng.uniform(-1010, -995),
            S.TABLE: rng.uniform(-150, 150),
            S.PAD: rng.uniform(-900, -600),
            S.SKIN: rng.uniform(30, 60),
            S.SAT: sat_hu,
            S.FASCIA: rng.uniform(30, 70),
            S.WALL: muscle,
            S.RECTUS: muscle + rng.uniform(-3, 3),
            S.PSOAS: muscle + rng.uniform(0, 6),
            S.PARASPINAL: muscle - rng.uniform(0, 6),
            S.QL: muscle,
            S.LATISSIMUS: muscle,
            S.CHEST_WALL: muscle,
            S.ILIACUS: muscle,
            S.GLUTEAL: muscle - rng.uniform(0, 5),
            S.IMAT: sat_hu + rng.uniform(0, 12),
            S.VAT: min(sat_hu + rng.uniform(4, 18), -72.0),
            S.CORTEX: rng.uniform(380, 800) * (1.0 - 0.004 * max(p.age_years - 50, 0)),
            S.TRABECULAR: rng.uniform(150, 280) - 2.2 * max(p.age_years - 40, 0),
            S.DISC: rng.uniform(70, 110),
            S.CANAL: rng.uniform(0, 15),
            S.EPIDURAL_FAT: sat_hu + 10,
            S.URINE: rng.uniform(0, 20),
            S.FLUID: rng.uniform(0, 25),
            S.GAS: rng.uniform(-1000, -920),
            S.ASCITES: rng.uniform(0, 20),
            S.METAL: 3071.0,
            S.ARM_SKIN: rng.uniform(30, 60),
            S.ARM_FAT: sat_hu,
            S.ARM_MUSCLE: muscle,
            S.ARM_BONE: rng.uniform(600, 1100),
            S.LUNG: rng.uniform(-900, -820),
            S.ORAL_CONTRAST: rng.uniform(200, 800),
            S.FAECES: rng.uniform(-120, 40),
            S.CALCIFICATION: rng.uniform(300, 900),
            S.GALLBLADDER: rng.uniform(0, 20),
            S.BLADDER: rng.uniform(0, 15),
        }
        self.hu[S.TRABECULAR] = max(self.hu[S.TRABECULAR], 70.0)
        if con == "none":
            self.hu.update({S.LIVER: rng.uniform(50, 65), S.SPLEEN: rng.uniform(40, 55),
                            S.KIDNEY_CORTEX: rng.uniform(30, 40), S.KIDNEY_MEDULLA: rng.uniform(25, 35),
                            S.AORTA: rng.uniform(35, 50), S.IVC: rng.uniform(35, 50),
                            S.BOWEL_WALL: rng.uniform(30, 50), S.HEART: rng.uniform(35, 50),
                            S.PANCREAS: rng.uniform(35, 50), S.STOMACH: rng.uniform(30, 50)})
        elif con == "arterial":
            self.hu.update({S.LIVER: rng.uniform(60, 85), S.SPLEEN: rng.uniform(90, 140),
                            S.KIDNEY_CORTEX: rng.uniform(150, 220), S.KIDNEY_MEDULLA: rng.uniform(60, 100),
                            S.AORTA: rng.uniform(200, 400), S.IVC: rng.uniform(60, 110),
                            S.BOWEL_WALL: rng.uniform(80, 120), S.HEART: rng.uniform(200, 350),
                            S.PANCREAS: rng.uniform(90, 130), S.STOMACH: rng.uniform(80, 120)})
        else:
            self.hu.update({S.LIVER: rng.uniform(100, 130), S.SPLEEN: rng.uniform(110, 130),
                            S.KIDNEY_CORTEX: rng.uniform(150, 200), S.KIDNEY_MEDULLA: rng.uniform(140, 190),
                            S.AORTA: rng.uniform(130, 180), S.IVC: rng.uniform(120, 170),
                            S.BOWEL_WALL: rng.uniform(70, 110), S.HEART: rng.uniform(130, 180),
                            S.PANCREAS: rng.uniform(80, 120), S.STOMACH: rng.uniform(70, 100)})
        self.hu[S.VESSEL] = self.hu[S.AORTA] * 0.8 + 10
        self.hu[S.RENAL_SINUS_FAT] = self.hu[S.VAT] + 5
        # ---- shape randomness (smooth in s)
        self.body_knots = Knots(rng, 8, 0.035)
        # per-muscle / per-organ shape harmonics, left and right drawn separately and varying
        # smoothly along the spine (Knots): psoas, erector spinae, QL, kidney
        self.shape_knots = {name: [Knots(rng, 6, amp, step=2.0) for _ in range(2)]
                            for name, amp in (("psoas", 0.07), ("es", 0.06), ("ql", 0.1), ("kidney", 0.05))}
        self.sat_knots = Knots(rng, 6, 0.12)
        self.wall_knots = Knots(rng, 4, 0.12)
        self.sizes = rng.normal(1.0, 0.08, size=32)
        self.p_ant = rng.uniform(2.0, 2.5)
        self.p_post = rng.uniform(2.6, 4.0)
        self.sat_post = rng.uniform(0.6, 1.15)
        self.sat_ant = rng.uniform(0.9, 1.4) * (1.1 if not male else 1.0)
        self.rectus_w = rng.uniform(55, 80) * (0.9 if not male else 1.0)
        self.linea_alba = rng.uniform(2.0, 10.0) + (rng.uniform(0, 25) if rng.random() < 0.1 else 0.0)
        self.fat_planes = rng.uniform(0.4, 1.6) * (1.0 + 2.0 * p.imat_fraction)
        self.liver_tip_s = rng.uniform(1.8, 3.4)
        self.lung_s = rng.uniform(0.0, 0.8)
        self.umbilicus_s = rng.uniform(3.2, 4.3)
        self.umbilicus_w = rng.uniform(4.0, 9.0)
        self.liver_dome_s = rng.uniform(-3.5, -2.0)
        self.kidney_l = (rng.uniform(-1.0, -0.4), rng.uniform(2.6, 3.4))
        self.kidney_r = (self.kidney_l[0] + rng.uniform(0.1, 0.7), self.kidney_l[1] + rng.uniform(0.1, 0.6))
        self.crest_s = self.spine.n_lumbar - 1 + rng.uniform(0.3, 0.95)
        self.aorta_r = rng.uniform(9, 12) * (1.0 + 0.004 * max(p.age_years - 50, 0))
        self.aorta_calc = p.age_years > 55 and rng.random() < 0.6
        self.bifurcation_s = self.spine.n_lumbar - 1 + rng.uniform(-0.3, 0.4)
        self.gallbladder = rng.random() < 0.5
        self.arm_y = rng.uniform(-0.25, 0.35)
        self.arm_gap = rng.uniform(-2, 40)
        self.arm_r = rng.uniform(38, 52) * (1.0 + 0.012 * p.sat_mm)
        self.table_r = rng.uniform(380, 900) if rng.random() < 0.8 else rng.uniform(2000, 6000)
        self.pad_mm = rng.uniform(0, 45) if rng.random() < 0.5 else 0.0
        self.table_w = rng.uniform(440, 520)
        self.blanket_gap = rng.uniform(0, 15)
        self.blanket_t = rng.uniform(3, 15)
        self.blanket_folds = float(rng.integers(3, 9))
        self.blanket_phase = rng.uniform(0, 2 * PI)
        self.cupping_hu = rng.uniform(0, 6)
        self.noise_body_ratio = rng.uniform(0.4, 0.9)
        self.noise_lowfreq = rng.uniform(0.1, 0.35)
        self.paraspinal_fat = float(np.clip(0.004 * (p.age_years - 35) + 0.5 * p.imat_fraction
                                            + rng.normal(0, 0.08), 0.0, 0.45))
        # photon starvation in wide bodies: horizontal (lateral) noise streaks
        self.noise_streak = float(np.clip((p.body_lateral_mm - 360.0) / 300.0, 0.0, 0.25) * rng.uniform(0.5, 1.0))
        if p.arms == "beside":  # arms down add bone and tissue to every lateral projection
            self.noise_streak = min(self.noise_streak + rng.uniform(0.05, 0.2), 0.35)
        # instrumented segment: always includes L3 (the level sarcoscope measures)
        self.metal_level = rng.uniform(2.6, 3.4)
        self.metal_half_span = rng.uniform(0.9, 1.8)
        # ---- bowel loops in 3-D: (angle, radial fraction, s centre, s half-length, radius mm, kind)
        self._draw_organs(np.random.default_rng([params.seed, 13]))
        self.loops = self._draw_loops(rng)

    def _draw_organs(self, rng: np.random.Generator) -> None:
        """Kidney phase, size and variants; spleen and posterior liver extent (own rng stream).

        The renal phase follows the case's contrast phase: none → unenhanced (parenchyma
        30–45 HU, inside the muscle window), arterial → corticomedullary (cortex 150–250,
        medulla 60–110), portal → nephrographic (homogeneous 120–200), a late
        corticomedullary look (medulla 80–140) or excretory (parenchyma 120–180, collecting
        system 300–1500 HU, vessels washing out). Kidney vs muscle must be learnt from shape.
        """
        con, H = self.p.contrast, self.hu
        if con == "none":
            self.renal_phase = "unenhanced"
            cortex = rng.uniform(30, 45)
            medulla = cortex - rng.uniform(0, 8)
        elif con == "arterial":
            self.renal_phase = "corticomedullary"
            cortex, medulla = rng.uniform(150, 250), rng.uniform(60, 110)
        else:
            u = rng.random()
            if u < 0.55:
                self.renal_phase = "nephrographic"
                cortex = rng.uniform(120, 200)
                medulla = cortex - rng.uniform(0, 25)
            elif u < 0.8:
                self.renal_phase = "corticomedullary"
                cortex, medulla = rng.uniform(150, 220), rng.uniform(80, 140)
            else:
                self.renal_phase = "excretory"
                cortex = rng.uniform(120, 180)
                medulla = cortex + rng.uniform(-10, 40)
                H[S.AORTA] = rng.uniform(100, 150)
                H[S.IVC] = H[S.AORTA] - rng.uniform(0, 15)
                H[S.VESSEL] = H[S.AORTA] * 0.8 + 10
        H[S.KIDNEY_CORTEX], H[S.KIDNEY_MEDULLA] = cortex, medulla
        # collecting system / renal pelvis / ureter: urine, or dense excreted contrast
        self.urine_hu = rng.uniform(300, 1500) if self.renal_phase == "excretory" else H[S.URINE]
        # per kidney (left, right): present (nephrectomy), size (atrophy), cysts (s, angle, frac, r_mm, HU)
        absent = rng.random() < 0.04
        absent_side = 1 if rng.random() < 0.5 else -1
        self.kidney_var = {}
        for side, (k0, k1) in ((1, self.kidney_l), (-1, self.kidney_r)):
            scale = rng.uniform(0.55, 0.8) if rng.random() < 0.07 else float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.2))
            cysts = []
            for _ in range(int(rng.random() < 0.22) + int(rng.random() < 0.08)):
                cysts.append((rng.uniform(k0 + 0.15, k1 - 0.15), rng.uniform(-PI, PI), rng.uniform(0.3, 1.0),
                              rng.uniform(4.0, 18.0), rng.uniform(0, 20)))
            self.kidney_var[side] = (not (absent and side == absent_side), scale, cysts)
        # spleen: top at T9–T11, inferior tip L1–L2 (splenomegaly: L3 and below)
        big = rng.random() < 0.12
        self.spleen_s = (rng.uniform(-3.2, -1.5), rng.uniform(2.4, 3.8) if big else rng.uniform(0.3, 1.7))
        self.spleen_t = rng.uniform(55, 80) if big else rng.uniform(30, 52)
        self.spleen_span = rng.uniform(0.55, 0.85) * (1.2 if big else 1.0)
        self.spleen_ang = rng.uniform(0.55, 0.95)
        self.spleen_zebra = (rng.uniform(25, 45), rng.uniform(14, 26), rng.uniform(0, 2 * PI))
        sp = {"none": (40, 60), "arterial": (90, 140), "portal": (100, 140)}[con]
        H[S.SPLEEN] = rng.uniform(*sp) if self.renal_phase != "excretory" else rng.uniform(90, 120)
        # liver: posterior right lobe against the posterior wall / diaphragm down to L1–L2
        self.liver_post = (rng.uniform(0.8, 2.4), rng.uniform(28, 60), rng.uniform(2.05, 2.45))

    def _wall_crescent(self, cv: Canvas, geo: tuple, th_c: float, half: float, thick_mm: float,
                       value, sid: int, zebra: tuple | None = None) -> None:
        """Paint an organ lying against the inside of the wall (spleen, posterior liver).

        ``geo`` = (rs, cs, theta, r, R_inner) of the body window; the organ fills the depth
        0…thick(θ) under the inner wall contour for |θ − θc| < half, tapering at both ends.
        Never over lung (the costophrenic recess stays behind it).
        """
        rs, cs, theta, r, r_in = geo
        px = cv.grid.px
        dth = theta - th_c
        dth = np.where(dth > PI, dth - 2 * PI, np.where(dth < -PI, dth + 2 * PI, dth))
        ii = np.nonzero((np.abs(dth) < half) & (r > r_in - thick_mm - 2 * px))
        if ii[0].size == 0:
            return
        depth = r_in[ii] - r[ii]
        tt = thick_mm * np.cos(HALF_PI * dth[ii] / half) ** 0.6
        m = np.clip(depth / px + 0.5, 0, 1) * np.clip((tt - depth) / px + 0.5, 0, 1)
        full = np.zeros(theta.shape, dtype=np.float32)
        full[ii] = m
        if zebra is not None:  # arterial-phase spleen: arciform bands of enhancement
            amp, lam, ph = zebra
            val = np.full(theta.shape, value, dtype=np.float32)
            arc = theta[ii] * r[ii]
            val[ii] = value + amp * np.sin(2 * PI * (depth + 0.35 * lam * np.sin(arc / lam + ph)) / lam
                                           + 0.8 * np.sin(arc / (0.6 * lam) - ph))
            value = val
        cv.paint((rs, cs, full), value, sid, where=cv.sid[rs, cs] != S.LUNG)

    # ------------------------------------------------------------------ geometry
    def _draw_loops(self, rng: np.random.Generator) -> list[tuple]:
        p = self.p
        loops: list[tuple] = []
        n_l = self.spine.n_lumbar
        free = 1.0 - p.vat_fraction
        # colon: ascending (right), descending (left), transverse (anterior), sigmoid (pelvis)
        # angles from +x (patient left), y posterior: ascending colon in the right paracolic
        # gutter, descending in the left, both a little posterior of the mid-coronal plane
        loops.append(("colon", PI - rng.uniform(0.05, 0.45), rng.uniform(0.65, 0.8), (1.5, n_l + 1.0), rng.uniform(17, 28)))
        loops.append(("colon", rng.uniform(0.0, 0.4), rng.uniform(0.68, 0.82), (0.2, n_l + 0.6), rng.uniform(13, 22)))
        ts = rng.uniform(1.3, 3.2)
        loops.append(("colon", -HALF_PI + rng.normal(0, 0.3), 0.62, (ts - 0.7, ts + 0.7), rng.uniform(15, 25)))
        loops.append(("colon", -0.9, 0.5, (n_l + 0.5, n_l + 3.0), rng.uniform(14, 22)))
        # enough loops that about (1 - vat_fraction) of the free cavity holds bowel
        n_small = int(40 + 300 * free**1.2)
        ang = rng.uniform(-PI, PI, n_small)
        # keep small bowel out of the retroperitoneum (posterior sector)
        ang = np.where(np.abs(ang - HALF_PI) < 0.9, -ang, ang)
        rho = np.sqrt(rng.uniform(0.0, 0.72, n_small))
        sc = rng.uniform(0.3, n_l + 2.5, n_small)
        lo = sc - rng.uniform(0.3, 0.9, n_small)
        hi = sc + rng.uniform(0.3, 0.9, n_small)
        rad = rng.uniform(8, 15, n_small)
        for i in range(n_small):
            loops.append(("small", float(ang[i]), float(rho[i]), (float(lo[i]), float(hi[i])), float(rad[i])))
        out = []
        n = len(loops)
        u = rng.random(n)
        u2 = rng.random(n)
        seeds = rng.integers(0, 2**31, size=n)
        hls = rng.uniform(0.25, 0.6, size=n)
        for i, (kind, ang, rho, (s0, s1), r) in enumerate(loops):
            if kind == "colon":
                content = "faeces" if u[i] < 0.55 else ("gas" if u[i] < 0.85 else "fluid")
            else:
                content = "gas" if u[i] < 0.2 else ("fluid" if u[i] < 0.75 else "collapsed")
            if p.oral_contrast and u2[i] < 0.6 and content != "gas":
                content = "contrast"
            out.append((kind, ang, rho, s0, s1, r, content, int(seeds[i]), float(hls[i])))
        # bowel directly against muscle, no fat plane (more often in thin patients): ascending /
        # descending colon in the paracolic gutters against the lateral wall / QL, small-bowel
        # loops against the anterior / lateral wall (rho = 1 means "touching the wall"), and
        # duodenum / jejunum (left) or duodenum / caecum (right) on the anterior psoas
        brng = np.random.default_rng([p.seed, 17])
        p_touch = 0.3 + 0.6 * free
        for i, lp in enumerate(out):
            if (i in (0, 1) and brng.random() < p_touch) or (lp[0] == "small" and brng.random() < 0.25 * p_touch):
                out[i] = lp[:2] + (1.0,) + lp[3:]
        for side, prob, (lo_s, hi_s) in ((1, 0.35 + 0.5 * free, (1.2, n_l + 0.3)), (-1, 0.2 + 0.4 * free, (1.3, 3.5))):
            for _ in range(int(brng.random() < prob) + int(brng.random() < 0.4 * prob)):
                sc_ = brng.uniform(lo_s, hi_s)
                u_ = brng.random()
                content = "fluid" if u_ < 0.5 else ("collapsed" if u_ < 0.9 else "gas")
                if p.oral_contrast and brng.random() < 0.5 and content != "gas":
                    content = "contrast"
                out.append(("psoas", float(side), brng.uniform(-0.3, 1.1), sc_ - brng.uniform(0.4, 0.9),
                            sc_ + brng.uniform(0.4, 0.9), brng.uniform(9, 15), content,
                            int(brng.integers(0, 2**31)), 0.4))
        return out

    def frame(self, z_mm: float) -> Frame:
        """Outline, fascia and wall contours at height z."""
        p = self.p
        s = self.spine.level_coordinate(z_mm)
        n_l = self.spine.n_lumbar
        pel = s - (n_l - 0.5)  # > 0 in the pelvis
        A = p.body_lateral_mm / 2.0
        B = p.body_ap_mm / 2.0
        # Outline changes with level: ribcage above, hips below (more in women).
        fa = 1.0 + 0.015 * min(s - 3.0, 0.0) + (0.07 if not self.male else 0.04) * max(pel, 0.0)
        fb = 1.0 + 0.012 * max(-s, 0.0) - 0.03 * max(pel, 0.0)
        if s < 0:
            fb = 1.0 + 0.02 * min(-s, 6.0) * (0.3 + 0.7 * (1.0 - p.vat_fraction))
        a = A * fa
        b = B * fb
        kb = self.body_knots(s)
        harm = ((2, kb[0], kb[1]), (3, kb[2] * 0.6, kb[3] * 0.6), (4, kb[4] * 0.4, kb[5] * 0.4),
                (5, kb[6] * 0.3, kb[7] * 0.3))
        theta = np.linspace(-PI, PI, PolarTable.N, endpoint=False)
        c, sn = np.cos(theta), np.sin(theta)
        pe = np.where(sn > 0, self.p_post, self.p_ant)
        r_body = (np.abs(c / a) ** pe + np.abs(sn / b) ** pe) ** (-1.0 / pe)
        f = np.ones_like(theta)
        for k, ca, cb in harm:
            f += ca * np.cos(k * theta) + cb * np.sin(k * theta)
        r_body = r_body * f
        skin = 1.5 + 1.5 * (self.sizes[0] - 0.84) / 0.32
        skin = float(np.clip(skin, 1.2, 3.2))
        # SAT thickness around the body.
        ks = self.sat_knots(s)
        sat_s = p.sat_mm * (1.0 + (0.25 if not self.male else 0.08) * max(pel, 0.0) + 0.04 * min(s, 0.0))
        prof = (1.0 + (self.sat_ant - 1.0) * np.clip(-sn, 0, 1) + (self.sat_post - 1.0) * np.clip(sn, 0, 1)
                + ks[0] * np.cos(2 * theta) + ks[1] * np.sin(2 * theta) + ks[2] * np.cos(3 * theta)
                + ks[3] * np.sin(3 * theta) + ks[4] * np.cos(theta) + ks[5] * np.sin(theta) * 0.5)
        sat = np.maximum(sat_s * np.clip(prof, 0.35, 2.0), 1.2)
        sat = np.minimum(sat, r_body * 0.6)
        r_fascia = r_body - skin - sat
        # umbilicus: a skin notch into the anterior SAT at about L3-L4 (not in thin patients)
        du = s - self.umbilicus_s
        if abs(du) < 0.35 and p.sat_mm > 8:
            depth = min(0.6 * float(sat[np.argmin(np.abs(theta + HALF_PI))]), 18.0) * (1.0 - abs(du) / 0.35)
            arc0 = _wrap(theta + HALF_PI) * r_body
            notch = depth * np.exp(-((arc0 / self.umbilicus_w) ** 2))
            r_body = r_body - notch
        # Muscle wall thickness by angle from the anterior midline (arc length on the fascia).
        ms = p.muscle_scale
        kw = self.wall_knots(s)
        dth = np.abs(_wrap(theta + HALF_PI))  # 0 anterior, pi posterior
        arc = dth * r_fascia
        rect_t = (12.0 if self.male else 9.5) * ms * (1 + kw[0]) * (0.75 if s < 0 else 1.0)
        lat_t = (14.0 if self.male else 11.0) * ms * (1 + kw[1]) * (1.0 - 0.3 * np.clip(pel, 0, 1))
        post_t = 4.0 * ms * (1 + kw[2])
        la = self.linea_alba / 2.0
        rw = self.rectus_w * (0.8 + 0.2 * ms)
        lat_ang = dth - (la + rw + 12.0) / np.maximum(r_fascia, 50.0)
        wall = np.where(arc < la, 1.2, 0.0)
        in_rect = (arc >= la) & (arc < la + rw)
        edge = np.clip(np.minimum(arc - la, la + rw - arc) / 12.0, 0.25, 1.0)
        wall = np.where(in_rect, rect_t * np.sqrt(edge), wall)
        semil = (arc >= la + rw) & (arc < la + rw + 12.0)
        wall = np.where(semil, 1.5, wall)
        lateral = arc >= la + rw + 12.0
        # lateral wall tapers from full thickness to latissimus thickness posteriorly
        w_lat = lat_t * np.clip(np.sin(np.clip(lat_ang + 0.25, 0, PI)) * 1.6, 0.35, 1.0)
        w_lat = np.where(dth > 0.72 * PI, post_t, np.maximum(w_lat, post_t))
        wall = np.where(lateral, w_lat, wall)
        if s < 0.3:  # chest wall
            cw = 9.0 * ms * (1 + kw[3])
            wall = np.where(lateral, np.maximum(wall * 0.6, cw * 0.8), wall)
        wall = np.maximum(wall, 1.0)
        r_inner = r_fascia - wall
        # The supine back rests on the table: y of the back skin is fixed at +B.
        yc = B - float(r_body[np.argmin(np.abs(theta - HALF_PI))])
        vb_w, vb_d = self._vb_size(s)
        post_len = vb_d / 2 + (58.0 if s > 0.5 else 48.0) * self.spine_params.size_scale
        gap = max(1.5 + 8.0 * (ms - 0.7) + 0.5 * self.spine.lordosis_mm(s), 0.5)
        y_back_fascia = yc + float(r_fascia[np.argmin(np.abs(theta - HALF_PI))])
        y_vb = y_back_fascia - gap - post_len
        inner_a = float(r_inner[np.argmin(np.abs(theta))])
        inner_b = float(r_inner[np.argmin(np.abs(theta + HALF_PI))])
        return Frame(z_mm, s, yc, a, b, skin, PolarTable(r_body), PolarTable(r_fascia), PolarTable(r_inner),
                     PolarTable(wall), y_vb, vb_w, vb_d, inner_a, inner_b)

    def _harm(self, name: str, side: int, s: float) -> tuple:
        k = self.shape_knots[name][0 if side < 0 else 1](s)
        # mirror the sine terms so that the same coefficients mean the same anatomy on both sides
        return ((2, float(k[0]), side * float(k[1])), (3, float(k[2]), side * float(k[3])),
                (4, float(k[4]) * 0.6, side * float(k[5]) * 0.6))

    def _vb_size(self, s: float) -> tuple[float, float]:
        sc = self.spine_params.size_scale
        if s >= 0.5:
            return (45.0 + 1.5 * min(s, 5.0)) * sc, (31.0 + 0.8 * min(s, 5.0)) * sc
        frac = float(np.clip(1.0 + s / 11.0, 0.0, 1.0))
        return (26.0 + 14.0 * frac) * sc, (18.0 + 10.0 * frac) * sc

    # ------------------------------------------------------------------ painting
    def paint_soft(self, cv: Canvas, fr: Frame, rng: np.random.Generator) -> dict:
        """Everything but bone: body, fat, muscles, organs, bowel, vessels, table, arms.

        Returns helpers the renderer needs (body coverage for the noise map, metal centres).
        """
        p, g, H = self.p, cv.grid, self.hu
        px = g.px
        s = fr.s
        n_l = self.spine.n_lumbar
        pel = s - (n_l - 0.5)
        ms = p.muscle_scale
        # ---- table and pads (under the back, y > B)
        B = p.body_ap_mm / 2.0
        if p.table:
            y_top = B + self.pad_mm + 2.0
            R = self.table_r
            tb = Blob(0.0, y_top + R, R + 0.0, R + 0.0)
            hw = self.table_w / 2
            win = g.window(-hw, hw, y_top - 5, y_top + 60)
            if win is not None:
                rs, cs, x, y = win
                r = np.hypot(x, y - (y_top + R))
                d_top = R - r  # >0 below the top surface
                side = _soft(hw - np.abs(x), px)
                shell = _soft(d_top, px) * _soft(4.0 - d_top, px)
                foam = _soft(d_top - 4.0, px) * _soft(30.0 - d_top, px)
                bottom = _soft(d_top - 30.0, px) * _soft(34.0 - d_top, px)
                cv.paint((rs, cs, (foam * side).astype(np.float32)), -850.0, S.TABLE)
                cv.paint((rs, cs, ((shell + bottom) * side).astype(np.float32)), H[S.TABLE] + 150.0, S.TABLE)
            del tb
            if self.pad_mm > 0:
                win = g.window(-hw * 0.9, hw * 0.9, B - 40, y_top)
                if win is not None:
                    rs, cs, x, y = win
                    m = _soft(y - (B - 30), px) * _soft(y_top - 2 - y, px) * _soft(hw * 0.85 - np.abs(x), px)
                    cv.paint((rs, cs, m.astype(np.float32)), H[S.PAD], S.PAD)
        # ---- blanket over the front of the body (folds: thickness varies with angle)
        if p.blanket:
            th_ = np.linspace(-PI, PI, PolarTable.N + 1)
            ex_ = float(np.max(np.abs(fr.body.values * np.cos(th_)))) + self.blanket_gap + 25.0
            ey_ = float(np.max(np.abs(fr.body.values * np.sin(th_)))) + self.blanket_gap + 25.0
            win = g.window(-ex_, ex_, fr.yc - ey_, fr.yc + 0.3 * ey_)
            if win is not None:
                rs_b, cs_b, xb, yb = win
                dxb = xb + 0.0 * yb
                dyb = (yb - fr.yc) + 0.0 * xb
                thb = np.arctan2(dyb, dxb)
                rb = np.hypot(dxb, dyb)
                Rb = fr.body.at(thb)
                fold = 1.0 + 0.5 * np.sin(thb * self.blanket_folds + self.blanket_phase)
                inner = Rb + self.blanket_gap * (0.3 + 0.7 * fold)
                outer = inner + self.blanket_t * fold
                mb = _soft(rb - inner, px) * _soft(outer - rb, px) * (np.sin(thb) < 0.15)
                cv.paint((rs_b, cs_b, mb.astype(np.float32)), H[S.PAD] + 250.0, S.PAD)
        # ---- arms beside the body
        if p.arms == "beside":
            for side in (-1, 1):
                ax = side * (fr.a + self.arm_gap + self.arm_r)
                ay = fr.yc + self.arm_y * fr.b
                arm = Blob(ax, ay, self.arm_r, self.arm_r * 0.9, 0.3 * side, 2.0, ((2, 0.05, 0.02), (3, 0.02, 0.03)))
                cv.paint(blob_mask(g, arm), H[S.ARM_SKIN], S.ARM_SKIN)
                cv.paint(blob_mask(g, arm, 2.0), H[S.ARM_FAT], S.ARM_FAT)
                mus = Blob(ax, ay, self.arm_r * 0.62, self.arm_r * 0.55, 0.3 * side)
                cv.paint(blob_mask(g, mus), H[S.ARM_MUSCLE], S.ARM_MUSCLE)
                bone = Blob(ax + side * 4, ay + 3, 11.0, 10.0)
                cv.paint(blob_mask(g, bone), H[S.ARM_BONE], S.ARM_BONE)
                cv.paint(blob_mask(g, bone, 3.0), H[S.TRABECULAR] + 100, S.ARM_BONE)
        # ---- body: polar coordinates around (0, yc) inside the body's bounding box
        th_ = np.linspace(-PI, PI, PolarTable.N + 1)
        ex = float(np.max(np.abs(fr.body.values * np.cos(th_)))) + 2.0
        ey = float(np.max(np.abs(fr.body.values * np.sin(th_)))) + 2.0
        win = g.window(-ex, ex, fr.yc - ey, fr.yc + ey)
        if win is None:
            return {"body": None}
        rs, cs, x, y = win
        dx = x + 0.0 * y
        dy = (y - fr.yc) + 0.0 * x
        theta = np.arctan2(dy, dx)
        r = np.hypot(dx, dy)
        t = (theta + PI) * (PolarTable.N / (2 * PI))
        idx = np.clip(t.astype(np.int32), 0, PolarTable.N - 1)
        frac = (t - idx).astype(np.float32)
        R_body = fr.body(idx, frac)
        R_fas = fr.fascia(idx, frac)
        W = fr.wall(idx, frac)
        inv = 1.0 / px
        m_body = np.clip((R_body - r) * inv + 0.5, 0, 1)
        m_fas = np.clip((R_fas - r) * inv + 0.5, 0, 1)
        m_inner = np.clip((R_fas - W - r) * inv + 0.5, 0, 1)
        cv.paint((rs, cs, m_body), H[S.SKIN], S.SKIN)
        cv.paint((rs, cs, np.clip((R_body - fr.skin - r) * inv + 0.5, 0, 1)), H[S.SAT], S.SAT)
        # Scarpa fascia: a thin line within anterior SAT when SAT is thick
        if p.sat_mm > 12:
            ii = np.nonzero((m_body > 0) & (m_fas < 1) & (theta < -0.3))
            rb, Rb, Rf = r[ii], R_body[ii], R_fas[ii]
            sat_here = Rb - fr.skin - Rf
            line = 1.0 - np.clip(np.abs(Rb - rb - fr.skin - 0.45 * sat_here) * inv * 1.3, 0, 1)
            line *= np.clip(-np.sin(theta[ii]) * 2.0, 0, 1) * (sat_here > 10)
            h = cv.hu[rs, cs]
            h[ii] += 0.6 * line * (H[S.FASCIA] - h[ii])
        # fibrous septa in the subcutaneous fat: short thin strands, roughly parallel to the skin
        if p.sat_mm > 10:
            sat_only = (cv.sid == S.SAT).astype(np.float32)
            for _ in range(int(rng.integers(4, 14))):
                th = rng.uniform(-PI, PI)
                rb_ = float(fr.body.at(np.array([th]))[0])
                rf_ = float(fr.fascia.at(np.array([th]))[0])
                rr_ = rng.uniform(rf_ + 2.0, rb_ - fr.skin - 1.0) if rb_ - fr.skin - rf_ > 4 else None
                if rr_ is None:
                    continue
                dth_ = rng.uniform(0.05, 0.2) * (1 if rng.random() < 0.5 else -1)
                x1, y1 = rr_ * math.cos(th), fr.yc + rr_ * math.sin(th)
                r2 = rr_ + rng.normal(0, 3.0)
                x2, y2 = r2 * math.cos(th + dth_), fr.yc + r2 * math.sin(th + dth_)
                reg = capsule_mask(g, x1, y1, x2, y2, rng.uniform(0.3, 0.7))
                if reg is not None:
                    rs_, cs_, m_ = reg
                    h_ = cv.hu[rs_, cs_]
                    h_ += 0.6 * m_ * sat_only[rs_, cs_] * (H[S.FASCIA] - h_)
        cv.paint((rs, cs, m_fas), H[S.VAT], S.VAT)
        # wall band and its muscle types (computed on band pixels only)
        band_full = m_fas * (1.0 - m_inner)
        ii = np.nonzero(band_full > 0)
        band = band_full[ii]
        th_b, R_b, W_b, r_b = theta[ii], R_fas[ii], W[ii], r[ii]
        a_ = th_b + HALF_PI
        a_ = np.where(a_ > PI, a_ - 2 * PI, a_)
        dth = np.abs(a_)
        arc = dth * R_b
        la = self.linea_alba / 2.0
        rw = self.rectus_w * (0.8 + 0.2 * ms)
        sid_band = np.full(band.shape, S.WALL, dtype=np.uint8)
        sid_band[arc < la + rw] = S.RECTUS
        sid_band[arc < la] = S.FASCIA
        sid_band[(arc >= la + rw) & (arc < la + rw + 12.0)] = S.FASCIA
        sid_band[dth > 0.72 * PI] = S.LATISSIMUS
        if s < 0.3:
            sid_band[sid_band == S.WALL] = S.CHEST_WALL
        hu_band = np.where(sid_band == S.FASCIA, H[S.FASCIA], H[S.WALL]).astype(np.float32)
        # intermuscular fat planes (EO | IO | TA) in the lateral wall
        if s >= 0.3:
            depth = R_b - r_b
            lat = (sid_band == S.WALL) & (W_b > 6.0)
            for q in (0.4, 0.74):
                plane = 1.0 - np.clip(np.abs(depth - q * W_b) / (0.5 * self.fat_planes + 0.5 * px), 0, 1)
                plane *= lat
                hu_band += plane * (H[S.IMAT] - hu_band)
        h = cv.hu[rs, cs]
        h[ii] += band * (hu_band - h[ii])
        sb = cv.sid[rs, cs]
        sel = band >= 0.5
        sid_band = np.where(sel & (hu_band < -30) & (sid_band == S.WALL), np.uint8(S.IMAT), sid_band)
        sb_ii = sb[ii]
        sb_ii[sel] = sid_band[sel]
        sb[ii] = sb_ii
        inner_full = np.zeros((g.rows, g.cols), dtype=np.float32)
        inner_full[rs, cs] = m_inner
        fascia_full = np.zeros((g.rows, g.cols), dtype=np.float32)
        fascia_full[rs, cs] = m_fas
        body_full = np.zeros((g.rows, g.cols), dtype=np.float32)
        body_full[rs, cs] = m_body

        def inside(reg, full=inner_full):
            if reg is None:
                return None
            rs_, cs_, m_ = reg
            return rs_, cs_, m_ * full[rs_, cs_]

        sz = self.sizes
        y_vb, vb_w, vb_d = fr.y_vb, fr.vb_w, fr.vb_d
        y_post = y_vb + vb_d / 2  # posterior wall of the vertebral body
        y_tp = y_post + 9.0
        # ---- lungs and heart (chest levels)
        if s < self.lung_s:
            f_l = float(np.clip((self.lung_s - s) / 3.0, 0.0, 1.0))
            for side in (-1, 1):
                if f_l < 0.3:  # posterior costophrenic recess: a thin crescent
                    th = HALF_PI - side * (0.55 + 0.25 * sz[1])
                    x0, y0 = fr.point(th, fr.inner, 0.98)
                    lung = Blob(x0, y0, 10.0 + 80 * f_l, 2.5 + 30 * f_l, th + HALF_PI, 2.0, ((2, 0.05, 0.0),))
                else:
                    lx = side * fr.inner_a * (0.42 + 0.05 * sz[2])
                    lung = Blob(lx, fr.yc + 0.12 * fr.inner_b, fr.inner_a * 0.48 * f_l + 10,
                                fr.inner_b * 0.82 * f_l + 8, 0.0, 2.3, ((2, 0.06, 0.02), (3, 0.03, 0.04)))
                reg = inside(blob_mask(g, lung))
                if reg is not None:
                    rs_, cs_, m_ = reg
                    cv.paint(reg, H[S.LUNG] + rng.normal(0, 25, size=m_.shape).astype(np.float32) * 0.5, S.LUNG)
            if s < -4.2:
                f_h = float(np.clip((-4.2 - s) / 2.0, 0.2, 1.0))
                heart = Blob(fr.inner_a * 0.15, fr.yc - fr.inner_b * 0.3, fr.inner_a * 0.42 * f_h,
                             fr.inner_b * 0.5 * f_h, -0.5, 2.0, ((2, 0.05, 0.05),))
                cv.paint(inside(blob_mask(g, heart)), H[S.HEART], S.HEART)
        # ---- bowel loops (painted before organs so organs win overlaps)
        if 0.0 < s < n_l + 3.2:
            self._paint_bowel(cv, fr, rng, inside)
        # ---- ascites: fluid along the inside of the anterior/lateral wall and in the flanks
        if p.ascites > 0 and 0.0 < s < n_l + 2:
            tA = 5.0 + 45.0 * p.ascites
            depth_in = (R_fas - W) - r
            asc = np.clip(depth_in * inv + 0.5, 0, 1) * np.clip((tA * (0.5 + 0.5 * np.abs(np.cos(theta))) - depth_in) * inv, 0, 1)
            asc *= np.sin(theta) < 0.6
            cv.paint((rs, cs, asc.astype(np.float32)), H[S.ASCITES], S.ASCITES)
        # ---- liver, gallbladder, spleen, stomach, pancreas
        ai, bi = fr.inner_a, fr.inner_b
        if s < self.liver_tip_s:
            # right lobe: fills the right upper quadrant, shrinking to an anterolateral tip;
            # left lobe crosses the midline anteriorly above T12; dome above s=-5.5
            f = float(np.clip((self.liver_tip_s - s) / (self.liver_tip_s + 0.5), 0.0, 1.0)) ** 0.8
            if s < self.liver_dome_s:
                f *= float(np.clip(1.0 - (self.liver_dome_s - s) / 1.5, 0.0, 1.0)) ** 0.5
            if f > 0.02:
                lx = -ai * (0.45 + 0.3 * (1.0 - f))
                ly = fr.yc + bi * (0.08 - 0.3 * (1.0 - f))
                liver = Blob(lx, ly, ai * (0.1 + 0.45 * f) * sz[3], bi * (0.18 + 0.62 * f) * sz[4], 0.35 - 0.2 * f,
                             2.3, ((2, 0.06 * sz[5], 0.04), (3, 0.05, 0.04 * sz[6])))
                cv.paint(inside(blob_mask(g, liver)), H[S.LIVER], S.LIVER)
                fl = float(np.clip((0.3 - s) / 3.0, 0.0, 1.0))
                if fl > 0.05:
                    left = Blob(ai * 0.05, fr.yc - bi * 0.5, ai * 0.45 * fl + 5, bi * 0.28 * fl + 4, -0.15, 2.0,
                                ((2, 0.08, 0.0), (3, 0.0, 0.05)))
                    cv.paint(inside(blob_mask(g, left)), H[S.LIVER], S.LIVER)
                if self.gallbladder and 0.3 < s < self.liver_tip_s - 0.3:
                    gb = Blob(lx + liver.rx * 0.5, ly - liver.ry * 0.55, 14.0, 11.0)
                    cv.paint(inside(blob_mask(g, gb)), H[S.GALLBLADDER], S.GALLBLADDER)
        geo = (rs, cs, theta, r, R_fas - W)
        lp0, lp_t, lp_ang = self.liver_post
        if self.liver_dome_s + 0.5 < s < lp0:
            # posterior right lobe (bare area) against the posterior wall and diaphragm
            f = float(np.clip((lp0 - s) / 1.5, 0.0, 1.0)) ** 0.7
            if f > 0.05:
                self._wall_crescent(cv, geo, lp_ang, 0.45 + 0.25 * f, lp_t * f, H[S.LIVER], S.LIVER)
        sp0, sp1 = self.spleen_s
        if sp0 < s < sp1:
            # spleen: a crescent against the posterolateral left wall / diaphragm, largest in its
            # upper third, its inferior tip smaller and more anterolateral
            t = (s - sp0) / (sp1 - sp0)
            f = math.sqrt(max(1.0 - (2 * t ** 0.75 - 1) ** 2, 0.0)) ** 0.6
            if f > 0.05:
                zeb = self.spleen_zebra if p.contrast == "arterial" else None
                self._wall_crescent(cv, geo, self.spleen_ang - 0.45 * t, self.spleen_span * (0.5 + 0.5 * f),
                                    self.spleen_t * f, H[S.SPLEEN], S.SPLEEN, zeb)
        if -4.0 < s < 1.2:
            f = float(np.clip((1.2 - s) / 2.5, 0.2, 1.0))
            st = Blob(ai * 0.3, fr.yc - bi * 0.35, ai * 0.3 * f, bi * 0.32 * f, -0.4, 2.0, ((2, 0.06, 0.04),))
            cv.paint(inside(blob_mask(g, st)), H[S.STOMACH], S.STOMACH)
            cv.paint(inside(blob_mask(g, st, 4.0)), H[S.GAS] if sz[8] > 1.0 else H[S.FLUID], S.GAS if sz[8] > 1.0 else S.FLUID)
        if 0.8 < s < 2.3:
            pa = Blob(0.0, y_vb - vb_d / 2 - 35, ai * 0.4, 11.0, 0.15, 2.0, ((2, 0.1, 0.05), (3, 0.05, 0.05)))
            cv.paint(inside(blob_mask(g, pa)), H[S.PANCREAS], S.PANCREAS)
        # ---- posterior muscles: erector spinae + multifidus, quadratus lumborum
        lvl = float(np.clip(0.65 + 0.1 * s, 0.55, 1.0)) if s < 3 else float(np.clip(1.0 - 0.06 * (s - 3), 0.5, 1.0))
        y_bf = fr.point(HALF_PI, fr.fascia)[1]
        for side in (-1, 1):
            rx = 33.0 * ms**0.6 * lvl * sz[9 + (side > 0)]
            if pel > 0.5:
                rx *= 0.8
            cy = 0.5 * (y_tp + y_bf) + 3
            ry = 0.5 * (y_bf - y_tp) + 7
            es = Blob(side * (1.0 + rx), cy, rx, ry, 0.0, 2.3, self._harm("es", side, s))
            cv.paint(inside(blob_mask(g, es), fascia_full), H[S.PARASPINAL], S.PARASPINAL)
            # multifidus separated by a thin intermuscular fat plane
            mf = Blob(side * (2.0 + 0.42 * rx), cy + 0.15 * ry, 0.42 * rx, 0.8 * ry, 0.0, 2.2)
            cv.paint(inside(blob_shell(g, mf, 0.3 + 0.4 * self.fat_planes), fascia_full), H[S.IMAT], S.IMAT)
            if s > 0.3 and pel < 1.2:
                tp = TP_LENGTH_MM.get(int(round(min(max(s, 1), 6))), 25.0) * self.spine_params.size_scale
                ql = Blob(side * (vb_w / 2 + tp * 0.8 + 14), y_tp + 2, 21.0 * ms**0.5 * min(1.0, 0.4 + 0.25 * s),
                          10.0 * ms**0.7, side * 0.45, 2.0, self._harm("ql", side, s))
                cv.paint(inside(blob_mask(g, ql)), H[S.QL], S.QL)
        # ---- kidneys: cortex, medulla (pyramids), sinus fat, collecting system, hilar vessels,
        # cysts; upper pole more posterior and medial; absent after nephrectomy, small if atrophic
        for side, (k0, k1) in ((1, self.kidney_l), (-1, self.kidney_r)):
            present, kscale, cysts = self.kidney_var[side]
            if present and k0 < s < k1:
                t = (s - k0) / (k1 - k0)
                f = math.sqrt(max(1.0 - (2 * t - 1) ** 2, 0.0)) ** 0.7
                kx = side * (vb_w / 2 + 40 * sz[12] + 10.0 * (t - 0.5))
                ky = y_vb + 2 + 10.0 * (0.5 - t)
                rkx, rky = (20.0 * f * sz[13] + 3) * kscale, (26.0 * f + 4) * kscale
                ang = side * 0.45
                kid = Blob(kx, ky, rkx, rky, ang, 2.0, self._harm("kidney", side, s))
                cv.paint(inside(blob_mask(g, kid)), H[S.KIDNEY_CORTEX], S.KIDNEY_CORTEX)
                ca, sa = math.cos(ang), math.sin(ang)
                if f > 0.4:
                    cv.paint(inside(blob_mask(g, kid, 4.5 * kscale)), H[S.KIDNEY_MEDULLA], S.KIDNEY_MEDULLA)
                    # columns of Bertin: cortex reaching in between the pyramids
                    for q in (-0.55, 0.0, 0.55):
                        ex_, ey_ = -side * 0.1 * rkx, q * rky
                        ox, oy = side * 0.9 * rkx, q * rky * 1.1
                        p0 = (kx + ex_ * ca - ey_ * sa, ky + ex_ * sa + ey_ * ca)
                        p1 = (kx + ox * ca - oy * sa, ky + ox * sa + oy * ca)
                        cv.paint(inside(capsule_mask(g, p0[0], p0[1], p1[0], p1[1], 2.2)), H[S.KIDNEY_CORTEX], S.KIDNEY_CORTEX)
                    if 0.25 < t < 0.8:
                        # sinus fat elongated along the kidney, reaching the medial hilum
                        hx, hy = kx - side * 0.45 * rkx * ca, ky - 0.1 * rky
                        sinus = Blob(hx, hy, 0.38 * rkx, 0.42 * rky, ang, 2.0, ((2, 0.1, 0.0), (3, 0.05, 0.0)))
                        cv.paint(inside(blob_mask(g, sinus)), H[S.RENAL_SINUS_FAT], S.RENAL_SINUS_FAT)
                        rpel = sinus.moved(dx=-side * 0.25 * rkx, scale=0.45)
                        cv.paint(inside(blob_mask(g, rpel)), self.urine_hu, S.URINE)
                        if self.renal_phase == "excretory":  # opacified calyces towards the pyramids
                            for q in (-0.4, 0.4):
                                cv.paint(inside(capsule_mask(g, rpel.cx, rpel.cy, hx + side * 0.5 * rkx * ca,
                                                             hy + q * rky, 1.6)), self.urine_hu * 0.8, S.URINE)
                        if 0.35 < t < 0.65:
                            # renal vein / artery from the hilum to the IVC (right) or aorta (left)
                            vy = y_vb - vb_d / 2 - self.aorta_r - 3
                            tx = -20.0 if side < 0 else 12.0 - self.aorta_r * 0.8
                            cv.paint(inside(capsule_mask(g, hx - side * 0.3 * rkx, hy, tx, vy + (0 if side < 0 else -6),
                                                         3.0 + 1.5 * (side < 0))), H[S.VESSEL], S.VESSEL)
                for cs_, ca_, cr_, crad, chu in cysts:
                    dz = (s - cs_) * 35.0
                    if abs(dz) < crad:
                        rr_ = math.sqrt(crad * crad - dz * dz)
                        ox, oy = cr_ * rkx * math.cos(ca_), cr_ * rky * math.sin(ca_)
                        cv.paint(inside(blob_mask(g, Blob(kx + ox * ca - oy * sa, ky + ox * sa + oy * ca, rr_, rr_))),
                                 chu, S.URINE)
        # ---- psoas (from T12/L1 down into the pelvis)
        if s > 0.4:
            for side in (-1, 1):
                ps = self._psoas_blob(fr, side)
                cv.paint(inside(blob_mask(g, ps)), H[S.PSOAS], S.PSOAS)
                k0, k1 = self.kidney_l if side > 0 else self.kidney_r
                if self.kidney_var[side][0] and k1 - 0.3 < s < n_l + 1.5:
                    # ureter: a small dot on the anterior surface of the psoas
                    ux, uy = ps.cx + side * 0.25 * ps.rx, ps.cy - ps.ry - 3.5
                    ur = 2.5 if self.renal_phase == "excretory" else 2.0
                    cv.paint(inside(blob_mask(g, Blob(ux, uy, ur + 1.0, ur + 1.0))), H[S.BOWEL_WALL] * 0.5 + 15, S.VESSEL)
                    cv.paint(inside(blob_mask(g, Blob(ux, uy, ur, ur))), self.urine_hu, S.URINE)
        # ---- aorta / iliac arteries, IVC / iliac veins, mesenteric vessels
        ay = y_vb - vb_d / 2 - self.aorta_r - 3
        if s < self.bifurcation_s:
            ao = Blob(12.0, ay, self.aorta_r, self.aorta_r * 0.97)
            cv.paint(inside(blob_mask(g, ao)), H[S.AORTA], S.AORTA)
            if self.aorta_calc:
                cal = Blob(12.0 + self.aorta_r * 0.85, ay + 3, 1.5, 2.5)
                cv.paint(inside(blob_mask(g, cal)), H[S.CALCIFICATION], S.CALCIFICATION)
            ivc = Blob(-20.0, ay + 3, 13.0, 9.0, 0.2)
            cv.paint(inside(blob_mask(g, ivc)), H[S.IVC], S.IVC)
        else:
            d = (s - self.bifurcation_s) * 22.0
            for side in (-1, 1):
                ia = Blob(side * (8 + d), ay + 4 + 0.3 * d, 6.5, 6.5)
                cv.paint(inside(blob_mask(g, ia)), H[S.AORTA], S.AORTA)
                iv = Blob(side * (4 + d * 0.9), ay + 13 + 0.3 * d, 8.0, 6.5)
                cv.paint(inside(blob_mask(g, iv)), H[S.IVC], S.IVC)
        if 0.5 < s < n_l + 1:
            # superior mesenteric artery / vein in front of the aorta, then mesenteric branches:
            # dots and short in-plane segments scattered through the mesenteric fat
            if s < n_l - 0.5:
                cv.paint(inside(blob_mask(g, Blob(10.0, ay - self.aorta_r - 9, 3.5, 3.5))), H[S.AORTA], S.VESSEL)
                cv.paint(inside(blob_mask(g, Blob(-4.0, ay - self.aorta_r - 11, 5.0, 4.5))), H[S.IVC], S.VESSEL)
            n_v = int(rng.integers(6, 18))
            for _ in range(n_v):
                vx = rng.normal(0, ai * 0.3)
                vy = ay - rng.uniform(15, bi * 0.9)
                rv = rng.uniform(1.0, 3.0)
                if rng.random() < 0.5:
                    cv.paint(inside(blob_mask(g, Blob(vx, vy, rv, rv))), H[S.VESSEL], S.VESSEL)
                else:
                    L, a = rng.uniform(6, 25), rng.uniform(-PI, PI)
                    cv.paint(inside(capsule_mask(g, vx, vy, vx + L * math.cos(a), vy + L * math.sin(a), rv * 0.7)),
                             H[S.VESSEL], S.VESSEL)
        # ---- pelvis muscles: iliacus (inside the iliac wing), gluteals (outside it)
        if s > self.crest_s - 0.3:
            dz = float(np.clip((s - self.crest_s + 0.3) / 1.5, 0, 1))
            for side in (-1, 1):
                il = Blob(side * ai * 0.62, y_vb - 8, 16 * dz + 3, 26 * dz + 3, side * 0.3, 2.0)
                cv.paint(inside(blob_mask(g, il)), H[S.ILIACUS], S.ILIACUS)
                gl = Blob(side * ai * 0.82, y_vb + 25, 18 * dz + 3, 30 * dz + 5, -side * 0.5, 2.0)
                cv.paint(inside(blob_mask(g, gl), fascia_full), H[S.GLUTEAL], S.GLUTEAL)
        # ---- no visceral fat behind the spine between the paraspinal muscles: that is IMAT
        sidr = cv.sid[rs, cs]
        post = (sidr == S.VAT) & (y > y_tp + 4) & (np.abs(x) < 45.0 * ms**0.6)
        sidr[post] = S.IMAT
        return {"body": body_full, "fascia": fascia_full, "region": (rs, cs)}

    def _psoas_blob(self, fr: Frame, side: int) -> Blob:
        """The psoas outline at this height (grows from T12/L1, moves laterally in the pelvis)."""
        s, ms = fr.s, self.p.muscle_scale
        rp = min(4.0 + 5.5 * (s - 0.4), 23.0 + 2.0 * min(max(s - 4.0, 0.0), 1.0))
        rp *= ms**0.55 * (1.0 if self.male else 0.85)
        shift = max(s - 3.5, 0.0) * 7.0
        return Blob(side * (fr.vb_w / 2 + 0.8 * rp + shift), fr.y_vb - 1 - 0.3 * shift,
                    rp * 0.95 * self.sizes[14 + (side > 0)], rp * 1.1, side * 0.5, 2.0, self._harm("psoas", side, s))

    def _paint_bowel(self, cv: Canvas, fr: Frame, rng: np.random.Generator, inside) -> None:
        g, H = cv.grid, self.hu
        s = fr.s
        for kind, ang, rho, s0, s1, r, content, seed, hl in self.loops:
            if not (s0 < s < s1):
                continue
            t = (s - s0) / (s1 - s0)
            f = math.sqrt(max(1.0 - (2 * t - 1) ** 2, 0.0))
            if f < 0.25:
                continue
            rr = r * (0.6 + 0.4 * f)
            if kind == "psoas":  # on the psoas, anterior (phi 0) to anterolateral (phi ~1)
                if s < 0.9:
                    continue
                side, phi = ang, rho
                ps = self._psoas_blob(fr, int(side))
                a_ = -HALF_PI + side * phi
                dd = max(ps.rx, ps.ry) * 0.95 + rr * 0.9
                cx, cy = ps.cx + dd * math.cos(a_), ps.cy + dd * math.sin(a_)
            else:
                a_here = float(fr.inner.at(np.array([ang]))[0])
                d = rho * max(a_here - rr - 3.0, 5.0) if rho < 0.999 else a_here - rr * 0.92
                cx, cy = d * math.cos(ang), fr.yc + d * math.sin(ang)
            lrng = np.random.default_rng(seed)
            harm = random_harm(lrng, 0.16 if kind == "colon" else 0.1, 8 if kind == "colon" else 4, 1.0)
            if content == "collapsed":
                rr *= 0.55
            elong = lrng.uniform(1.4, 3.0) if (kind == "small" and lrng.random() < 0.35) else lrng.uniform(0.85, 1.2)
            if kind == "small" and content != "faeces" and lrng.random() < 0.3:
                self._paint_bent_loop(cv, lrng, inside, cx, cy, rr, content)
                continue
            blob = Blob(cx, cy, rr * elong, rr * lrng.uniform(0.7, 1.05), lrng.uniform(-PI, PI), 2.0, harm)
            bd = blob_dist(g, blob)
            if bd is None:
                continue
            rs, cs, dist = bd
            cv.paint(inside((rs, cs, soft_from_dist(g, dist))), H[S.BOWEL_WALL], S.BOWEL_WALL)
            # collapsed loops: thick (3-6 mm) enhancing wall around a slit of fluid
            wall_t = lrng.uniform(3.0, 6.0) if content == "collapsed" else 2.0
            m = soft_from_dist(g, dist, wall_t)
            lum = (rs, cs, m)
            if content == "gas":
                cv.paint(inside(lum), H[S.GAS], S.GAS)
            elif content == "fluid" or content == "collapsed":
                cv.paint(inside(lum), H[S.FLUID] + (20 if content == "collapsed" else 0), S.FLUID)
            elif content == "contrast":
                cv.paint(inside(lum), H[S.ORAL_CONTRAST] * lrng.uniform(0.5, 1.0), S.ORAL_CONTRAST)
            else:  # faeces: mottled, with gas bubbles
                fld = smooth_field(lrng, m.shape, 2.0 / cv.grid.px + 1.0)
                val = H[S.FAECES] + 60.0 * fld
                gas = fld > 1.2
                val = np.where(gas, H[S.GAS], val).astype(np.float32)
                cv.paint(inside(lum), val, S.FAECES)
            # a gas-fluid level: gas rises anteriorly (up in the image) in a supine patient
            if content in ("fluid", "contrast") and lrng.random() < 0.3:
                y = cv.grid.ys(rs.start, rs.stop)[:, None]
                lvl = cy - rr * lrng.uniform(0.2, 0.6)
                gm = m * np.clip((lvl - y) / cv.grid.px + 0.5, 0, 1)
                cv.paint(inside((rs, cs, gm.astype(np.float32))), H[S.GAS], S.GAS)

    def _paint_bent_loop(self, cv: Canvas, lrng: np.random.Generator, inside, cx: float, cy: float,
                         rr: float, content: str) -> None:
        """A small-bowel loop cut along its length: a bent tube (wall + lumen capsules)."""
        g, H = cv.grid, self.hu
        rad = rr * lrng.uniform(1.3, 3.0)
        a0 = lrng.uniform(-PI, PI)
        span = lrng.uniform(0.8, 2.2)
        angs = a0 + span * np.linspace(-0.5, 0.5, 4)
        ox, oy = cx - rad * math.cos(a0), cy - rad * math.sin(a0)
        pts = [(ox + rad * math.cos(a), oy + rad * math.sin(a)) for a in angs]
        rw = rr * lrng.uniform(0.55, 0.8)
        wall_t = 2.0 + (1.5 if content == "collapsed" else 0.0)
        if content == "gas":
            val, sid = H[S.GAS], S.GAS
        elif content == "contrast":
            val, sid = H[S.ORAL_CONTRAST] * lrng.uniform(0.5, 1.0), S.ORAL_CONTRAST
        else:
            val, sid = H[S.FLUID] + (20 if content == "collapsed" else 0), S.FLUID
        for (x1, y1), (x2, y2) in zip(pts[:-1], pts[1:]):
            cv.paint(inside(capsule_mask(g, x1, y1, x2, y2, rw)), H[S.BOWEL_WALL], S.BOWEL_WALL)
        if rw - wall_t > 0.8:
            for (x1, y1), (x2, y2) in zip(pts[:-1], pts[1:]):
                cv.paint(inside(capsule_mask(g, x1, y1, x2, y2, rw - wall_t)), val, sid)

    def paint_bones(self, cv: Canvas, fr: Frame, thickness_mm: float = 1.0) -> list[tuple[float, float]]:
        """Vertebra or disc at z, posterior elements, ribs, sacrum, iliac wings, implant.

        Returns the centres of metal objects (for streak artefacts).
        """
        g, H = cv.grid, self.hu
        z = fr.z_mm
        sp = self.spine
        inside_v, below, above = sp.at(z)
        y_vb, vb_w, vb_d = fr.y_vb, fr.vb_w, fr.vb_d
        sc = self.spine_params.size_scale
        metal: list[tuple[float, float]] = []
        cort = H[S.CORTEX]
        trab = H[S.TRABECULAR]
        post_hu = 0.45 * cort + 0.55 * trab  # posterior elements: thin cortex around marrow
        # ---- vertebral body or disc
        bean = ((2, -0.03, 0.0), (3, 0.0, 0.06), (4, -0.02, 0.0))  # flat-to-concave back, rounded front
        if inside_v is not None and inside_v.region != "S":
            v = inside_v
            body = Blob(0.0, y_vb, vb_w / 2, vb_d / 2, 0.0, 2.3 if v.region == "L" else 2.0, bean)
            near_end = min(v.z_top_mm - z, z - v.z_bottom_mm)
            cv.paint(blob_mask(g, body), cort, S.CORTEX)
            if near_end > 0.5 * thickness_mm + 1.0:
                cv.paint(blob_mask(g, body, 0.9 * sc), trab, S.TRABECULAR)
                # basivertebral vein: a small notch at the back of the body
                cv.paint(blob_mask(g, Blob(0.0, y_vb + vb_d / 2 - 3, 3.0, 2.0)), trab - 60, S.TRABECULAR)
            else:  # through the endplate: partial volume of dense plate and disc
                w = float(np.clip(near_end / (0.5 * thickness_mm + 1.0), 0, 1))
                cv.paint(blob_mask(g, body, 1.5), w * trab + (1 - w) * (0.5 * cort + 0.5 * H[S.DISC]), S.CORTEX)
        elif inside_v is None and below is not None and above is not None and z > 0.0:
            disc = Blob(0.0, y_vb, vb_w / 2 + 1.5, vb_d / 2 + 1.0, 0.0, 2.3, bean)
            cv.paint(blob_mask(g, disc), H[S.DISC] + 20, S.DISC)
            cv.paint(blob_mask(g, disc, 5.0), H[S.DISC], S.DISC)
        # ---- posterior elements of the nearest vertebra (canal, pedicles, TPs, lamina, spinous)
        s = fr.s
        y_post = y_vb + vb_d / 2
        canal_r = 11.0 * sc if s > 0 else 8.0 * sc
        canal = Blob(0.0, y_post + canal_r * 0.75 + 1, canal_r, canal_r * 0.75, 0.0, 2.0, ((3, 0.0, -0.08),))
        if z > sp.z_sacrum_bottom_mm * 0.4 and s < sp.n_lumbar + 1.2:
            cv.paint(blob_mask(g, canal.moved(scale=1.15)), H[S.EPIDURAL_FAT], S.EPIDURAL_FAT)
        for v in sp.vertebrae:
            if v.region == "S":
                continue
            h = v.height_mm
            if not (v.z_bottom_mm - 0.5 * h <= z <= v.z_top_mm + 2.0):
                continue
            thor = v.region == "T"
            # pedicles + transverse processes: upper two-thirds of the body
            if v.z_bottom_mm + 0.4 * h <= z <= v.z_top_mm - 0.12 * h:
                for side in (-1, 1):
                    px0, py0 = side * (vb_w * 0.3), y_post - 2
                    px1, py1 = side * (vb_w * 0.33 + 2), y_post + canal_r * 1.3
                    reg = capsule_mask(g, px0, py0, px1, py1, 5.0 * sc)
                    cv.paint(reg, post_hu, S.CORTEX)
                    # transverse process: rudimentary on the last thoracic vertebra (T12),
                    # long from L1 down (SpineModel.tp_length_mm)
                    tl = sp.tp_length_mm(v)
                    if thor:
                        tx, ty = side * (vb_w * 0.33 + tl), y_post + canal_r * 1.3 + tl * 0.55
                        # rib tubercle: where a long thoracic process's tip meets its rib
                        nx, ny = side * (vb_w * 0.33 + 25.0 * sc), y_post + canal_r * 1.3 + 25.0 * sc * 0.55
                    else:
                        tx, ty = side * (vb_w * 0.33 + tl), y_post + canal_r * 0.9 + 2
                        nx, ny = tx, ty  # a lumbar rib starts at the process's tip
                    cv.paint(capsule_mask(g, px1, py1, tx, ty, 4.5 * sc, 3.0 * sc), post_hu, S.CORTEX)
                    if v.rib != "none" and v.z_top_mm - 0.6 * h <= z:
                        self._rib_neck(cv, fr, v, side, nx, ny)
            # lamina and spinous process: slope downwards (lower half of the body and below)
            if v.z_bottom_mm - 0.45 * h <= z <= v.z_top_mm - 0.3 * h:
                ly = y_post + canal_r * 1.55 + 2
                for side in (-1, 1):
                    cv.paint(capsule_mask(g, side * (vb_w * 0.33), y_post + canal_r * 1.2, 0.0, ly, 4.0 * sc),
                             post_hu, S.CORTEX)
                tip_len = (32.0 if not thor else 38.0) * sc
                if v.region == "L" and v.number == 3:
                    tip_len *= 1.05
                cv.paint(capsule_mask(g, 0.0, ly, 0.0, ly + tip_len, 3.5 * sc, 4.5 * sc), post_hu, S.CORTEX)
            # facet joints around the disc below
            if v.z_bottom_mm - 6.0 <= z <= v.z_bottom_mm + 6.0:
                for side in (-1, 1):
                    fx, fy = side * (vb_w * 0.36 + 4), y_post + canal_r * 1.4
                    cv.paint(blob_mask(g, Blob(fx, fy, 7.0 * sc, 6.0 * sc, side * 0.7)), post_hu, S.CORTEX)
                    cv.paint(blob_mask(g, Blob(fx + side * 1.0, fy, 6.5 * sc, 0.9, side * 0.9)), H[S.DISC] - 40, S.DISC)
        if s < sp.n_lumbar + 1.5:
            cv.paint(blob_mask(g, canal), H[S.CANAL], S.CANAL)
        # ---- ribs (rib cross-sections at this height)
        for v in sp.vertebrae:
            if v.rib == "none":
                continue
            self._rib_shafts(cv, fr, v)
        # ---- sacrum and iliac bones
        self._pelvis(cv, fr)
        # ---- metal spinal implant: pedicle screws and rods around one or two levels
        if self.p.metal_implant and abs(s - self.metal_level) < self.metal_half_span:
            for side in (-1, 1):
                x0, y0 = side * 10.0, y_vb - 5
                x1, y1 = side * (vb_w * 0.33 + 6), y_post + canal_r * 2.4
                if abs(s - round(s)) < 0.3:  # pedicle screws through each vertebra's pedicles
                    cv.paint(capsule_mask(g, x0, y0, x1, y1, 3.2), H[S.METAL], S.METAL)
                    metal.append((0.5 * (x0 + x1), 0.5 * (y0 + y1)))
                rod = Blob(x1, y1 + 4, 3.0, 3.0)
                cv.paint(blob_mask(g, rod), H[S.METAL], S.METAL)
                metal.append((x1, y1 + 4))
        return metal

    # rib geometry ----------------------------------------------------------------
    def _rib_params(self, v: Vertebra) -> tuple[float, float]:
        """(arc length in radians from the posterior midline, drop mm over that arc)."""
        n_t = self.spine.n_thoracic
        if v.rib == "rudimentary":
            return 0.0, 0.0
        k = n_t - v.number  # 0 = last rib
        if v.rib == "short":
            length = 0.45
        elif k == 0:
            length = 1.15
        elif k == 1:
            length = 1.6
        elif k == 2:
            length = 2.3
        else:
            length = 2.75
        drop = (40.0 + 25.0 * length) * self.spine_params.size_scale
        return length, drop

    def _rib_neck(self, cv: Canvas, fr: Frame, v: Vertebra, side: int, tx: float, ty: float) -> None:
        """The rib's proximal part at its vertebra's pedicle level.

        A thoracic rib's head articulates with the side of its own body (costovertebral
        joint) and its neck runs back and out to the tubercle at (tx, ty). A lumbar rib has
        no costovertebral joint: it articulates with, or is fused to, the tip of L1's
        transverse process at (tx, ty) and runs out and down from there, never touching the
        body (ANATOMY.md, spine variants).
        """
        g, H = cv.grid, self.hu
        sc = self.spine_params.size_scale
        if v.rib == "rudimentary":
            ex, ey = tx + side * 28.0 * sc, ty + 10.0
            cv.paint(capsule_mask(g, tx, ty, ex, ey, 3.5 * sc, 2.5 * sc), H[S.CORTEX] * 0.7, S.CORTEX)
            return
        hx, hy = side * (fr.vb_w / 2 + 1.0), fr.y_vb + fr.vb_d * 0.2
        cv.paint(capsule_mask(g, hx, hy, tx, ty, 4.0 * sc), H[S.CORTEX] * 0.7, S.CORTEX)

    def _rib_shafts(self, cv: Canvas, fr: Frame, v: Vertebra) -> None:
        length, drop = self._rib_params(v)
        if length <= 0:
            return
        z0 = v.z_top_mm - 0.45 * v.height_mm  # height of the shaft where it leaves the spine
        z = fr.z_mm
        if not (z0 - drop - 8.0 <= z <= z0 + 8.0):
            return
        g, H = cv.grid, self.hu
        half_h = 6.0 * self.spine_params.size_scale
        # path: angles from the posterolateral angle (~0.45 rad off the back midline) forwards
        n = 48
        u = np.linspace(0.0, 1.0, n)
        zpath = z0 - drop * u**1.1  # ribs descend as they run laterally and forwards
        vis = np.abs(zpath - z) < half_h
        if not vis.any():
            return
        start = 0.38
        for side in (-1, 1):
            th = HALF_PI - side * (start + u * length)
            rr = fr.fascia.at(th) - 0.5 * np.maximum(fr.wall.at(th), 6.0) - 1.0
            xs = rr * np.cos(th)
            ys = fr.yc + rr * np.sin(th)
            idx = np.nonzero(vis)[0]
            # contiguous visible runs, each drawn as at most three capsules
            runs = np.split(idx, np.nonzero(np.diff(idx) > 1)[0] + 1)
            for run in runs:
                if len(run) < 2:
                    continue
                pts = run[np.unique(np.linspace(0, len(run) - 1, min(len(run), 3)).round().astype(int))]
                for a, b in zip(pts[:-1], pts[1:]):
                    cart = u[a] > 0.85 and length > 2.0
                    hu = H[S.CORTEX] * 0.6 if not cart else 130.0
                    cv.paint(capsule_mask(g, float(xs[a]), float(ys[a]), float(xs[b]), float(ys[b]), 3.2), hu, S.CORTEX)
            if len(idx) == 1:
                i0 = int(idx[0])
                cv.paint(blob_mask(g, Blob(float(xs[i0]), float(ys[i0]), 4.0, 3.5)), H[S.CORTEX] * 0.6, S.CORTEX)

    def _pelvis(self, cv: Canvas, fr: Frame) -> None:
        g, H = cv.grid, self.hu
        sp = self.spine
        z = fr.z_mm
        s = fr.s
        sc = self.spine_params.size_scale
        cort, trab = H[S.CORTEX], H[S.TRABECULAR]
        y_vb = fr.y_vb
        # sacrum: S1 body + alae, then narrowing and moving posterior downwards
        if sp.z_sacrum_bottom_mm <= z <= 0.0:
            t = -z / -sp.z_sacrum_bottom_mm  # 0 at S1 top, 1 at the tip
            yb = y_vb + 25.0 * t
            w = (48.0 * (1 - t) + 18.0 * t) * sc
            body = Blob(0.0, yb, w / 2, (16.0 - 6 * t) * sc, 0.0, 2.3)
            cv.paint(blob_mask(g, body), cort, S.CORTEX)
            cv.paint(blob_mask(g, body, 1.5), trab, S.TRABECULAR)
            if t < 0.75:
                ala_w = (52.0 * (1 - t) + 20.0) * sc
                for side in (-1, 1):
                    ala = Blob(side * (w / 2 + ala_w / 2 - 4), yb + 8, ala_w / 2, (20.0 - 8 * t) * sc, -side * 0.35, 2.4)
                    cv.paint(blob_mask(g, ala), cort, S.CORTEX)
                    cv.paint(blob_mask(g, ala, 1.5), trab, S.TRABECULAR)
                    fo = Blob(side * (w / 2 + 6), yb + 6, 4.5, 4.5)
                    cv.paint(blob_mask(g, fo), H[S.CANAL], S.CANAL)
            cv.paint(blob_mask(g, Blob(0.0, yb + 22, 10.0 * (1 - 0.6 * t), 5.0)), H[S.CANAL], S.CANAL)
        # iliac bones: from the crest downwards
        z_crest = self._z_of_s(self.crest_s)
        if z < z_crest:
            dz = z_crest - z
            ai = fr.inner_a
            grow = float(np.clip(dz / 35.0, 0.0, 1.0))
            t0, t1 = 0.5 - 0.5 * grow, 0.72 + 0.28 * grow
            ts = np.linspace(t0, t1, 7)
            for side in (-1, 1):
                # curve from anterior-lateral (t=0) to posterior-medial (t=1, at the sacroiliac joint)
                x_ant, y_ant = ai * 0.78, y_vb - 70.0 * sc
                x_mid, y_mid = ai * 0.86, y_vb + 0.0
                x_post = (48.0 * sc + 40.0 * sc * max(0.0, 1 - dz / 90.0) + 3.0) if z < 15.0 else ai * 0.55
                y_post = y_vb + 32.0
                xs = (1 - ts) ** 2 * x_ant + 2 * ts * (1 - ts) * x_mid + ts**2 * x_post
                ys = (1 - ts) ** 2 * y_ant + 2 * ts * (1 - ts) * y_mid + ts**2 * y_post
                for i in range(len(ts) - 1):
                    thick = 3.0 + 7.0 * ts[i] ** 2 * grow
                    cv.paint(capsule_mask(g, side * xs[i], ys[i], side * xs[i + 1], ys[i + 1], thick), cort, S.CORTEX)
                    if thick > 5:
                        cv.paint(capsule_mask(g, side * xs[i], ys[i], side * xs[i + 1], ys[i + 1], thick - 2.0),
                                 trab, S.TRABECULAR)

    def _z_of_s(self, s_val: float) -> float:
        zs, ss = self.spine._z, self.spine._s
        order = np.argsort(ss)
        return float(np.interp(s_val, ss[order], zs[order]))

    # ------------------------------------------------------------------ texture
    def texture_fields(self, grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(fine, coarse) unit random fields for marbling and mottling."""
        fine = smooth_field(rng, (grid.rows, grid.cols), max(1.2 / grid.px * rng.uniform(1.0, 2.5), 0.8))
        coarse = smooth_field(rng, (grid.rows, grid.cols), max(8.0 / grid.px, 1.5))
        return fine, coarse

    def texture(self, cv: Canvas, rng: np.random.Generator,
                fields: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Marbling (IMAT) inside muscle fascia, organ mottling, fat heterogeneity."""
        p, H = self.p, self.hu
        g = cv.grid
        env = _MARBLE_LUT[cv.sid]
        fine, coarse = fields if fields is not None else self.texture_fields(g, rng)
        if p.imat_fraction > 0:
            thr = NormalDist().inv_cdf(1.0 - min(p.imat_fraction, 0.49))
            # marbling is patchy: more where the coarse field is high
            fld = fine + 0.45 * coarse
            fld = fld / 1.1
            # fatty infiltration is worse in the paraspinal muscles of older and obese people
            fld += _MARBLE_BIAS[cv.sid] * self.paraspinal_fat
            mar = np.clip((fld - thr) * 2.5 + 0.5, 0, 1)
            mar *= env
            cv.hu += mar * (H[S.IMAT] - cv.hu)
            cv.sid[(mar >= 0.5)] = S.IMAT
        amp = np.zeros(256, dtype=np.float32)
        for sid in (S.WALL, S.RECTUS, S.PSOAS, S.PARASPINAL, S.QL, S.LATISSIMUS, S.ILIACUS, S.GLUTEAL, S.CHEST_WALL):
            amp[sid] = 4.0
        amp[S.LIVER] = 5.0
        amp[S.SPLEEN] = 4.0
        amp[S.SAT] = 4.0
        amp[S.VAT] = 5.0
        amp[S.TRABECULAR] = 35.0
        amp[S.KIDNEY_CORTEX] = 5.0
        amp[S.LUNG] = 30.0
        cv.hu += amp[cv.sid] * (0.6 * coarse + 0.4 * fine)


MUSCLE_SIDS = tuple(int(s) for s in MUSCLE_ENVELOPE)
_MARBLE_LUT = np.zeros(256, dtype=np.float32)
for _s in (S.WALL, S.RECTUS, S.PSOAS, S.PARASPINAL, S.QL, S.LATISSIMUS, S.ILIACUS, S.GLUTEAL, S.CHEST_WALL):
    _MARBLE_LUT[_s] = 1.0
_MARBLE_BIAS = np.zeros(256, dtype=np.float32)
_MARBLE_BIAS[S.PARASPINAL] = 1.0
_MARBLE_BIAS[S.QL] = 0.4
