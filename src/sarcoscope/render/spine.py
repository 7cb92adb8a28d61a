"""spine.png: sagittal and coronal reformats through the spine, vertebrae labelled, L3 marked.

The picture a user checks at a glance that the right vertebra was counted: bone window,
superior up; sagittal with anterior on the left, coronal with the patient's right on the image
left (radiological convention). Reformats are read straight from the volume array (a few
hundred kilobytes), so rendering stays well under a second even for a 512×512×400 series.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from sarcoscope.errors import ExportError
from sarcoscope.types import CTVolume, SliceChoice

log = logging.getLogger(__name__)

BONE_WINDOW = (-450.0, 1050.0)  # level 300, width 1500
SAGITTAL_SLAB_MM = 4.0  # half-width of the max-intensity slab around the midline
CORONAL_SLAB_MM = (-10.0, 35.0)  # from the body centre: body, pedicles, transverse processes, ribs
DISPLAY_MM = 1.5  # pixel size of the reformats as drawn
CROP_AP_MM = 90.0  # sagittal field: ± this around the vertebral bodies
CROP_LR_MM = 120.0  # coronal field: ± this around the midline


def _spine_position(volume: CTVolume) -> tuple[int, np.ndarray]:
    """Midline column i and the body centre row j per slice, in full-resolution indices."""
    from sarcoscope.locate.column import find_column, make_work

    # A 4 mm grid is plenty to place a picture and costs a quarter of the finder's 2 mm one.
    work = make_work(volume, spacing_mm=4.0)
    column = find_column(work)
    n_j, n_i = volume.hu.shape[1], volume.hu.shape[2]
    if column is None:
        return n_i // 2, np.full(volume.n_slices, n_j // 2)
    i_full = min(n_i - 1, column.i_c * work.step_i)
    j_full = np.clip(column.j_body * work.step_j, 0, n_j - 1)
    # Smooth the body track so the curved coronal plane does not jitter at the discs.
    if j_full.size >= 5:
        kernel = np.ones(5) / 5
        j_full = np.rint(np.convolve(np.pad(j_full, 2, mode="edge"), kernel, "valid")).astype(int)
    return int(i_full), j_full


def render_spine(volume: CTVolume, choice: SliceChoice, path: Path) -> Path:
    """Write spine.png for ``choice`` on ``volume`` and return its path.

    Raises
    ------
    ExportError
        When the file cannot be written (missing folder, permission, disk full).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    path = Path(path)
    i_c, j_body = _spine_position(volume)
    # Display grid of about 1.5 mm: finer is invisible at this figure size and costs time.
    dz0, dj0, di0 = volume.spacing_mm
    sk = max(1, int(round(DISPLAY_MM / dz0)))
    sj = max(1, int(round(DISPLAY_MM / dj0)))
    si = max(1, int(round(DISPLAY_MM / di0)))
    hu = volume.hu[::sk, ::sj, ::si]
    dz, dj, di = dz0 * sk, dj0 * sj, di0 * si
    n_k, n_j, n_i = hu.shape
    i_c = min(n_i - 1, i_c // si)
    j_body = np.clip(j_body[::sk] // sj, 0, n_j - 1)
    ks_full = np.arange(0, volume.n_slices, sk)

    half_i = max(0, int(round(SAGITTAL_SLAB_MM / di)))
    # Crop to the spine and what hangs on it: the picture is about counting vertebrae.
    j_mid_px = int(np.median(j_body))
    js = slice(max(0, j_mid_px - int(CROP_AP_MM / dj)), min(n_j, j_mid_px + int(CROP_AP_MM / dj)))
    is_ = slice(max(0, i_c - int(CROP_LR_MM / di)), min(n_i, i_c + int(CROP_LR_MM / di)))
    sag = hu[:, js, max(0, i_c - half_i) : i_c + half_i + 1].max(axis=2)  # (k, j)
    a0 = int(round(CORONAL_SLAB_MM[0] / dj))
    a1 = int(round(CORONAL_SLAB_MM[1] / dj))
    cor = np.empty((n_k, is_.stop - is_.start), dtype=hu.dtype)
    for k in range(n_k):
        lo, hi = max(0, j_body[k] + a0), min(n_j, j_body[k] + a1 + 1)
        block = hu[k, lo:hi, is_] if hi > lo else hu[k, min(n_j - 1, max(0, lo)) : min(n_j, max(1, lo + 1)), is_]
        cor[k] = block.max(axis=0)

    z0, z1 = volume.z_mm(int(ks_full[0])), volume.z_mm(int(ks_full[-1]))
    z_lo, z_hi = z0 - dz / 2, z1 + dz / 2
    j_lo_mm, j_hi_mm = js.start * dj, js.stop * dj
    i_lo_mm, i_hi_mm = is_.start * di, is_.stop * di
    width_mm = (j_hi_mm - j_lo_mm) + (i_hi_mm - i_lo_mm)
    height_mm = max(z_hi - z_lo, 1.0)
    fig_w = 6.5
    fig_h = float(np.clip(fig_w * height_mm / width_mm + 0.9, 2.6, 9.0))
    fig = Figure(figsize=(fig_w, fig_h), dpi=80)
    ax_s, ax_c = fig.subplots(
        1, 2, gridspec_kw={"width_ratios": [j_hi_mm - j_lo_mm, i_hi_mm - i_lo_mm]}
    )
    fig.subplots_adjust(left=0.09, right=0.99, bottom=0.03, top=1 - 0.55 / fig_h, wspace=0.04)
    vmin, vmax = BONE_WINDOW
    # Sagittal: columns are j (anterior → posterior) → anterior on the left.
    ax_s.imshow(sag, cmap="gray", vmin=vmin, vmax=vmax, origin="lower",
                extent=(j_lo_mm, j_hi_mm, z_lo, z_hi), aspect="equal", interpolation="nearest")
    # Coronal: columns are i (patient right → left) → patient's right on the image left.
    ax_c.imshow(cor, cmap="gray", vmin=vmin, vmax=vmax, origin="lower",
                extent=(i_lo_mm, i_hi_mm, z_lo, z_hi), aspect="equal", interpolation="nearest")
    ax_s.set_title("sagittal  A ← → P", fontsize=8)
    ax_c.set_title("coronal  R ← → L", fontsize=8)
    ax_s.set_ylabel("z (mm), superior ↑", fontsize=7)

    j_mid = j_mid_px * dj
    # Labels on the sagittal view (L3 on both); endplates as one line collection.
    edges_x: list[float] = []
    edges_y: list[float] = []
    for v in choice.vertebrae:
        is_l3 = v.name == "L3"
        color = "#ffd400" if is_l3 else "#7fd7ff"
        ax_s.text(max(j_lo_mm + 2, j_mid - 30.0), v.z_mm, v.name, color=color, fontsize=7,
                  ha="right", va="center", fontweight="bold")
        if is_l3:
            ax_c.text(i_lo_mm + 3.0, v.z_mm, v.name, color=color, fontsize=7,
                      ha="left", va="center", fontweight="bold")
        for z_edge in (v.z_top_mm, v.z_bottom_mm):
            if z_edge is not None:
                edges_x += [j_mid - 25, j_mid + 25, np.nan]
                edges_y += [z_edge, z_edge, np.nan]
    if edges_x:
        ax_s.plot(edges_x, edges_y, color="#7fd7ff", lw=0.5, alpha=0.6)
    for z in choice.z_mm:
        for ax in (ax_s, ax_c):
            ax.axhline(z, color="#ff3030", lw=1.0 if len(choice.indices) == 1 else 0.6)
    conf = "" if choice.confidence is None else f", confidence {choice.confidence:.2f}"
    label = choice.definition or choice.method
    title = f"{label}: slice {choice.indices[0]} (z {choice.z_mm[0]:.1f} mm){conf}"
    if choice.warnings:
        title += f" — {len(choice.warnings)} warning(s)"
    fig.suptitle(title, fontsize=8, color="#b00000" if choice.warnings else "black")
    for ax in (ax_s, ax_c):
        ax.tick_params(labelsize=7)
        ax.set_xticks([])
    ax_c.set_yticks([])
    try:
        fig.savefig(path, format="png")
    except OSError as exc:
        raise ExportError(f"could not write {path}: {exc}; check the folder exists and is writable") from exc
    log.info("wrote %s", path)
    return path
