"""``make_volume``: a whole synthetic CT series with a countable spine and exact labels.

Speed comes from not rendering every slice from scratch: the soft tissue (body, fat,
muscle, organs, bowel) changes slowly along z, so it is rendered and blurred on *template*
heights every ``template_step_mm`` and linearly blended between them; the skeleton (vertebra
or disc, posterior elements, ribs, sacrum, iliac bones), whose position along z is what an
L3 finder counts, is painted exactly on every slice. Noise comes from a small bank of
kernel-shaped noise images, shifted randomly per slice.
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy import fft

from ..types import CTVolume, PatientInfo, SeriesInfo, VertebraLevel
from .acquisition import apply_cupping, correlated_noise, kernel_filters, metal_streaks
from .anatomy import Frame, Subject
from .params import PhantomParams, SpineParams
from .shapes import Canvas
from .slice import grid_for
from .structures import S, tissue_labels
from ..tissues import AIR_HU

log = logging.getLogger(__name__)

COVERAGES = ("whole", "abdomen", "abdomen-pelvis", "chest", "upper-abdomen", "lower-abdomen")


@dataclass(frozen=True, eq=False)
class PhantomVolume:
    """A synthetic series: the CT volume, its tissue labels and the spine ground truth.

    ``labels[k, j, i]`` are Alberta-protocol tissue labels (0..4) on every slice.
    ``vertebrae`` lists every vertebra whose body overlaps the scanned range (inferior →
    superior) with body centre/top/bottom z in the volume's patient coordinates.
    ``l3_index`` is the display slice nearest mid-L3, None when mid-L3 is outside the range.
    ``variant`` names the spine variant ("normal", "sacralisation", ...).
    """

    volume: CTVolume = field(repr=False)
    labels: np.ndarray = field(repr=False)
    vertebrae: tuple[VertebraLevel, ...]
    l3_index: int | None
    variant: str
    params: PhantomParams
    spine: SpineParams
    coverage: str

    def vertebra(self, name: str) -> VertebraLevel | None:
        for v in self.vertebrae:
            if v.name == name:
                return v
        return None


class _Layer(Canvas):
    """A transparent canvas: premultiplied HU plus coverage (for painting bones over a base)."""

    def __init__(self, grid) -> None:
        super().__init__(grid, 0.0, 0)
        self.alpha = np.zeros((grid.rows, grid.cols), dtype=np.float32)
        self.box: list[int] | None = None  # r0, r1, c0, c1 of everything painted

    def clear(self) -> None:
        """Make the layer transparent again (only the painted box is reset)."""
        if self.box is not None:
            r0, r1, c0, c1 = self.box
            self.hu[r0:r1, c0:c1] = 0.0
            self.sid[r0:r1, c0:c1] = 0
            self.alpha[r0:r1, c0:c1] = 0.0
            self.box = None

    def paint(self, region, value, sid: int, where=None) -> None:
        if region is None:
            return
        rs, cs, m = region
        if self.box is None:
            self.box = [rs.start, rs.stop, cs.start, cs.stop]
        else:
            b = self.box
            b[0], b[1] = min(b[0], rs.start), max(b[1], rs.stop)
            b[2], b[3] = min(b[2], cs.start), max(b[3], cs.stop)
        if where is not None:
            m = m * where
        super().paint((rs, cs, m), value, sid)
        a = self.alpha[rs, cs]
        a += m * (1.0 - a)


def coverage_range(subject: Subject, coverage: str) -> tuple[float, float]:
    """(z_lo, z_hi) in the subject's spine frame for a named coverage."""
    sp = subject.spine

    def z(name: str, where: str = "mid") -> float:
        v = sp.by_name(name)
        return {"mid": v.z_mm, "top": v.z_top_mm, "bottom": v.z_bottom_mm}[where]

    n_t, n_l = sp.n_thoracic, sp.n_lumbar
    last_t = f"T{n_t}"
    sac_tip = sp.z_sacrum_bottom_mm
    if coverage == "whole":
        return sac_tip - 30.0, z("T5", "mid")
    if coverage == "abdomen":
        return z("S1", "mid"), z(f"T{n_t - 2}", "mid")
    if coverage == "abdomen-pelvis":
        return sac_tip - 30.0, z(f"T{n_t - 1}", "top")
    if coverage == "chest":
        return z("L1", "mid"), z("T4", "mid")
    if coverage == "upper-abdomen":
        return z("L2", "bottom") + 4.0, z(f"T{n_t - 3}", "mid")
    if coverage == "lower-abdomen":
        return sac_tip - 20.0, z("L3", "mid") - 4.0
    raise ValueError(f"make_volume: coverage {coverage!r} is not one of {COVERAGES}")


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def make_volume(
    params: PhantomParams,
    spine: SpineParams | None = None,
    *,
    coverage: str = "abdomen",
    z_range_mm: tuple[float, float] | None = None,
    slice_thickness_mm: float | None = None,
    slice_spacing_mm: float | None = None,
    n_slices: int | None = None,
    template_step_mm: float = 10.0,
    z_origin_mm: float | None = None,
) -> PhantomVolume:
    """Render a display-oriented CT volume of ``params``'s body with spine ``spine``.

    Parameters
    ----------
    coverage
        Named z range (``COVERAGES``): "whole" (T5 to below the sacrum), "abdomen"
        (T10–S1 for a 12-rib spine), "abdomen-pelvis", "chest" (T4–L1: no L3),
        "upper-abdomen" (ends above L3), "lower-abdomen" (starts just below mid-L3).
    z_range_mm
        Explicit (lo, hi) range in the spine frame (S1 top at 0), overriding ``coverage``.
    slice_spacing_mm, n_slices
        Give one: the spacing, or the number of slices over the range (default 2.5 mm).
    slice_thickness_mm
        Nominal thickness (default = spacing); affects endplate partial volume and DICOM.
    template_step_mm
        Height step of the soft-tissue templates (smaller = smoother and slower).
    z_origin_mm
        Added to every z so that patient coordinates look like a scanner's table positions
        (default drawn from the seed, -900..+100 mm).
    """
    subject = Subject(params, spine)
    sp = subject.spine
    spine_p = subject.spine_params
    if z_range_mm is not None:
        z_lo, z_hi = float(min(z_range_mm)), float(max(z_range_mm))
        coverage = "custom"
    else:
        z_lo, z_hi = coverage_range(subject, coverage)
    if z_hi - z_lo < 1.0:
        raise ValueError(f"make_volume: z range {z_lo:.1f}..{z_hi:.1f} mm is empty")
    if n_slices is not None and slice_spacing_mm is not None:
        raise ValueError("make_volume: give slice_spacing_mm or n_slices, not both")
    if n_slices is not None:
        if n_slices < 1:
            raise ValueError(f"make_volume: n_slices must be >= 1, got {n_slices}")
        spacing = (z_hi - z_lo) / max(n_slices - 1, 1)
        n = int(n_slices)
    else:
        spacing = float(slice_spacing_mm) if slice_spacing_mm is not None else 2.5
        if not 0.2 <= spacing <= 20:
            raise ValueError(f"make_volume: slice_spacing_mm={spacing} is outside 0.2..20")
        n = int(math.floor((z_hi - z_lo) / spacing)) + 1
    thickness = float(slice_thickness_mm) if slice_thickness_mm is not None else max(spacing, 0.5)
    zs = z_lo + spacing * np.arange(n)
    grid = grid_for(params)
    rows, cols = grid.rows, grid.cols
    rng = np.random.default_rng([params.seed, zlib.crc32(b"volume"), n])
    mtf, nps = kernel_filters(grid, params.kernel_sharpness, subject.noise_lowfreq, subject.noise_streak)

    # ---- soft-tissue templates (blurred) on a coarse z lattice
    step = max(float(template_step_mm), spacing)
    tz = np.arange(z_lo - step, z_hi + 2 * step, step)
    temps_hu = np.empty((len(tz), rows, cols), dtype=np.float32)
    temps_sid = np.empty((len(tz), rows, cols), dtype=np.uint8)
    temps_amp = np.empty((len(tz), rows, cols), dtype=np.float32)  # noise amplitude (air < body)
    in_body = np.ones(256, dtype=np.float32)
    for sid in (S.AIR, S.TABLE, S.PAD):
        in_body[sid] = subject.noise_body_ratio
    base_fields = subject.texture_fields(grid, rng)
    frames = []
    for t, z in enumerate(tz):
        cv = Canvas(grid, subject.hu[S.AIR], S.AIR)
        fr = subject.frame(float(z))
        frames.append(fr)
        info = subject.paint_soft(cv, fr, rng)
        sh = (int(rng.integers(0, rows)), int(rng.integers(0, cols)))
        subject.texture(cv, rng, (np.roll(base_fields[0], sh, (0, 1)), np.roll(base_fields[1], sh, (0, 1))))
        apply_cupping(cv.hu, grid, fr, info, subject.cupping_hu)
        temps_hu[t] = fft.irfft2(fft.rfft2(cv.hu) * mtf, s=(rows, cols))
        temps_sid[t] = cv.sid
        temps_amp[t] = in_body[cv.sid]

    # ---- noise bank: periodic noise images tiled 2x2, so a shifted window is a free view
    n_bank = 6
    bank = [np.tile(correlated_noise(grid, nps, rng) * np.float32(params.noise_sd), (2, 2)) for _ in range(n_bank)]
    hu_vol = np.empty((n, rows, cols), dtype=np.int16)
    lab_vol = np.empty((n, rows, cols), dtype=np.uint8)
    if params.recon_circle:
        xx = (np.arange(cols) - (cols - 1) / 2.0)[None, :]
        yy = (np.arange(rows) - (rows - 1) / 2.0)[:, None]
        outside = (xx * xx + yy * yy) > (min(rows, cols) / 2.0) ** 2
    else:
        outside = None
    img = np.empty((rows, cols), dtype=np.float32)
    layer = _Layer(grid)
    for k, z in enumerate(zs):
        f = (z - tz[0]) / step
        a = int(min(max(math.floor(f), 0), len(tz) - 2))
        w = np.float32(min(max(f - a, 0.0), 1.0))
        np.multiply(temps_hu[a], np.float32(1.0) - w, out=img)
        img += temps_hu[a + 1] * w
        near = a if w < 0.5 else a + 1
        sid = temps_sid[near].copy()
        # the bones follow the blended frame, so they sit where the blended soft tissue expects
        fr = Frame.blend(frames[a], frames[a + 1], float(w), float(z), sp.level_coordinate(float(z)))
        layer.clear()
        metal = subject.paint_bones(layer, fr, thickness)
        if layer.box is not None:
            r0, r1, c0, c1 = layer.box
            al = layer.alpha[r0:r1, c0:c1]
            sub = img[r0:r1, c0:c1]
            sub *= 1.0 - al
            sub += layer.hu[r0:r1, c0:c1]
            cover = al >= 0.5
            ssub = sid[r0:r1, c0:c1]
            ssub[cover] = layer.sid[r0:r1, c0:c1][cover]
        if metal:
            img += metal_streaks(grid, metal, rng) * (in_body[sid] > 0.99)
        dy, dx = int(rng.integers(0, rows)), int(rng.integers(0, cols))
        nb = bank[k % n_bank][dy:dy + rows, dx:dx + cols]
        img += nb * temps_amp[near]
        np.rint(img, out=img)
        np.clip(img, AIR_HU, 3071, out=img)
        if outside is not None:
            img[outside] = AIR_HU
        hu_vol[k] = img
        lab_vol[k] = tissue_labels(sid, hu_vol[k], integer_hu=True)

    # ---- geometry, truth
    z0 = float(z_origin_mm) if z_origin_mm is not None else float(
        np.random.default_rng([params.seed, 5]).uniform(-900, 100))
    affine = np.eye(4)
    affine[0, 0] = grid.col_mm
    affine[1, 1] = grid.row_mm
    affine[2, 2] = spacing
    affine[:3, 3] = (grid.x0, grid.y0, z_lo + z0)
    verts = []
    for v in sp.vertebrae:
        top = v.z_top_mm
        if top >= z_lo and v.z_bottom_mm <= z_hi:
            verts.append(VertebraLevel(v.name, v.z_mm + z0, v.z_top_mm + z0, v.z_bottom_mm + z0))
    l3 = sp.by_name("L3")
    l3_index = int(round((l3.z_mm - z_lo) / spacing)) if z_lo <= l3.z_mm <= z_hi else None
    if l3_index is not None:
        l3_index = int(min(max(l3_index, 0), n - 1))
    kernel = "PHANTOM-SHARP" if params.kernel_sharpness > 0.6 else "PHANTOM-SOFT"
    series = SeriesInfo(
        source_path=f"phantom://seed={params.seed}",
        format="phantom",
        study_uid=_uid("study", params.seed),
        series_uid=_uid("series", params, spine_p, z_lo, z_hi, n, spacing, thickness),
        frame_of_reference_uid=_uid("for", params.seed),
        modality="CT",
        series_description=f"sarcoscope phantom {coverage} ({spine_p.variant})",
        manufacturer="sarcoscope phantom",
        kernel=kernel,
        slice_thickness_mm=thickness,
        selection_reason="synthetic phantom",
    )
    patient = PatientInfo(sex=params.sex, height_m=params.height_m, weight_kg=params.weight_kg,
                          age_years=params.age_years)
    uids = tuple(_uid("sop", params, spine_p, z_lo, z_hi, n, spacing, thickness, k) for k in range(n))
    vol = CTVolume(hu=hu_vol, affine=affine, series=series, patient=patient, slice_uids=uids)
    log.debug("phantom volume: %d slices, %s, spacing %.2f mm", n, coverage, spacing)
    return PhantomVolume(volume=vol, labels=lab_vol, vertebrae=tuple(verts), l3_index=l3_index,
                         variant=spine_p.variant, params=params, spine=spine_p, coverage=coverage)
