"""On-the-fly augmentation of cached model-grid slices, batched in torch.

Domain randomisation in the spirit of SynthSeg: geometry (rotation, anisotropic scale — which
also stands in for body size and pixel spacing —, translation, elastic warping) and
acquisition (HU shift/scale, noise of random strength and grain, blur as from soft kernels or
thick slices, low-resolution resampling as in downsampled research exports, gamma,
cut-outs as from streaks or missing data) vary so the network keys on anatomy and HU, not on
one phantom's rendering. HU changes are kept small on purpose: the labels follow the Alberta
HU windows (muscle −29…150, fat −190…−30), so a large HU shift would make the labels wrong.

Left/right flips are off by default: the abdomen is not symmetric (liver right, descending
colon left) and real scans are always displayed the same way round.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from sarcoscope.segment.onnx_model import GridSpec
from sarcoscope.tissues import AIR_HU
from sarcoscope.train.config import AugmentConfig


def _u(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _gaussian_blur(x: torch.Tensor, sigma_px: torch.Tensor) -> torch.Tensor:
    """Blur each (1, H, W) sample of ``x`` (B, 1, H, W) with its own sigma (0 = unchanged)."""
    b = x.shape[0]
    radius = max(1, int(math.ceil(3 * float(sigma_px.max()))))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    s = sigma_px.to(x.device).clamp(min=1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None, :] / s) ** 2)
    k = k / k.sum(dim=1, keepdim=True)
    y = x.reshape(1, b, *x.shape[2:])
    y = F.pad(y, (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, k[:, None, None, :], groups=b)
    y = F.conv2d(y, k[:, None, :, None], groups=b)
    return y.reshape_as(x)


def _body_extent(labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and half-size (rows, cols) in pixels of the labelled region of each canvas."""
    lab = np.asarray(labels) > 0
    b, s = lab.shape[0], lab.shape[-1]
    centre = np.full((b, 2), (s - 1) / 2, dtype=np.float32)
    half = np.zeros((b, 2), dtype=np.float32)
    for axis, other in ((0, 2), (1, 1)):
        any_ = lab.any(axis=other)  # (b, s) along rows (axis 0) or columns (axis 1)
        for i in range(b):
            idx = np.flatnonzero(any_[i])
            if idx.size:
                centre[i, axis] = (idx[0] + idx[-1]) / 2
                half[i, axis] = (idx[-1] - idx[0] + 1) / 2
    return torch.from_numpy(centre), torch.from_numpy(half)


def windows_to_channels(hu: torch.Tensor, spec: GridSpec) -> torch.Tensor:
    """(B, 1, H, W) HU → (B, n_windows, H, W) in -1..1, as ``onnx_model.window_channels``."""
    chans = []
    for lo, hi in spec.windows:
        centre, half = (hi + lo) / 2.0, (hi - lo) / 2.0
        chans.append(((hu - centre) / half).clamp(-1.0, 1.0))
    return torch.cat(chans, dim=1)


