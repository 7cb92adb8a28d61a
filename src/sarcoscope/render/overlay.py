"""``overlay.png``: the analysed slice with the four tissue classes, a legend and the numbers.

The picture a clinician checks before trusting a number: soft-tissue window (W400/L40), classes
coloured semi-transparently (``tissues.TISSUE_INFO`` colours), radiological orientation (the
volume is display-oriented already: anterior up, patient's right on the image left), square
pixels, a 5 cm scale bar, and a side panel with areas, mean HU, SMI, flags with the reference
named, the slice position and the segmenter. Drawn with Pillow only (no matplotlib) so that it
costs a few tens of milliseconds.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sarcoscope.errors import ExportError
from sarcoscope.tissues import TISSUE_INFO, Tissue
from sarcoscope.types import AnalysisResult

WINDOW_HU = (40.0, 400.0)  # (level, width): soft tissue
ALPHA = 0.45
IMAGE_PX = 512  # longest side of the image part
PANEL_PX = 340
BG = (18, 18, 22)
FG = (235, 235, 235)
DIM = (160, 160, 170)


@lru_cache(maxsize=1)
def _dejavu() -> str | None:
    """DejaVu Sans from matplotlib's data (has ², —, …), found without importing matplotlib."""
    import importlib.util

    spec = importlib.util.find_spec("matplotlib")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return str(path)
    return None


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = _dejavu()
    if path is not None:
        try:
            return ImageFont.truetype(path, size=size)
        except OSError:
            pass
    return ImageFont.load_default(size=size)


def _text(s: str) -> str:
    """Pillow's built-in font lacks a few glyphs: spell them out when DejaVu is missing."""
    if _dejavu() is not None:
        return s
    return s.replace("²", "2").replace("—", "-").replace("…", "...").replace("−", "-")


