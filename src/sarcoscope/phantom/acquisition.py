"""What the scanner adds to the clean anatomy: blur, correlated noise, cupping, metal streaks.

The point-spread function and the noise power spectrum both come from the reconstruction
kernel (``kernel_sharpness``): a soft kernel blurs edges and gives blotchy, low-frequency
noise; a sharp kernel keeps edges (with a little overshoot) and gives fine-grained noise. The
noise spectrum follows the filtered-back-projection shape NPS(f) ∝ f · MTF(f)², and its
amplitude is set so that its SD equals ``noise_sd`` inside the body (less in the air).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft

from ..tissues import AIR_HU
from .shapes import Grid


def _freq(grid: Grid) -> np.ndarray:
    fy = fft.fftfreq(grid.rows, d=grid.row_mm)[:, None]
    fx = fft.rfftfreq(grid.cols, d=grid.col_mm)[None, :]
    return np.sqrt(fx * fx + fy * fy).astype(np.float32)  # cycles/mm


def kernel_filters(grid: Grid, sharpness: float, lowfreq: float = 0.2,
                   streak: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(MTF, sqrt(NPS)) on the rfft grid for this kernel.

    The noise spectrum is a filtered-back-projection ramp f·MTF(f)² (fine grain, negative
    correlation at 2 pixels) plus a share ``lowfreq`` of blotchy low-frequency noise
    (correlation length ~3 mm): measured on the real Pancreas-CT slice, fat-ROI noise keeps
    a positive autocorrelation out to 3 pixels (0.44, 0.24, 0.22) that a pure ramp lacks.
    """
    f = _freq(grid)
    sigma_mm = 0.3 + 0.5 * (1.0 - sharpness)  # PSF Gaussian SD (MTF50 ~3-6 lp/cm)
    # coarse pixels come from downsampled exports, which average neighbouring pixels
    sigma_mm = math.hypot(sigma_mm, 0.35 * max(grid.px - 0.8, 0.0))
    mtf = np.exp(-2.0 * (math.pi * sigma_mm * f) ** 2)
    # sharp kernels: mild edge enhancement (MTF bump at mid frequencies)
    mtf = mtf * (1.0 + 0.35 * sharpness * np.exp(-((f - 0.35) / 0.15) ** 2))
    ramp = (f + 0.02) * mtf**2
    low = np.exp(-2.0 * (math.pi * 3.0 * f) ** 2)
    ramp /= ramp.sum()
    low /= low.sum()
    parts = (1.0 - lowfreq) * ramp + lowfreq * low
    if streak > 0:
        # lateral streaks (photon starvation through a wide body): power at fx ≈ 0, any fy
        fy = np.abs(fft.fftfreq(grid.rows, d=grid.row_mm))[:, None]
        fx = fft.rfftfreq(grid.cols, d=grid.col_mm)[None, :]
        st = np.exp(-((fx / 0.01) ** 2)) * (fy + 0.02) * mtf**2
        st /= st.sum()
        parts = (1.0 - streak) * parts + streak * st
    nps_sqrt = np.sqrt(parts)
    return mtf.astype(np.float32), nps_sqrt.astype(np.float32)


def metal_streaks(grid: Grid, centres: list[tuple[float, float]], rng: np.random.Generator) -> np.ndarray:
    """Bright and dark streaks radiating from metal (beam hardening / photon starvation)."""
    out = np.zeros((grid.rows, grid.cols), dtype=np.float32)
    if not centres:
        return out
    x = grid.xs()[None, :]
    y = grid.ys()[:, None]
    cx = float(np.mean([c[0] for c in centres]))
    cy = float(np.mean([c[1] for c in centres]))
    for _ in range(int(rng.integers(6, 14))):
        ang = rng.uniform(0, math.pi)
        amp = rng.uniform(80, 350) * (1 if rng.random() < 0.4 else -1)
        w = rng.uniform(1.0, 4.0)
        d = np.abs(-(x - cx) * math.sin(ang) + (y - cy) * math.cos(ang))
        along = np.abs((x - cx) * math.cos(ang) + (y - cy) * math.sin(ang))
        out += amp * np.exp(-((d / w) ** 2)) * np.exp(-along / 120.0)
    # dark band between the two outermost metal objects (photon starvation)
    if len(centres) >= 2:
        (x1, y1), (x2, y2) = centres[0], centres[-1]
        vx, vy = x2 - x1, y2 - y1
        L = math.hypot(vx, vy) + 1e-6
        d = np.abs(-(x - x1) * vy / L + (y - y1) * vx / L)
        out -= rng.uniform(80, 250) * np.exp(-((d / 3.0) ** 2))
    return out


def acquire(
    clean: np.ndarray,
    grid: Grid,
    body: np.ndarray | None,
    *,
    noise_sd: float,
    sharpness: float,
    rng: np.random.Generator,
    air_noise_ratio: float = 0.5,
    filters: tuple[np.ndarray, np.ndarray] | None = None,
    lowfreq: float = 0.2,
    streak: float = 0.0,
) -> np.ndarray:
    """Blur ``clean`` by the kernel's MTF and add kernel-shaped noise; returns float32 HU."""
    mtf, nps = filters if filters is not None else kernel_filters(grid, sharpness, lowfreq, streak)
    img = fft.irfft2(fft.rfft2(clean) * mtf, s=clean.shape).astype(np.float32)
    if noise_sd > 0:
        n = correlated_noise(grid, nps, rng)
        if body is not None:
            amp = air_noise_ratio + (1.0 - air_noise_ratio) * body
            n *= amp
        img += noise_sd * n
    return img


def correlated_noise(grid: Grid, nps_sqrt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit-SD stationary noise with the given spectrum shape."""
    w = rng.standard_normal((grid.rows, grid.cols), dtype=np.float32)
    n = fft.irfft2(fft.rfft2(w) * nps_sqrt, s=(grid.rows, grid.cols)).astype(np.float32)
    sd = float(n.std()) or 1.0
    return n / sd


def finish(img: np.ndarray, grid: Grid, recon_circle: bool) -> np.ndarray:
    """Quantise to integer HU, clip to the 12-bit CT range, blank outside the recon circle."""
    out = np.rint(img)
    np.clip(out, AIR_HU, 3071, out=out)
    if recon_circle:
        x = (np.arange(grid.cols) - (grid.cols - 1) / 2.0)[None, :]
        y = (np.arange(grid.rows) - (grid.rows - 1) / 2.0)[:, None]
        rad = min(grid.rows, grid.cols) / 2.0
        out[(x * x + y * y) > rad * rad] = AIR_HU
    return out.astype(np.float32)


def apply_cupping(hu: np.ndarray, grid: Grid, frame, info: dict, cupping_hu: float) -> None:
    """Beam-hardening cupping, in place: the body centre reads a little low.

    ``frame`` is the body's ``anatomy.Frame`` (centre ``yc``, half-axes ``a``, ``b``) and
    ``info`` what ``Subject.paint_soft`` returned (``body`` mask and its ``region``).
    Shared by single slices and volumes so both render the same physics.
    """
    body = info.get("body")
    if body is None or cupping_hu <= 0:
        return
    rs, cs = info["region"]
    y = grid.ys(rs.start, rs.stop)[:, None] - frame.yc
    x = grid.xs(cs.start, cs.stop)[None, :]
    rr = (x / frame.a) ** 2 + (y / frame.b) ** 2
    hu[rs, cs] -= cupping_hu * np.clip(1.0 - rr, 0, 1) * body[rs, cs]
