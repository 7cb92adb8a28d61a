"""Reference masks a hospital brings: Slice-O-Matic ``.tag`` files and NIfTI label maps.

No torch here: ``sarcoscope evaluate`` uses these readers too. Every reader returns masks in
the display orientation of the CT they belong to (see ``types.CTVolume``), with our label
values (1 muscle, 2 IMAT, 3 VAT, 4 SAT) after applying a configurable value map.

Pairing in a fine-tuning folder: for each DICOM file ``X`` (any name, ``.dcm`` or none),
its reference is ``X.tag``, ``<stem>.tag``, ``<stem>.nii.gz`` or ``<stem>.nii`` beside it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarcoscope.errors import InputError
from sarcoscope.types import CTVolume

logger = logging.getLogger(__name__)

#: Alberta-protocol Slice-O-Matic tags → our labels (tag 1 muscle, 2 IMAT, 5 VAT, 7 SAT).
DEFAULT_TAG_MAP: dict[int, int] = {1: 1, 2: 2, 5: 3, 7: 4}
IDENTITY_MAP: dict[int, int] = {1: 1, 2: 2, 3: 3, 4: 4}


def apply_value_map(raw: np.ndarray, value_map: dict[int, int], what: str) -> np.ndarray:
    """Map raw mask values to our labels; values not in the map become background (logged)."""
    lut = np.zeros(256, dtype=np.uint8)
    for src, dst in value_map.items():
        if not (0 <= int(src) <= 255 and 0 <= int(dst) <= 4):
            raise InputError(f"{what}: mapping {src}->{dst} is invalid; source 0..255, target 0..4")
        lut[int(src)] = int(dst)
    if raw.size and (raw.min() < 0 or raw.max() > 255):
        raise InputError(f"{what}: mask values {raw.min()}..{raw.max()} are not label values 0..255")
    raw8 = raw.astype(np.uint8)
    unmapped = sorted(set(np.unique(raw8).tolist()) - set(value_map) - {0})
    if unmapped:
        logger.info("%s: mask values %s are not in the label map and count as background", what, unmapped)
    return lut[raw8]


def read_tag(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Read a Slice-O-Matic ``.tag`` file: ASCII header up to a form feed (0x0C), then one byte
    per pixel in stored row order. Returns raw tag values, (rows, columns) as stored in the DICOM.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read tag file ({exc})") from exc
    ff = data.find(b"\x0c")
    if ff < 0:
        raise InputError(f"{path}: no form-feed byte (0x0C) ending the header; not a Slice-O-Matic .tag file")
    header = data[:ff].decode("ascii", errors="replace")
    body = data[ff + 1 :]
    rows, cols = shape
    m_w = re.search(r"width\s*[:=]?\s*(\d+)", header, re.IGNORECASE)
    m_h = re.search(r"height\s*[:=]?\s*(\d+)", header, re.IGNORECASE)
    if m_w and m_h and (int(m_h.group(1)), int(m_w.group(1))) != (rows, cols):
        raise InputError(
            f"{path}: header says {m_w.group(1)}x{m_h.group(1)} pixels but the image is {cols}x{rows}; "
            "is it paired with the right DICOM file?"
        )
    n = rows * cols
    if len(body) < n:
        raise InputError(
            f"{path}: {len(body)} pixel bytes after the header, the {cols}x{rows} image needs {n}; "
            "the file is truncated or belongs to another image"
        )
    if len(body) > n:
        # some writers pad the header to a block size before the form feed or after it
        body = body[len(body) - n :]
    return np.frombuffer(body, dtype=np.uint8).reshape(rows, cols).copy()


def stored_to_display_2d(mask: np.ndarray, volume: CTVolume) -> np.ndarray:
    """Orient a mask stored like the DICOM rows/columns into the volume's display orientation."""
    grid = volume.source_grid
    if grid is None:
        return mask
    axes, flips = grid.axes, grid.flips
    out = mask.T if axes[1] > axes[2] else mask
    if flips[1]:
        out = out[::-1, :]
    if flips[2]:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def read_nifti_labels(path: Path) -> np.ndarray:
    """A NIfTI label map in display orientation (k, j, i), raw values (uint8)."""
    import nibabel as nib

    from sarcoscope.io.geometry import display_mapping, to_display

    path = Path(path)
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except FileNotFoundError:
        raise InputError(f"{path}: no such reference file") from None
    except Exception as exc:
        raise InputError(f"{path}: cannot read NIfTI label map ({exc})") from exc
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path}: label map has shape {data.shape}; expected 2-D or 3-D")
    if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
        raise InputError(f"{path}: label map holds non-integer values; expected label values")
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps = ras_to_lps @ np.asarray(img.affine, dtype=float)
    mapping = display_mapping(lps[:3, :3].T, lps[:3, 3], tuple(int(s) for s in data.shape), str(path))
    return np.ascontiguousarray(to_display(data, mapping)).astype(np.int64)


