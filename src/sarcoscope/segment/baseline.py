"""The classical baseline segmenter: Alberta-protocol HU thresholds plus simple anatomy.

This is the reference the trained model must beat, so it is kept honest and explainable:
every step is a threshold, a morphological operation or a ray cast, with its sizes in
millimetres (pixel spacings of 0.5–3 mm behave alike). ``docs/baseline.md`` describes the
algorithm, its parameters, measured accuracy and known failure modes.

Outline
-------
1. Body: HU > −500, largest connected component after an opening (on a ~2 mm grid) that
   cuts the table, mattress, blankets and arms touching by thin bridges; holes filled. The
   outer ``skin_mm`` (at least one pixel) are skin and never labelled; the image edge of a
   body cut off by the field of view is not treated as skin.
2. Anatomy is found on smoothed copies whose smoothing grows until the spread of the fat
   pixels reaches a target (measured, so correlated low-dose noise is handled); the final
   labels use the raw HU and the Alberta windows (fat −190…−30, muscle −29…+150).
3. Vertebra: of the dense (> 150 HU) components (closed, hole-filled, ≥ 3 cm²) in a window
   around the midline behind the front quarter of the body, the one reaching furthest back
   (the spinous process; contrast-filled bowel and vessels lie in front).
4. Outer muscle wall: 720 rays from the body centre; walking inward from the skin (a thin
   soft layer followed by fat within ``skin_max_mm`` is skin), the first run of tissue
   above ``wall_hu`` at least ``wall_run_mm`` long is the wall's outer surface. The radius
   profile is cleaned over angle: a grey opening removes narrow outward spikes (a vessel or
   septum in the fat), a grey closing bridges gaps (``wall_close_mm``; ``linea_alba_mm`` in
   the anterior sector, where the linea alba can be wide). Fat outside the contour is SAT.
5. Muscle: (a) the wall band: from the outer surface inward while the tissue stays
   wall-like (gaps up to ``wall_gap_mm``), at most ``wall_max_mm``; capped runs (an organ
   against the wall) are cut at the deepest fat plane; narrow thickness spikes are removed
   over angle; thick blobs (an opening of ``organ_mm``: liver, spleen, kidney, fluid-filled
   bowel) and tissue within ``gas_margin_mm`` of gas (bowel) are excluded. (b) around the
   vertebra: behind the transverse-process line, soft-tissue components touching the
   vertebra or the wall muscles (paraspinals, quadratus lumborum); in front of it, only
   psoas cores (after a ``psoas_neck_mm`` erosion that cuts the neck to a kidney or bowel
   loop) lying against the vertebral body; connectivity uses HU ≤ ``core_max_hu`` so an
   enhancing kidney does not join. Nothing else inside the wall is ever muscle.
6. IMAT: fat inside the muscle envelope (muscle closed by ``imat_close_mm``, enclosed holes
   up to ``imat_hole_mm2`` filled). VAT: the remaining fat inside the wall contour, outside
   the vertebra.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

import sarcoscope
from sarcoscope.segment.body import crop_box as _crop_box
from sarcoscope.segment.body import drop_small as _drop_small
from sarcoscope.segment.body import gaussian_mm as _gauss
from sarcoscope.segment.body import distance_mm as _edt
from sarcoscope.segment.body import fill_holes as _fill_holes
from sarcoscope.segment.body import trunk_mask
from sarcoscope.segment.vertebra import VERTEBRA_MIN_MM2, find_vertebra
from sarcoscope.tissues import AIR_HU, FAT_HU, MUSCLE_HU, Tissue

log = logging.getLogger(__name__)

# class codes of the internal class image
_OUT, _FAT, _SOFT, _DENSE, _GAS, _SPINE, _SKIN = 0, 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class BaselineParams:
    """Tunable constants of the baseline, in mm and HU (docs/baseline.md explains each)."""

    # body and skin
    body_hu: float = -500.0
    body_open_mm: float = 6.0  # bridges thinner than 2x this (table, arms touching) are cut
    skin_mm: float = 1.5
    skin_max_mm: float = 6.0  # a soft layer at the surface thinner than this, then fat: skin
    # smoothing for the anatomy (the labels use raw HU)
    smooth_sigma_mm: float = 0.6
    target_noise_hu: float = 10.0
    wall_sigma_mm: float = 0.5
    wall_noise_hu: float = 8.0
    max_sigma_mm: float = 2.5
    dense_hu: float = 150.0
    vertebra_min_mm2: float = VERTEBRA_MIN_MM2
    # the outer wall contour
    n_rays: int = 720
    wall_hu: float = -50.0
    wall_run_mm: float = 2.0
    wall_open_arc_mm: float = 12.0
    wall_close_mm: float = 12.0
    linea_alba_mm: float = 30.0
    linea_alba_deg: float = 35.0
    # the wall band (abdominal wall muscles)
    wall_gap_mm: float = 2.5
    wall_max_mm: float = 35.0
    wall_min_mm: float = 3.0
    wall_spike_arc_mm: float = 30.0
    organ_mm: float = 12.0
    gas_hu: float = -400.0
    gas_margin_mm: float = 3.0
    # muscles around the spine
    spine_open_mm: float = 1.5
    spine_anterior_mm: float = 10.0
    spine_lateral_mm: float = 40.0
    psoas_lateral_mm: float = 40.0
    psoas_neck_mm: float = 4.5
    vessel_margin_mm: float = 3.0  # beyond the body's side: the space in front is vessels
    core_min_hu: float = -30.0  # raising it (e.g. 12) keeps ascites out but loses fatty muscle
    core_max_hu: float = 100.0
    # IMAT envelope and clean-up
    imat_close_mm: float = 3.0
    imat_hole_mm2: float = 1000.0
    min_muscle_mm2: float = 20.0


def _downsample(mask: np.ndarray, f: tuple[int, int]) -> np.ndarray:
    """Block 'all' of a boolean mask by integer factors: thin gaps (fat planes) survive."""
    if f == (1, 1):
        return mask
    h, w = mask.shape
    ph, pw = -h % f[0], -w % f[1]
    m = np.pad(mask, ((0, ph), (0, pw)))
    return m.reshape(m.shape[0] // f[0], f[0], m.shape[1] // f[1], f[1]).all(axis=(1, 3))


def _upsample(mask: np.ndarray, f: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    if f == (1, 1):
        return mask
    return np.repeat(np.repeat(mask, f[0], axis=0), f[1], axis=1)[: shape[0], : shape[1]]


def _open(mask: np.ndarray, r_mm: float, spacing: tuple[float, float]) -> np.ndarray:
    """Binary opening with a disk of radius r_mm (exact, via distance transforms)."""
    eroded = _edt(mask, spacing) > r_mm
    return ~(_edt(~eroded, spacing) > r_mm) & mask


def body_mask(hu: np.ndarray, spacing: tuple[float, float], p: BaselineParams) -> np.ndarray:
    """The trunk (``segment.body.trunk_mask``) with this segmenter's thresholds."""
    return trunk_mask(hu, spacing, p.body_hu, p.body_open_mm)