def primary_index(result: AnalysisResult) -> int:
    """The slice the overlay shows by default: the L3 centre when found, else the first asked."""
    indices = result.choice.indices
    if result.choice.method == "auto":
        return int(sorted(indices)[len(indices) // 2])
    return int(indices[0])


def window_to_uint8(hu: np.ndarray, level: float = WINDOW_HU[0], width: float = WINDOW_HU[1]):
    """Map HU to 0..255 grey with the given window."""
    lo = level - width / 2.0
    scaled = (hu.astype(np.float32) - lo) * (255.0 / width)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _compose_slice(hu: np.ndarray, labels: np.ndarray) -> np.ndarray:
    grey = window_to_uint8(hu)
    rgb = np.repeat(grey[:, :, None], 3, axis=2).astype(np.float32)
    lut = np.zeros((256, 3), dtype=np.float32)
    for tissue, info in TISSUE_INFO.items():
        lut[int(tissue)] = info.rgb
    mask = labels > 0
    colours = lut[labels[mask]]
    rgb[mask] = (1.0 - ALPHA) * rgb[mask] + ALPHA * colours
    return rgb.astype(np.uint8)


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def render_overlay_image(result: AnalysisResult, k: int | None = None) -> Image.Image:
    """Build the overlay for display slice ``k`` (one of ``result.choice.indices``)."""
    if k is None:
        k = primary_index(result)
    try:
        pos = result.choice.indices.index(k)
    except ValueError:
        raise ValueError(
            f"slice {k} was not analysed; analysed slices: {result.choice.indices}"
        ) from None
    volume = result.volume
    lm = result.label_maps[pos]
    m = result.measurements[pos]
    hu = volume.slice_hu(k)
    rgb = _compose_slice(hu, lm.labels)

    # Square pixels, longest side IMAGE_PX: what a viewer shows.
    row_mm, col_mm = lm.pixel_spacing_mm
    h_mm, w_mm = rgb.shape[0] * row_mm, rgb.shape[1] * col_mm
    scale = IMAGE_PX / max(h_mm, w_mm)  # px per mm
    size = (max(1, round(w_mm * scale)), max(1, round(h_mm * scale)))
    img = Image.fromarray(rgb, mode="RGB")
    if img.size != size:
        img = img.resize(size, Image.Resampling.BILINEAR)

    canvas = Image.new("RGB", (size[0] + PANEL_PX, max(size[1], 560)), BG)
    canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    small, normal, big = _font(13), _font(15), _font(18)

    # Orientation letters (radiological view) and a 5 cm scale bar.
    w, h = size
    for text, xy, anchor in (("A", (w // 2, 4), "mt"), ("P", (w // 2, h - 4), "mb"),
                             ("R", (6, h // 2), "lm"), ("L", (w - 6, h // 2), "rm")):
        draw.text(xy, text, fill=(255, 255, 0), font=normal, anchor=anchor,
                  stroke_width=2, stroke_fill=(0, 0, 0))
    bar = 50.0 * scale
    draw.line([(12, h - 14), (12 + bar, h - 14)], fill=(255, 255, 255), width=3)
    draw.text((12 + bar / 2, h - 20), "5 cm", fill=(255, 255, 255), font=small, anchor="mb",
              stroke_width=2, stroke_fill=(0, 0, 0))

    # Side panel.
    x = size[0] + 16
    y = 12
    choice = result.choice

    def line(text: str, font=normal, fill=FG, dy: int = 20) -> None:
        nonlocal y
        draw.text((x, y), _text(text), fill=fill, font=font)
        y += dy

    line("sarcoscope — body composition", big, dy=28)
    where = f"slice {k}"
    src = _stored_index(result, k)
    if src is not None and src != k:
        where += f" (file slice {src})"
    line(f"{where},  z = {m.z_mm:+.1f} mm", small, DIM, 18)
    how = {"auto": "L3 found automatically", "manual": "slice chosen by user",
           "single": "single-slice input"}[choice.method]
    if choice.method == "auto":
        conf = _fmt(choice.confidence, 2)
        how += f" ({choice.definition or 'L3'}, confidence {conf})"
    line(how, small, DIM, 26)

    draw.text((x, y), "tissue", fill=DIM, font=small)
    draw.text((x + 205, y), _text("area cm²"), fill=DIM, font=small, anchor="ra")
    draw.text((x + 290, y), "mean HU", fill=DIM, font=small, anchor="ra")
    y += 18
    for tissue in Tissue:
        info = TISSUE_INFO[tissue]
        t = m.tissues.get(info.key)
        draw.rectangle([x, y + 2, x + 12, y + 14], fill=info.rgb)
        label = {"muscle": "Muscle", "imat": "IMAT", "vat": "VAT", "sat": "SAT"}[info.key]
        area = _fmt(t.area_cm2) if t else "n/a"
        mean_hu = _fmt(t.mean_hu) if t else "n/a"
        draw.text((x + 20, y), label, fill=FG, font=normal)
        draw.text((x + 205, y), area, fill=FG, font=normal, anchor="ra")
        draw.text((x + 290, y), mean_hu, fill=FG, font=normal, anchor="ra")
        y += 22
    y += 6
    line(f"SMI: {_fmt(m.smi_cm2_m2)} cm²/m²" + ("" if m.smi_cm2_m2 is not None
                                                else " (height unknown)"), normal)
    line(f"VAT/SAT: {_fmt(m.vat_sat_ratio, 2)}", normal)
    patient = volume.patient
    who = ", ".join(
        p for p in (
            {"M": "male", "F": "female"}.get(patient.sex or "", "sex unknown"),
            f"{patient.height_m * 100:.0f} cm" if patient.height_m else "height unknown",
            f"{patient.weight_kg:g} kg" if patient.weight_kg else "weight unknown",
        )
    )
    line(who, small, DIM, 24)
    line(f"flags ({result.reference}):", normal)
    if not m.flags:
        line("  none evaluable (see result.json)", small, DIM, 18)
    for f in m.flags:
        verdict = "POSITIVE" if f.positive else "negative"
        colour = (255, 120, 100) if f.positive else (150, 220, 150)
        line(f"  {f.name}: {verdict} ({f.value:.1f} vs {f.threshold:g} {f.unit})", small,
             colour, 18)
    y = canvas.size[1] - 40
    seg = result.segmenter
    line(f"segmenter: {seg.name} {seg.version}", small, DIM, 16)
    line("research use — check the coloured outline", small, DIM, 16)
    return canvas


def _stored_index(result: AnalysisResult, k: int) -> int | None:
    grid = result.volume.source_grid
    if result.volume.series.format != "nifti" or grid is None or grid.axes[0] != 2:
        return None
    return grid.shape[2] - 1 - k if grid.flips[0] else k


def render_overlay(result: AnalysisResult, k: int | None, path: Path) -> Path:
    """Write ``overlay.png`` for display slice ``k`` (``None``: :func:`primary_index`)."""
    path = Path(path)
    img = render_overlay_image(result, k)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        img.save(tmp, format="PNG", compress_level=1)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{path}: cannot write the overlay picture ({exc.strerror or exc}).") from exc
    return path