@dataclass(frozen=True)
class ReferenceSlice:
    """One annotated display slice of a CT: its index and labels (0..4)."""

    k: int
    labels: np.ndarray


def load_reference(
    ref_path: Path, volume: CTVolume, value_map: dict[int, int] | None = None, *, image_file: Path | None = None
) -> list[ReferenceSlice]:
    """Annotated slices of ``volume`` from a ``.tag`` or NIfTI reference, in display orientation.

    NIfTI: the label map must cover the same slices as the CT (or be a single slice for a
    single-slice CT); every slice with labels is returned. ``.tag``: one slice, the DICOM file
    ``image_file`` (or the volume's only slice).
    """
    ref_path = Path(ref_path)
    name = ref_path.name.lower()
    rows, cols = volume.hu.shape[1:]
    if name.endswith(".tag"):
        vmap = value_map or DEFAULT_TAG_MAP
        k = 0
        if volume.n_slices > 1:
            if image_file is None or not volume.slice_files:
                raise InputError(f"{ref_path}: a .tag file annotates one DICOM file; say which (multi-slice series)")
            files = [Path(f).resolve() for f in volume.slice_files]
            try:
                k = files.index(Path(image_file).resolve())
            except ValueError:
                raise InputError(f"{ref_path}: its image {image_file} is not part of the series read") from None
        grid = volume.source_grid
        stored_shape = (grid.shape[1], grid.shape[2]) if grid is not None else (rows, cols)
        raw = read_tag(ref_path, stored_shape)
        labels = apply_value_map(stored_to_display_2d(raw, volume), vmap, str(ref_path))
        return [ReferenceSlice(k, labels)]
    if name.endswith((".nii", ".nii.gz")):
        vmap = value_map or IDENTITY_MAP
        data = read_nifti_labels(ref_path)
        if data.shape[1:] != (rows, cols) or data.shape[0] not in (1, volume.n_slices):
            raise InputError(
                f"{ref_path}: label map of {data.shape} (slices, rows, columns after orientation) does not match "
                f"the CT {volume.hu.shape}; export the mask on the CT's own grid"
            )
        out = []
        for k in range(data.shape[0]):
            if np.any(data[k]):
                out.append(ReferenceSlice(k if data.shape[0] > 1 else 0, apply_value_map(data[k], vmap, str(ref_path))))
        if not out:
            raise InputError(f"{ref_path}: the label map is empty (no labelled pixel)")
        return out
    raise InputError(f"{ref_path}: unknown reference format; use a Slice-O-Matic .tag or a NIfTI label map (.nii/.nii.gz)")


def find_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, reference) pairs in a fine-tuning folder (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; --data needs a folder of DICOM slices with reference masks")
    pairs = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        low = f.name.lower()
        if low.endswith((".tag", ".nii", ".nii.gz", ".json", ".csv", ".txt", ".md")):
            continue
        stem = f.name[: -len(f.suffix)] if f.suffix.lower() == ".dcm" else f.name
        for cand in (f.with_name(f.name + ".tag"), f.with_name(stem + ".tag"),
                     f.with_name(stem + ".nii.gz"), f.with_name(stem + ".nii")):
            if cand.is_file():
                pairs.append((f, cand))
                break
    if not pairs:
        raise InputError(
            f"{folder}: no image with a reference mask found; put X.dcm beside X.dcm.tag, X.tag or X.nii.gz"
        )
    return pairs