def _smooth_to_noise(hu: np.ndarray, ref: np.ndarray, target_hu: float, min_mm: float,
                     max_mm: float, sp: tuple[float, float]) -> tuple[np.ndarray, float]:
    """Smooth until the spread in the fat reference pixels falls to ``target_hu``.

    Measured rather than predicted, because CT noise is correlated (the kernel): the
    white-noise rule (SD / (2·sqrt(pi)·sigma)) would under-smooth soft-kernel scans.
    Returns the smoothed image and the robust SD reached.
    """
    sigma = min_mm
    idx = np.flatnonzero(ref.ravel())
    if idx.size > 4000:  # a robust spread needs a few thousand pixels, not all of them
        idx = idx[:: idx.size // 4000]
    while True:
        sm = _gauss(hu, sigma, sp)
        if idx.size < 100:
            return sm, math.nan
        v = sm.ravel()[idx]
        sd = 1.4826 * float(np.median(np.abs(v - np.median(v))))
        if sd <= target_hu or sigma >= max_mm:
            return sm, sd
        # correlated noise falls roughly as 1/sigma once sigma exceeds its grain
        sigma = min(max_mm, max(sigma * 1.3, sigma * sd / target_hu * 1.1))


def _run_starts(mask: np.ndarray, n: int) -> np.ndarray:
    """True at [t, s] where mask[t, s:s+n] is all True (a run of >= n starts at s)."""
    c = np.cumsum(mask, axis=1, dtype=np.int32)
    c = np.concatenate([np.zeros((mask.shape[0], 1), np.int32), c], axis=1)
    out = np.zeros(mask.shape, bool)
    if n <= mask.shape[1]:
        out[:, : mask.shape[1] - n + 1] = (c[:, n:] - c[:, :-n]) == n
    return out


def _first(mask: np.ndarray) -> np.ndarray:
    """Index of the first True per row, -1 where none."""
    idx = np.argmax(mask, axis=1)
    idx[~mask[np.arange(mask.shape[0]), idx]] = -1
    return idx


def _circular(fn, values: np.ndarray, size: int) -> np.ndarray:
    size = max(1, int(size))
    if size <= 1:
        return values
    return fn(values, size=size, mode="wrap")


def _fill_missing_circular(values: np.ndarray) -> np.ndarray:
    ok = np.isfinite(values)
    if ok.all() or not ok.any():
        return values
    n = values.size
    x = np.arange(n)
    return np.interp(x, x[ok], values[ok], period=n)


class BaselineSegmenter:
    """Rule-based segmenter (Segmenter protocol); see the module docstring."""

    name = "baseline-threshold"
    version = sarcoscope.__version__
    sha256: str | None = None

    def __init__(self, params: BaselineParams | None = None) -> None:
        self.params = params or BaselineParams()

    def segment(self, hu: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
        """Label a display-oriented (rows, columns) HU slice: 0 bg, 1 muscle, 2 IMAT, 3 VAT, 4 SAT."""
        return segment_slice(hu, pixel_spacing_mm, self.params).labels


@dataclass(frozen=True, eq=False)
class BaselineDebug:
    """The labels and the intermediate masks (for overlays, tests and docs)."""

    labels: np.ndarray
    body: np.ndarray
    inside_wall: np.ndarray
    wall_band: np.ndarray
    spine_zone: np.ndarray
    vertebra: np.ndarray | None
    centre_rc: tuple[float, float]


def _fill_small_holes(mask: np.ndarray, max_mm2: float, sp: tuple[float, float]) -> np.ndarray:
    """Fill enclosed holes up to max_mm2 (never the whole visceral cavity a muscle ring encloses)."""
    holes = _fill_holes(mask) & ~mask
    return mask | (holes & ~_drop_small(holes, max_mm2, sp))


def segment_slice(hu: np.ndarray, pixel_spacing_mm: tuple[float, float],
                  params: BaselineParams | None = None) -> BaselineDebug:
    """Run the baseline on one slice and keep the intermediate masks."""
    p = params or BaselineParams()
    hu_full = np.asarray(hu, dtype=np.float32)
    if hu_full.ndim != 2:
        raise ValueError(f"baseline segmenter needs a 2-D slice, got shape {hu_full.shape}")
    sp = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"pixel spacing must be positive, got {pixel_spacing_mm}")
    if not np.isfinite(hu_full).all():  # never let a NaN spread through the smoothing
        log.warning("baseline: %d non-finite HU values treated as air",
                    int((~np.isfinite(hu_full)).sum()))
        hu_full = np.where(np.isfinite(hu_full), hu_full, np.float32(AIR_HU))
    shape = hu_full.shape
    empty_full = np.zeros(shape, bool)
    labels_full = np.zeros(shape, np.uint8)

    body_full = body_mask(hu_full, sp, p)
    if body_full.sum() * sp[0] * sp[1] < 2000.0:  # < 20 cm²: nothing to measure
        log.warning("baseline: no body found on the slice (largest component < 20 cm²)")
        return BaselineDebug(labels_full, body_full, empty_full, empty_full, empty_full, None,
                             (math.nan, math.nan))
    if body_full[0].any() or body_full[-1].any() or body_full[:, 0].any() or body_full[:, -1].any():
        log.warning("baseline: body touches the field-of-view edge; SAT (and possibly muscle) "
                    "outside the image is not measured")
    # work inside the body's bounding box: every later operation costs area
    box = _crop_box(body_full, 2)
    hu = hu_full[box]
    body = body_full[box]
    # skin: the outer skin_mm; the image edge of a cut-off body is not skin (border_value=1)
    skin_r = max(p.skin_mm, max(sp))  # at least one pixel: the air/skin partial-volume rim
    inner = ndi.binary_erosion(body, _disk(skin_r, sp), border_value=1)

    # anatomy is found on smoothed copies whose smoothing grows with the measured noise, so
    # that low-dose scans (SD 30–45 HU) do not break the muscle wall into specks
    coarse = _gauss(hu, 1.5, sp)
    fat_ref = inner & (coarse > -150.0) & (coarse < -60.0)
    sm, _ = _smooth_to_noise(hu, fat_ref, p.target_noise_hu, p.smooth_sigma_mm, p.max_sigma_mm, sp)
    sm_w, _ = _smooth_to_noise(hu, fat_ref, p.wall_noise_hu, p.wall_sigma_mm, p.max_sigma_mm, sp)
    cls = np.full(hu.shape, _OUT, np.uint8)
    cls[body & ~inner] = _SKIN
    cls[inner & (sm < FAT_HU[0])] = _GAS
    cls[inner & (sm >= FAT_HU[0]) & (sm <= FAT_HU[1])] = _FAT
    cls[inner & (sm > FAT_HU[1]) & (sm <= p.dense_hu)] = _SOFT
    dense = inner & (sm > p.dense_hu)
    cls[dense] = _DENSE
    vert = find_vertebra(dense, body, sp, p.vertebra_min_mm2)
    if vert is not None:
        vert &= inner
        cls[vert] = _SPINE
    else:
        log.warning("baseline: no vertebra found; psoas/paraspinal handling disabled")

    # ---- rays from the body centre: outer surface of the muscle wall -------------------
    rows, cols = np.nonzero(body)
    cy, cx = float(rows.mean()), float(cols.mean())
    step = 0.7 * min(sp)
    h, w = hu.shape
    r_max = math.hypot(max(cy, h - 1 - cy) * sp[0], max(cx, w - 1 - cx) * sp[1]) + step
    n_s = int(r_max / step) + 1
    theta = np.linspace(-math.pi, math.pi, p.n_rays, endpoint=False)
    radii = r_max - np.arange(n_s) * step  # outside → in
    rr = np.rint(cy + np.outer(np.sin(theta), radii) / sp[0]).astype(np.intp)
    cc = np.rint(cx + np.outer(np.cos(theta), radii) / sp[1]).astype(np.intp)
    valid = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    ray = np.full(rr.shape, _OUT, np.uint8)
    ray[valid] = cls[rr[valid], cc[valid]]
    ray_body = np.zeros(rr.shape, bool)
    ray_body[valid] = body[rr[valid], cc[valid]]
    start = _first(ray_body)

    s_idx = np.arange(n_s)[None, :]
    start = np.where(start < 0, n_s, start)
    # the wall is searched on the more strongly smoothed copy (noise about wall_noise_hu), so
    # that thin, faint muscle layers stay continuous and noise in the fat never looks like wall
    wall_like = np.zeros(rr.shape, bool)
    wall_like[valid] = (inner & (sm_w > p.wall_hu))[rr[valid], cc[valid]]
    # thick skin (the back): a soft layer that starts at the skin and gives way to fat within
    # skin_max_mm is skin, not the muscle wall
    tissue_at = _first((s_idx >= start[:, None]) & (ray != _SKIN) & (ray != _OUT))
    tissue_at = np.where(tissue_at < 0, n_s, tissue_at)
    after_skin = s_idx >= tissue_at[:, None]
    first_fat = _first(after_skin & (ray == _FAT))
    first_gap = _first(after_skin & ~wall_like)
    n_skin = int(p.skin_max_mm / step)
    thick_skin = (first_fat >= 0) & (first_fat == first_gap) & (first_fat - start <= n_skin) & (
        first_fat > tissue_at)
    start = np.where(thick_skin, first_fat, tissue_at)
    after_start = s_idx >= start[:, None]
    # at least wall_run_mm of wall; one sample when a pixel is already that large
    n_run = 1 if min(sp) >= p.wall_run_mm else max(1, math.ceil(p.wall_run_mm / step))
    hit = _first(_run_starts(wall_like, n_run) & after_start)
    r_out = _fill_missing_circular(np.where(hit >= 0, r_max - hit * step, np.nan))
    if not np.isfinite(r_out).any():
        log.warning("baseline: no muscle wall found; everything inside the skin is left unlabelled")
        return BaselineDebug(labels_full, body_full, empty_full, empty_full, empty_full, None,
                             (cy + box[0].start, cx + box[1].start))
    r_med = float(np.median(r_out))
    per_mm = p.n_rays / (2 * math.pi * max(r_med, 10.0))  # rays per mm of arc at the wall
    # remove narrow outward spikes (a vessel or septum in the fat), then bridge the linea alba
    # and other gaps narrower than 2 * wall_close_mm (window sized at the nearest wall)
    r_out = _circular(ndi.grey_opening, r_out, round(p.wall_open_arc_mm * per_mm))
    r_near = max(float(np.percentile(r_out, 10)), 10.0)
    rays_per_mm_near = p.n_rays / (2 * math.pi * r_near)
    closed_small = _circular(ndi.grey_closing, r_out, round(2.0 * p.wall_close_mm * rays_per_mm_near))
    # the linea alba (anterior midline) can be several cm wide (diastasis, upper abdomen)
    closed_big = _circular(ndi.grey_closing, r_out, round(2.0 * p.linea_alba_mm * rays_per_mm_near))
    anterior = np.abs(np.angle(np.exp(1j * (theta + math.pi / 2)))) <= math.radians(p.linea_alba_deg)
    r_out = np.where(anterior, closed_big, closed_small)

    # wall thickness along each ray, from the outer surface inward: soft tissue with small
    # fat/dense gaps; when the cap is reached (an organ abuts the wall), cut at the deepest fat
    # plane inside the run, where one exists.
    hit_s = np.clip(np.rint((r_max - r_out) / step).astype(np.intp), 0, n_s - 1)
    # after the angular filtering the contour may sit a little outside the tissue: the run
    # starts at the first wall sample within wall_run_mm + 2 mm
    look = (s_idx >= hit_s[:, None]) & (s_idx <= (hit_s + int((p.wall_run_mm + 2.0) / step))[:, None])
    first_wall = _first(wall_like & look)
    run_from = np.where(first_wall >= 0, first_wall, hit_s)
    from_hit = s_idx >= run_from[:, None]
    n_gap = max(1, math.ceil(p.wall_gap_mm / step))
    gap_like = ~wall_like | (ray == _DENSE)
    stop = np.isin(ray, (_GAS, _OUT, _SPINE)) | _run_starts(gap_like, n_gap + 1)
    stop_at = _first(stop & from_hit)
    n_cap = int(p.wall_max_mm / step)
    capped = (stop_at < 0) | (stop_at - hit_s > n_cap)
    thick = np.where(capped, p.wall_max_mm, (stop_at - hit_s) * step)
    thick = np.where(first_wall >= 0, thick, 0.0)
    if capped.any():
        n_min = int(p.wall_min_mm / step)
        window = (s_idx >= (hit_s + n_min)[:, None]) & (s_idx <= (hit_s + n_cap)[:, None])
        fat_plane = (ray == _FAT) & window
        last = n_s - 1 - _first(fat_plane[:, ::-1])
        has = capped & (last < n_s)
        thick[has] = (last[has] - hit_s[has]) * step
    thick = _circular(ndi.grey_opening, thick, round(p.wall_spike_arc_mm * per_mm))

    # ---- back to pixels ----------------------------------------------------------------
    yy = (np.arange(h, dtype=np.float32)[:, None] - cy) * sp[0]
    xx = (np.arange(w, dtype=np.float32)[None, :] - cx) * sp[1]
    r_pix = np.hypot(yy, xx)
    t_idx = np.rint((np.arctan2(yy, xx) + math.pi) / (2 * math.pi) * p.n_rays).astype(np.intp) % p.n_rays
    r_wall = r_out[t_idx]
    inside_wall = inner & (r_pix < r_wall)
    wall_band = inside_wall & (r_wall - r_pix <= thick[t_idx] + step)

    soft_raw = inner & (hu >= MUSCLE_HU[0]) & (hu <= MUSCLE_HU[1])
    fat_raw = inner & (hu >= FAT_HU[0]) & (hu <= FAT_HU[1])
    soft_s = cls == _SOFT
    # organs (liver, spleen, kidney, fluid-filled bowel) are thick blobs; wall muscles are not
    # (a coarse-shape question: answered on a ~2 mm grid)
    f = (max(1, round(2.0 / sp[0])), max(1, round(2.0 / sp[1])))
    organ_c = _open(np.pad(_downsample(inside_wall & np.isin(cls, (_SOFT, _DENSE)), f), 1),
                    p.organ_mm, (sp[0] * f[0], sp[1] * f[1]))[1:-1, 1:-1]
    if f != (1, 1):  # give back the edge blocks the 'all' downsampling took
        organ_c = ndi.binary_dilation(organ_c, np.ones((3, 3), bool))
    organ = _upsample(organ_c, f, hu.shape) & np.isin(cls, (_SOFT, _DENSE))
    # bowel: its wall and content lie next to gas; muscle never does
    gas = inner & (hu < p.gas_hu)
    near_gas = _dilate(gas, p.gas_margin_mm, sp) if gas.any() else gas
    organ |= near_gas
    wall_tissue = inner & (sm > p.wall_hu) & (sm <= p.dense_hu)
    muscle = wall_tissue & wall_band & ~organ

    spine_zone = np.zeros_like(body)
    if vert is not None:
        behind, psoas, vbody = _spine_zone(vert, inside_wall, sp, p)
        spine_zone = behind | psoas
        if spine_zone.any():
            zb = _crop_box(spine_zone | vert, int(math.ceil(8.0 / min(sp))))
            spine_muscle = np.zeros_like(body)
            # connectivity is judged on muscle-like HU only (core_min_hu..core_max_hu): an
            # enhancing kidney, or ascites / fluid-filled bowel, lying against a muscle must
            # not join it
            soft_core = soft_s & ~near_gas & (sm >= p.core_min_hu) & (sm <= p.core_max_hu)
            spine_muscle[zb] = _spine_muscles(vert[zb], vbody[zb], behind[zb], psoas[zb],
                                              soft_core[zb],
                                              (muscle & ~organ)[zb], sp, p)
            spine_muscle &= soft_s
            muscle = (muscle & ~spine_zone) | spine_muscle | (muscle & spine_zone & ~organ)

    muscle = _drop_small(muscle, p.min_muscle_mm2, sp)

    # final labels on raw HU (Alberta thresholds), inside the anatomical compartments
    pad = int(math.ceil(p.imat_close_mm / min(sp))) + 1
    closed = _erode(_dilate(np.pad(muscle, pad), p.imat_close_mm, sp), p.imat_close_mm, sp)
    closed = closed[pad:-pad, pad:-pad]
    envelope = _fill_small_holes(closed, p.imat_hole_mm2, sp)
    envelope &= inside_wall
    if vert is not None:
        envelope &= ~vert
    muscle_final = envelope & soft_raw & (cls != _SPINE)
    imat = envelope & fat_raw
    vat = inside_wall & fat_raw & ~envelope
    if vert is not None:
        vat &= ~vert
    sat = inner & ~inside_wall & fat_raw
    labels = np.zeros(hu.shape, np.uint8)
    labels[sat] = Tissue.SAT
    labels[vat] = Tissue.VAT
    labels[imat] = Tissue.IMAT
    labels[muscle_final] = Tissue.MUSCLE
    labels_full[box] = labels

    def full(m: np.ndarray) -> np.ndarray:
        out = np.zeros(shape, bool)
        out[box] = m
        return out

    return BaselineDebug(labels_full, body_full, full(inside_wall), full(wall_band),
                         full(spine_zone), None if vert is None else full(vert),
                         (cy + box[0].start, cx + box[1].start))


def _dilate(mask: np.ndarray, r_mm: float, sp: tuple[float, float]) -> np.ndarray:
    """Dilation by a disk of r_mm: a structuring element when small, a distance map when large
    (its cost does not grow with the radius)."""
    disk = _disk(r_mm, sp)
    if max(disk.shape) <= 7:
        return ndi.binary_dilation(mask, disk)
    return ~(_edt(~mask, sp) > r_mm)


def _erode(mask: np.ndarray, r_mm: float, sp: tuple[float, float]) -> np.ndarray:
    """Erosion by a disk of r_mm (outside the array counts as background)."""
    disk = _disk(r_mm, sp)
    if max(disk.shape) <= 7:
        return ndi.binary_erosion(mask, disk)
    return _edt(np.pad(mask, 1), sp)[1:-1, 1:-1] > r_mm


def _disk(r_mm: float, sp: tuple[float, float]) -> np.ndarray:
    """Elliptical structuring element of radius r_mm for pixel spacing sp."""
    ry, rx = max(0, int(r_mm / sp[0])), max(0, int(r_mm / sp[1]))
    y, x = np.ogrid[-ry:ry + 1, -rx:rx + 1]
    return (y * sp[0]) ** 2 + (x * sp[1]) ** 2 <= r_mm**2 + 1e-6


def _spine_muscles(vert: np.ndarray, vbody: np.ndarray, behind: np.ndarray, psoas: np.ndarray,
                   soft: np.ndarray,
                   wall_muscle: np.ndarray, sp: tuple[float, float], p: BaselineParams) -> np.ndarray:
    """Psoas, quadratus lumborum and paraspinals within the zones around the vertebra."""
    near_vert = _dilate(vert, 3.0, sp)
    # behind the transverse processes: paraspinals and quadratus lumborum, anchored on the
    # vertebra or on the wall muscles
    picked = np.zeros_like(vert)
    cand = ndi.binary_opening(soft & behind, _disk(p.spine_open_mm, sp))
    lab, n = ndi.label(cand)
    if n:
        touched = np.unique(lab[(near_vert | wall_muscle) & cand])
        picked = _dilate(np.isin(lab, touched[touched > 0]), p.spine_open_mm, sp)
    # in front of them only the psoas: cores left after a deeper erosion (which cuts the neck
    # to a kidney or bowel loop lying against it) that lie against the vertebral body (not the
    # transverse processes, which reach towards the kidneys), grown back
    cand = soft & psoas & ~behind
    core = _erode(cand, p.psoas_neck_mm, sp)
    lab, n = ndi.label(core)
    if n:
        reach = _dilate(vbody, p.psoas_neck_mm + 3.0, sp)
        touched = np.unique(lab[reach & core])
        psoas_core = np.isin(lab, touched[touched > 0])
        picked |= _dilate(psoas_core, p.psoas_neck_mm, sp) & cand
    return picked & (behind | psoas)


def _spine_zone(vert: np.ndarray, inside_wall: np.ndarray, sp: tuple[float, float],
                p: BaselineParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where psoas, quadratus lumborum and paraspinals lie, relative to the vertebra.

    Behind the transverse-process line: out to the processes' tips plus ``spine_lateral_mm``
    (paraspinals, quadratus lumborum). In front of it: only ``psoas_lateral_mm`` beyond the
    vertebral body's side (psoas; the kidneys lie further out), from ``spine_anterior_mm`` in
    front of the body's front edge, except straight in front of the body (aorta, IVC).
    """
    rows, cols = np.nonzero(vert)
    cx = float(np.median(cols))
    mid = np.abs(cols - cx) * sp[1] < 10.0
    front = float(rows[mid].min()) if mid.any() else float(rows.min())
    # vertebral body half-width: at ~15 mm behind its front edge
    body_row = int(round(front + 15.0 / sp[0]))
    body_cols = cols[rows == min(body_row, rows.max())]
    half_w = (body_cols.max() - body_cols.min() + 1) * sp[1] / 2 if body_cols.size else 20.0
    lat_extent = max(abs(cols.max() - cx), abs(cols.min() - cx)) * sp[1]
    processes = np.abs(cols - cx) * sp[1] > half_w + 5.0
    if processes.sum() * sp[0] * sp[1] >= 20.0:
        tp_mm = (float(np.median(rows[processes])) - front) * sp[0]
    else:  # slice through the disc or pedicles: assume a typical body depth
        tp_mm = 35.0
    yy = (np.arange(vert.shape[0])[:, None] - front) * sp[0]  # mm behind the body's front
    xx = np.abs(np.arange(vert.shape[1])[None, :] - cx) * sp[1]
    behind = (yy >= tp_mm - 5.0) & (xx <= max(lat_extent, half_w) + p.spine_lateral_mm)
    psoas = (yy >= -p.spine_anterior_mm) & (xx <= half_w + p.psoas_lateral_mm)
    psoas &= ~((xx <= half_w + p.vessel_margin_mm) & (yy < 0.0))
    vertebral_body = vert & (yy < tp_mm - 5.0) & (xx <= half_w + 3.0)
    return inside_wall & behind, inside_wall & psoas, vertebral_body