def center_crop_batch(
    hu: np.ndarray, labels: np.ndarray, spec: GridSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """No augmentation: whole canvases as network input (validation)."""
    x = torch.from_numpy(np.asarray(hu, dtype=np.float32))[:, None]
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return windows_to_channels(x, spec), y


def augment_batch(
    hu: np.ndarray,
    labels: np.ndarray,
    crop: int,
    spec: GridSpec,
    cfg: AugmentConfig,
    g: torch.Generator,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch of canvases (B, S, S) into network input (B, C, crop, crop) and labels.

    ``g`` (a CPU generator) is the only source of randomness, so a seeded run is reproducible.
    The small random parameters are drawn from it on the CPU; the image work runs on
    ``device``, where the per-pixel noise comes from a generator seeded from ``g`` (on the
    CPU the noise is drawn from ``g`` itself, as before).
    """
    dev = torch.device(device)
    b, s = hu.shape[0], hu.shape[-1]
    x = torch.from_numpy(np.asarray(hu, dtype=np.float32)).to(dev)[:, None] - AIR_HU  # air = 0 for padding
    y = torch.from_numpy(np.asarray(labels, dtype=np.float32)).to(dev)[:, None]

    # --- geometry: output pixel (relative to crop centre) -> input pixel (relative to canvas centre)
    angle = _u(g, b, -1, 1) * math.radians(cfg.rotate_deg)
    zoom = torch.exp(_u(g, b, math.log(cfg.scale_range[0]), math.log(cfg.scale_range[1])))
    aspect = torch.exp(_u(g, b, math.log(cfg.aspect_range[0]), math.log(cfg.aspect_range[1])))
    zx, zy = zoom * aspect.sqrt(), zoom / aspect.sqrt()
    flip = torch.where(torch.rand(b, generator=g) < cfg.flip_lr_p, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(b, 2, 3)
    ratio = crop / s
    theta[:, 0, 0] = cos / zx * flip * ratio
    theta[:, 0, 1] = -sin / zy * ratio
    theta[:, 1, 0] = sin / zx * flip * ratio
    theta[:, 1, 1] = cos / zy * ratio
    # crop centre: anywhere the crop still overlaps the body's extent, plus a small shift
    centre_rc, half_rc = _body_extent(labels)
    for axis, col in ((1, 0), (0, 1)):  # theta row 0 moves x (columns), row 1 moves y (rows)
        view = crop / (zx if col == 0 else zy)
        reach = (half_rc[:, axis] - view / 2).clamp(min=0) + cfg.shift_frac * crop
        offset = centre_rc[:, axis] - (s - 1) / 2 + _u(g, b, -1, 1) * reach
        theta[:, col, 2] = offset / (s / 2)
    grid = F.affine_grid(theta.to(dev), [b, 1, crop, crop], align_corners=False)
    if cfg.elastic_p > 0:
        amp = (torch.rand(b, generator=g) < cfg.elastic_p).float() * cfg.elastic_mm / spec.spacing_mm / (s / 2)
        coarse = torch.randn(b, 2, 5, 5, generator=g) * amp[:, None, None, None]
        field = F.interpolate(coarse, size=(crop, crop), mode="bicubic", align_corners=True)
        grid = grid + field.to(dev).permute(0, 2, 3, 1)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + AIR_HU
    y = F.grid_sample(y, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    # --- acquisition
    if cfg.lowres_p > 0:
        pick = (torch.rand(b, generator=g) < cfg.lowres_p).to(dev)
        if bool(pick.any()):
            f = float(_u(g, 1, *cfg.lowres_factor))
            small = max(8, int(round(crop / f)))
            lo = F.interpolate(x[pick], size=(small, small), mode="area")
            x[pick] = F.interpolate(lo, size=(crop, crop), mode="bilinear", align_corners=False)
    if cfg.blur_p > 0:
        sig = _u(g, b, *cfg.blur_sigma_px) * (torch.rand(b, generator=g) < cfg.blur_p).float()
        if bool((sig > 0).any()):
            x = _gaussian_blur(x, sig)
    scale = 1.0 + torch.randn(b, generator=g) * cfg.hu_scale_sd
    shift = torch.randn(b, generator=g) * cfg.hu_shift_sd
    x = x * scale.to(dev)[:, None, None, None] + shift.to(dev)[:, None, None, None]
    if cfg.noise_p > 0:
        sd = _u(g, b, *cfg.noise_sd_hu) * (torch.rand(b, generator=g) < cfg.noise_p).float()
        if dev.type == "cpu":
            noise = torch.randn(x.shape, generator=g)
        else:
            g_dev = torch.Generator(device=dev).manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))
            noise = torch.randn(x.shape, generator=g_dev, device=dev)
        grain = _u(g, b, 0.0, 1.0)
        smooth = _gaussian_blur(noise, grain)
        smooth = smooth / smooth.std(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6)
        x = x + smooth * sd.to(dev)[:, None, None, None]
    if cfg.cutout_p > 0:
        for i in range(b):
            if float(torch.rand(1, generator=g)) >= cfg.cutout_p:
                continue
            for _ in range(int(torch.randint(1, cfg.cutout_max + 1, (1,), generator=g))):
                h, w = (int(v) for v in torch.randint(4, max(5, crop // 8), (2,), generator=g))
                r0 = int(torch.randint(0, crop - h, (1,), generator=g))
                c0 = int(torch.randint(0, crop - w, (1,), generator=g))
                x[i, 0, r0 : r0 + h, c0 : c0 + w] = float(_u(g, 1, -300.0, 300.0))
    chans = windows_to_channels(x, spec)
    if cfg.gamma_p > 0:
        gam = torch.where(
            torch.rand(b, generator=g) < cfg.gamma_p,
            torch.exp(_u(g, b, math.log(cfg.gamma_range[0]), math.log(cfg.gamma_range[1]))),
            torch.ones(b),
        )
        chans = ((chans + 1) / 2).clamp(min=0) ** gam.to(dev)[:, None, None, None] * 2 - 1
    return chans.contiguous(), y[:, 0].long()
