"""``make_slice``: one synthetic axial CT slice with exact tissue labels."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from ..tissues import Tissue
from .acquisition import acquire, apply_cupping, finish, metal_streaks
from .anatomy import Subject
from .params import SLICE_LEVELS, PhantomParams, SpineParams
from .shapes import Canvas, Grid
from .structures import S, tissue_labels


@dataclass(frozen=True, eq=False)
class PhantomSlice:
    """A synthetic axial slice, display-oriented (anterior up, patient's right on the left).

    ``hu`` float32 integer-valued HU; ``labels`` uint8 (0 bg, 1 muscle, 2 IMAT, 3 VAT, 4 SAT);
    ``structures`` uint8 internal anatomy ids (:class:`sarcoscope.phantom.structures.S`);
    ``areas_cm2`` truth area per tissue key ("muscle", "imat", "vat", "sat") = label pixel
    count × pixel area; ``z_mm`` the height of the slice in the subject's spine frame.
    """

    hu: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    structures: np.ndarray = field(repr=False)
    pixel_spacing_mm: tuple[float, float]
    level: str
    z_mm: float
    params: PhantomParams
    areas_cm2: dict[str, float]

    @property
    def pixel_area_cm2(self) -> float:
        return self.pixel_spacing_mm[0] * self.pixel_spacing_mm[1] / 100.0


def areas_from_labels(labels: np.ndarray, pixel_area_cm2: float) -> dict[str, float]:
    counts = np.bincount(labels.ravel(), minlength=5)
    return {t.key: float(counts[int(t)]) * pixel_area_cm2 for t in Tissue}


def grid_for(params: PhantomParams) -> Grid:
    rows, cols = params.matrix
    # the FOV centre sits at the body centre plus the offset; body centre is x=0, y=0
    return Grid.centred(rows, cols, params.pixel_spacing_mm, params.fov_offset_mm[0], params.fov_offset_mm[1])


def _slice_rng(params: PhantomParams, tag: str) -> np.random.Generator:
    return np.random.default_rng([params.seed, zlib.crc32(tag.encode())])


def render_slice(subject: Subject, grid: Grid, z_mm: float, rng: np.random.Generator,
                 thickness_mm: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(hu float32, structures uint8) of the subject at height ``z_mm`` on ``grid``."""
    p = subject.p
    cv = Canvas(grid, subject.hu[S.AIR], S.AIR)
    fr = subject.frame(z_mm)
    info = subject.paint_soft(cv, fr, rng)
    metal = subject.paint_bones(cv, fr, thickness_mm)
    subject.texture(cv, rng)
    body = info.get("body")
    apply_cupping(cv.hu, grid, fr, info, subject.cupping_hu)
    if metal:
        cv.hu += metal_streaks(grid, metal, rng) * (body if body is not None else 1.0)
    img = acquire(cv.hu, grid, body, noise_sd=p.noise_sd, sharpness=p.kernel_sharpness, rng=rng,
                  air_noise_ratio=subject.noise_body_ratio, lowfreq=subject.noise_lowfreq,
                  streak=subject.noise_streak)
    img = finish(img, grid, p.recon_circle)
    return img, cv.sid


def make_slice(params: PhantomParams, level: str = "L3", z_offset_mm: float = 0.0,
               spine: SpineParams | None = None) -> PhantomSlice:
    """Render one axial slice through the middle of vertebra ``level`` (+ ``z_offset_mm``).

    Levels T12..L5 (any vertebra name of the spine is accepted). Deterministic for a given
    ``params.seed``, level and offset. ``spine`` defaults to a normal spine.
    """
    if level not in SLICE_LEVELS:
        raise ValueError(f"make_slice: level {level!r} is not one of {SLICE_LEVELS}")
    subject = Subject(params, spine)
    try:
        v = subject.spine.by_name(level)
    except ValueError as exc:
        raise ValueError(f"make_slice: {exc}") from None
    z = v.z_mm + float(z_offset_mm)
    grid = grid_for(params)
    rng = _slice_rng(params, f"{level}:{z_offset_mm:.3f}")
    hu, sid = render_slice(subject, grid, z, rng)
    labels = tissue_labels(sid, hu)
    px = (grid.row_mm, grid.col_mm)
    return PhantomSlice(hu=hu, labels=labels, structures=sid, pixel_spacing_mm=px, level=level, z_mm=z,
                        params=params, areas_cm2=areas_from_labels(labels, px[0] * px[1] / 100.0))
