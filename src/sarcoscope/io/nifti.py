"""NIfTI (.nii / .nii.gz) → display-oriented ``CTVolume``.

NIfTI affines are RAS; they are converted to LPS here (the one convention inside sarcoscope).
The stored array keeps nibabel's axis order (x, y, z as in the file); ``SourceGrid`` holds that
shape and the file's own affine so label maps can be written back onto the input grid, and
``--slices`` counts along the stored third axis.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from sarcoscope.errors import InputError
from sarcoscope.io.geometry import check_axial_plane, display_mapping, to_display
from sarcoscope.io.pixels import IMPOSSIBLE_HU, clean_hu
from sarcoscope.tissues import AIR_HU
from sarcoscope.types import CTVolume, SeriesInfo, SourceGrid

logger = logging.getLogger(__name__)

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_voxels(img, shape: tuple[int, ...], integral: bool, path: Path) -> np.ndarray:
    """The stored voxel array (unscaled integers or float32 HU).

    nibabel reads voxels lazily, after the header: a truncated or corrupt file only fails
    here, with ``EOFError`` (gzip stream ends early), ``OSError`` (fewer bytes than the header
    announces, bad gzip CRC), ``zlib.error`` or ``ValueError``. ``EOFError`` in particular must
    not escape: the CLI framework would report it as a user abort.
    """
    try:
        if integral:
            return np.asarray(img.dataobj.get_unscaled()).reshape(shape)
        return np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except (EOFError, OSError, zlib.error, ValueError) as exc:
        raise InputError(
            f"{path}: the NIfTI file is truncated or damaged: its image data cannot be read "
            f"({_first_line(exc)}); re-export or re-download it"
        ) from exc


def read_nifti(path: Path) -> CTVolume:
    """Read a 3-D CT NIfTI in HU (a 4-D file with a single volume is accepted)."""
    import nibabel as nib

    path = Path(path)
    what = str(path)
    try:
        img = nib.load(str(path))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib errors…
        raise InputError(
            f"{path}: cannot read this NIfTI file ({_first_line(exc)}); it is truncated, damaged or "
            "not NIfTI — re-export or re-download it"
        ) from exc
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    elif len(shape) == 2:
        shape = (shape[0], shape[1], 1)
    if len(shape) != 3:
        raise InputError(
            f"{path}: NIfTI has shape {tuple(img.shape)}; sarcoscope needs one 3-D CT volume "
            "(split 4-D files into single volumes first)"
        )
    if min(shape) < 1:
        raise InputError(f"{path}: NIfTI is empty (shape {shape})")
    affine_ras = np.asarray(img.affine, dtype=float)
    warnings: list[str] = []
    header = img.header
    if hasattr(header, "get_sform"):
        _, sform_code = header.get_sform(coded=True)
        _, qform_code = header.get_qform(coded=True)
        if not sform_code and not qform_code:
            warnings.append(
                "the NIfTI has neither sform nor qform: its orientation is unknown and was assumed "
                "from the voxel sizes alone — check that anterior is up in the overlay"
            )
    lps = RAS_TO_LPS @ affine_ras
    steps = lps[:3, :3].T  # row a: LPS step along stored axis a
    mapping = display_mapping(steps, lps[:3, 3], shape, what)  # type: ignore[arg-type]
    oblique = check_axial_plane(np.cross(mapping.affine[:3, 0], mapping.affine[:3, 1]), what)
    if oblique:
        warnings.append(oblique)
    if mapping.axes[0] != 2:
        warnings.append(
            f"the file's third axis runs along the {('left-right', 'anterior-posterior', 'body')[int(np.argmax(np.abs(steps[2])))]} "
            "direction: it was reoriented to axial slices; --slices cannot count along it"
        )

    dtype = img.get_data_dtype()
    slope, inter = img.dataobj.slope, img.dataobj.inter
    slope = 1.0 if slope is None or not np.isfinite(slope) else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    integral = np.issubdtype(dtype, np.integer) and slope.is_integer() and inter.is_integer()
    out_dtype = np.dtype(np.int16) if integral else np.dtype(np.float32)
    stored = _read_voxels(img, shape, integral, path)
    display = to_display(stored, mapping)
    out = np.empty(display.shape, dtype=out_dtype)
    n_pad = 0
    n_inferred = 0
    inferred_values: set[float] = set()
    n_clipped = 0
    info16 = np.iinfo(np.int16)
    for k in range(display.shape[0]):
        if integral:
            hu = display[k].astype(np.int32)
            if slope != 1:
                hu *= int(slope)
            if inter != 0:
                hu += int(inter)
        else:
            hu = np.array(display[k], dtype=np.float32)
        if not integral and not np.all(np.isfinite(hu)):
            raise InputError(f"{path}: slice {k} holds NaN or infinite values; the file is not a CT in HU")
        pad, inferred, value = clean_hu(
            hu, None, f"{path}: display slice {k} is not CT in Hounsfield units or is corrupt"
        )
        if pad is not None:
            hu[pad] = AIR_HU
            n_pad += int(pad.sum())
            n_inferred += inferred
            if value is not None:
                inferred_values.add(value)
        if integral:
            over = (hu < info16.min) | (hu > info16.max)
            if over.any():
                n_clipped += int(over.sum())
                np.clip(hu, info16.min, info16.max, out=hu)
        out[k] = hu
    del stored, display
    if n_inferred:
        warnings.append(
            f"values near {', '.join(f'{v:g}' for v in sorted(inferred_values))} HU, far below air "
            "(padding outside the reconstruction circle) was set to air "
            f"({100 * n_inferred / out.size:.1f}% of voxels)"
        )
    if n_clipped:
        warnings.append(f"{n_clipped} voxel(s) beyond the int16 HU range were clipped (metal?)")
    low = float(out.min())
    if low > -500:
        warnings.append(
            f"minimum value {low:g} is far above air (−1000 HU): this NIfTI may not be in Hounsfield "
            "units (e.g. stored without the −1024 offset); results would be wrong"
        )
    elif low < IMPOSSIBLE_HU:  # pragma: no cover - clean_hu refuses such slices
        warnings.append(f"values down to {low:g} HU")
    for w in warnings:
        logger.info("%s: %s", path, w)
    info = SeriesInfo(
        source_path=str(path),
        format="nifti",
        modality="CT",
        selection_reason="NIfTI file (one volume)",
        warnings=tuple(warnings),
    )
    grid = SourceGrid(shape=shape, affine=affine_ras, axes=mapping.axes, flips=mapping.flips)  # type: ignore[arg-type]
    return CTVolume(
        hu=out,
        affine=mapping.affine,
        series=info,
        source_grid=grid,
        padding_fraction=n_pad / out.size,
    )
