"""Reference masks a hospital brings: Slice-O-Matic ``.tag`` files, NIfTI label maps, folders of
per-class NIfTI masks and DICOM SEG (read in ``train.seg_reference``).

No torch here: ``sarcoscope evaluate`` uses these readers too. ``load_reference`` is the one
entry point for every format; it returns masks in the display orientation of the CT they
belong to (see ``types.CTVolume``), with our label values (1 muscle, 2 IMAT, 3 VAT, 4 SAT)
after applying a configurable value map, and says which tissues the reference annotates.

Pairing in a fine-tuning folder: for each DICOM file ``X`` (any name, ``.dcm`` or none),
its reference is ``X.tag``, ``<stem>.tag``, ``<stem>.nii.gz`` or ``<stem>.nii`` beside it.
Images without a reference and references without an image are listed (``scan_pairs``).

NIfTI references (label maps and per-class masks) must lie voxel for voxel on their CT's grid:
shape *and* header geometry are checked where they are read (``check_on_ct_grid``), so a mask
shifted or flipped by its header is refused by ``evaluate`` and by fine-tuning alike.

Mask values that the value map does not name are refused, in ``train`` and ``evaluate`` alike:
a hospital validating the model cites Dice and area agreement, and a reference class turned
silently into background (SAT stored as tag 9, or a VAT/SAT label map read with a tag map)
makes those numbers wrong without any sign. The message names the file, the values and their
pixel counts, and how to map them (``0`` ignores a value on purpose). DICOM SEG references
already refuse unknown segments the same way (``train.seg_reference``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarcoscope.errors import GeometryError, InputError
from sarcoscope.tissues import TISSUE_INFO, Tissue
from sarcoscope.types import CTVolume

logger = logging.getLogger(__name__)

#: Alberta-protocol Slice-O-Matic tags → our labels (tag 1 muscle, 2 IMAT, 5 VAT, 7 SAT).
DEFAULT_TAG_MAP: dict[int, int] = {1: 1, 2: 2, 5: 3, 7: 4}
IDENTITY_MAP: dict[int, int] = {1: 1, 2: 2, 3: 3, 4: 4}


#: What to do about unmapped values, when the caller has nothing more specific to say.
MAP_HINT = (
    "say what each value is with --label-map SOURCE=TARGET (targets 1 muscle, 2 IMAT, 3 VAT, 4 SAT; "
    "e.g. 9=4 if 9 is SAT), or map it to 0 to ignore it on purpose; a label map that already holds "
    "sarcoscope's labels 1-4 needs no --label-map"
)


def format_value_map(value_map: dict[int, int]) -> str:
    """``{1: 1, 5: 3}`` → ``1=1,5=3`` (the ``--label-map`` syntax)."""
    return ",".join(f"{k}={v}" for k, v in sorted(value_map.items()))


def apply_value_map(raw: np.ndarray, value_map: dict[int, int], what: str, *, hint: str = MAP_HINT) -> np.ndarray:
    """Map raw mask values to our labels 0..4.

    A non-zero value the map does not name raises ``InputError`` (file, values, pixel counts,
    ``hint``) instead of becoming background: see the module docstring for why.
    """
    lut = np.zeros(256, dtype=np.uint8)
    for src, dst in value_map.items():
        if not (0 <= int(src) <= 255 and 0 <= int(dst) <= 4):
            raise InputError(f"{what}: mapping {src}->{dst} is invalid; source 0..255, target 0..4")
        lut[int(src)] = int(dst)
    if raw.size and (raw.min() < 0 or raw.max() > 255):
        raise InputError(f"{what}: mask values {raw.min()}..{raw.max()} are not label values 0..255")
    raw8 = raw.astype(np.uint8)
    counts = np.bincount(raw8.ravel(), minlength=256)  # linear time, unlike np.unique's sort
    unmapped = [(int(v), int(counts[v])) for v in np.flatnonzero(counts) if v != 0 and int(v) not in value_map]
    if unmapped:
        listed = ", ".join(f"{v} ({c} pixels)" for v, c in unmapped)
        raise InputError(
            f"{what}: mask values {listed} are not in the label map {format_value_map(value_map)}; "
            f"they would count as background and make the numbers wrong. To fix: {hint}"
        )
    return lut[raw8]


#: Bytes a writer pads with between the header's form feed and the pixels.
TAG_PADDING = b"\x00 \t\r\n"


def read_tag(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Read a Slice-O-Matic ``.tag`` file: ASCII header up to a form feed (0x0C), then one byte
    per pixel in stored row order. Returns raw tag values, (rows, columns) as stored in the DICOM.

    The pixels are the last rows x columns bytes of the file. Some writers pad the header to a
    block size after the form feed, so the pixel part may be longer than the image; the extra
    bytes are accepted only when both hold:

    * the bytes between the form feed and the last rows x columns bytes are padding (NUL or
      ASCII whitespace): anything else is part of a larger image (a 512x512 tag paired with a
      320x320 slice) and reading its tail would misplace every pixel;
    * the file's last as-many bytes are background (0): data appended *after* the pixels (a
      checksum, a second layer) looks exactly like leading padding when the image's top rows are
      background, as on every CT, and taking the tail would shift every pixel by that many bytes;
      a file that ends in non-zero bytes is refused. When both ends are zero, the padding is
      taken to sit after the form feed, where the padding writers put it (no content can tell it
      from zeros appended at the end).

    A ``width``/``height`` in the header must state this image's size (a tag drawn on another
    image is refused whatever its length), but it says nothing about where the pixels start, so
    it does not decide the rules above. Shorter pixel parts are refused (truncated file).
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
    extra = len(body) - n
    advice = ("Export the tag again from this image in Slice-O-Matic, or pair it with the image it was "
              "drawn on")
    if extra < 0:
        raise InputError(
            f"{path}: {len(body)} pixel bytes after the header, but the paired {rows} rows x {cols} columns "
            f"image needs {n}; the file is truncated or belongs to another image. {advice}"
        )
    if extra:
        side = int(round(len(body) ** 0.5))
        guess = f" (that is a {side}x{side} image)" if side * side == len(body) else ""
        what = (f"{path}: {len(body)} pixel bytes after the header{guess}, but the paired {rows} rows x {cols} "
                f"columns image needs {n}: {extra} bytes too many")
        lead = body[:extra]
        if lead.translate(None, TAG_PADDING):
            raise InputError(
                f"{what}, and those before the last {n} are not padding (NUL or whitespace) but pixel data: "
                f"the tag belongs to a larger image. {advice}"
            )
        if body[n:].count(0) != extra:
            raise InputError(
                f"{what}, and the file ends in non-zero bytes: trailing data after the pixels cannot be told "
                f"apart from the image's last pixels, so reading it would shift every pixel. {advice}"
            )
        logger.info("%s: %d padding bytes after the header's form feed skipped", path, extra)
    return np.frombuffer(body[extra:], dtype=np.uint8).reshape(rows, cols).copy()


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


@dataclass(frozen=True)
class NiftiLabels:
    """A NIfTI label map as read: raw values in display orientation (k, j, i), the display
    affine (LPS mm over (i, j, k, 1), as ``CTVolume.affine``) and whether the header states an
    orientation (sform or qform)."""

    values: np.ndarray
    affine: np.ndarray
    oriented: bool = True


def read_nifti_labels(path: Path) -> NiftiLabels:
    """A NIfTI label map in display orientation with its geometry (see ``NiftiLabels``)."""
    import nibabel as nib

    from sarcoscope.io.geometry import display_mapping, to_display
    from sarcoscope.io.nifti import RAS_TO_LPS

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
    header = img.header
    oriented = bool(header.get_sform(coded=True)[1] or header.get_qform(coded=True)[1]) \
        if hasattr(header, "get_sform") else True
    lps = RAS_TO_LPS @ np.asarray(img.affine, dtype=float)
    mapping = display_mapping(lps[:3, :3].T, lps[:3, 3], tuple(int(s) for s in data.shape), str(path))
    values = np.ascontiguousarray(to_display(data, mapping)).astype(np.int64)
    return NiftiLabels(values, mapping.affine, oriented)


#: How far (in CT voxels, along each CT axis) a reference voxel may lie from the CT voxel it is
#: compared with. Float32 NIfTI headers round positions by ~1e-5 mm, while a mask shifted or
#: exported on another grid is off by whole voxels; a tenth of a voxel separates the two.
GRID_TOLERANCE_VOXELS = 0.1


def grid_offset_voxels(affine: np.ndarray, ct_affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Largest distance, in CT voxels along each CT axis (i, j, k), between where ``affine`` and
    ``ct_affine`` put the same voxel index of a (k, j, i) grid ``shape``.

    Both maps are affine, so the largest distance is at a corner of the grid.
    """
    n_k, n_j, n_i = shape
    corners = np.array([[i, j, k, 1.0] for i in (0, n_i - 1) for j in (0, n_j - 1) for k in (0, n_k - 1)]).T
    moved_mm = (np.asarray(affine, dtype=float) - np.asarray(ct_affine, dtype=float)) @ corners
    return np.abs(np.linalg.solve(np.asarray(ct_affine, dtype=float)[:3, :3], moved_mm[:3])).max(axis=1)


def _axes_angle_deg(affine: np.ndarray, ct_affine: np.ndarray) -> float:
    """Largest angle between corresponding display axes of two affines (0 when parallel)."""
    a = np.asarray(affine, dtype=float)[:3, :3]
    b = np.asarray(ct_affine, dtype=float)[:3, :3]
    cos = np.sum(a * b, axis=0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).max())


def check_on_ct_grid(path: Path, labels: NiftiLabels, volume: CTVolume, what: str) -> None:
    """Refuse a NIfTI reference that does not lie voxel for voxel on the CT's display grid.

    Training and evaluation both use a reference pixel by pixel against the CT's slices, so a
    mask whose header puts its voxels elsewhere (shifted, flipped, other spacing or orientation)
    would teach or score the wrong anatomy without any error. DICOM SEG frames are placed by
    position when read (``train.seg_reference``); a ``.tag`` has no geometry of its own.
    """
    shape = labels.values.shape
    if shape != volume.shape:
        raise InputError(
            f"{path}: {what} of {shape} (slices, rows, columns after orientation) does not match "
            f"the CT {volume.shape}; export the mask on the CT's own grid (all its slices)"
        )
    offset = grid_offset_voxels(labels.affine, volume.affine, shape)  # type: ignore[arg-type]
    if np.all(offset <= GRID_TOLERANCE_VOXELS):
        return
    affine = labels.affine
    ref_mm = np.linalg.norm(affine[:3, :3], axis=0)
    ct_mm = np.linalg.norm(volume.affine[:3, :3], axis=0)
    ref_orig, ct_orig = affine[:3, 3], volume.affine[:3, 3]
    raise GeometryError(
        f"{path}: the reference does not lie on the grid of the CT {volume.series.source_path}: its voxels are "
        f"up to {offset[0]:.1f}, {offset[1]:.1f}, {offset[2]:.1f} CT voxels (columns, rows, slices) away from "
        f"the CT's (first voxel at {np.round(ref_orig, 1).tolist()} mm LPS vs {np.round(ct_orig, 1).tolist()}; "
        f"voxel size {np.round(ref_mm, 3).tolist()} vs {np.round(ct_mm, 3).tolist()} mm; axes rotated by "
        f"{_axes_angle_deg(affine, volume.affine):.1f}°)"
        + ("; its header states no orientation (neither sform nor qform)" if not labels.oriented else "")
        + ". Using it pixel by pixel would compare different anatomy: export the mask from the same "
        "series as the CT (same origin, spacing and orientation) or resample it onto the CT's grid."
    )


ALL_TISSUES: frozenset[Tissue] = frozenset(Tissue)

#: File names (without .nii/.nii.gz, case-insensitive) of per-class masks in a reference folder.
MASK_FILE_NAMES: dict[str, Tissue] = {
    **{TISSUE_INFO[t].key: t for t in Tissue},
    "skeletal_muscle": Tissue.MUSCLE,
}

REFERENCE_FORMATS = (
    "a DICOM SEG file, a NIfTI label map (.nii/.nii.gz), a folder of per-class NIfTI masks "
    "(muscle, imat, vat, sat .nii.gz) or a Slice-O-Matic .tag file"
)


@dataclass(frozen=True)
class ReferenceSlice:
    """One annotated display slice of a CT: its index, labels (0..4) and the tissues annotated.

    ``tissues`` are the classes the reference annotates; a class outside it is unknown on this
    slice (its reference numbers are NaN), not absent.
    """

    k: int
    labels: np.ndarray
    tissues: frozenset[Tissue] = ALL_TISSUES


def load_reference(
    ref_path: Path, volume: CTVolume, value_map: dict[int, int] | None = None, *, image_file: Path | None = None,
    map_hint: str = MAP_HINT,
) -> list[ReferenceSlice]:
    """Annotated slices of ``volume`` from any supported reference, in display orientation.

    * NIfTI label map: on the CT's grid, the same slices as the CT (shape and header geometry
      checked: ``check_on_ct_grid``); every slice with labels is returned. ``value_map`` maps its values (default identity 1..4).
    * Folder of per-class NIfTI masks (``muscle``, ``imat``, ``vat``, ``sat``, any case,
      ``skeletal_muscle`` too): one binary mask per tissue on the CT's grid; missing tissues
      are "not annotated". Overlapping masks are an error.
    * ``.tag``: one slice, the DICOM file ``image_file`` (or the volume's only slice);
      ``value_map`` defaults to the Alberta tags.
    * DICOM SEG: see ``train.seg_reference``; ``value_map`` maps segment numbers.

    A label-map or ``.tag`` value that ``value_map`` does not name is an ``InputError`` whose
    advice is ``map_hint`` (the caller knows which option or setting holds the map).
    """
    ref_path = Path(ref_path)
    if not ref_path.exists():
        raise InputError(f"{ref_path}: no such reference file or folder")
    name = ref_path.name.lower()
    if ref_path.is_dir():
        if value_map:
            raise InputError(
                f"{ref_path}: --label-map does not apply to a folder of per-class masks (the file names "
                "say the tissue); evaluate it without --label-map"
            )
        return _load_class_masks(ref_path, volume)
    if name.endswith(".tag"):
        return [_load_tag(ref_path, volume, value_map or DEFAULT_TAG_MAP, image_file, map_hint)]
    if name.endswith((".nii", ".nii.gz")):
        data = _nifti_on_grid(ref_path, volume, "label map")
        labelled = [k for k in range(data.shape[0]) if np.any(data[k])]
        if not labelled:
            raise InputError(f"{ref_path}: the label map is empty (no labelled pixel)")
        mapped = apply_value_map(data[labelled], value_map or IDENTITY_MAP, str(ref_path), hint=map_hint)
        return [ReferenceSlice(k, m) for k, m in zip(labelled, mapped)]
    from sarcoscope.train.seg_reference import read_seg_reference

    return read_seg_reference(ref_path, volume, value_map)


def _load_tag(
    ref_path: Path, volume: CTVolume, vmap: dict[int, int], image_file: Path | None, map_hint: str
) -> ReferenceSlice:
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
    rows, cols = volume.hu.shape[1:]
    stored_shape = (grid.shape[1], grid.shape[2]) if grid is not None else (rows, cols)
    raw = read_tag(ref_path, stored_shape)
    return ReferenceSlice(k, apply_value_map(stored_to_display_2d(raw, volume), vmap, str(ref_path), hint=map_hint))


def _nifti_on_grid(path: Path, volume: CTVolume, what: str) -> np.ndarray:
    """A NIfTI mask's raw values in display orientation, checked to lie on the CT's grid."""
    labels = read_nifti_labels(path)
    check_on_ct_grid(path, labels, volume, what)
    return labels.values


def find_class_masks(folder: Path) -> dict[Tissue, Path]:
    """The per-class mask files of a reference folder, by tissue (see ``MASK_FILE_NAMES``)."""
    found: dict[Tissue, Path] = {}
    ignored: list[str] = []
    for f in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        low = f.name.lower()
        ext = next((e for e in (".nii.gz", ".nii") if low.endswith(e)), None)
        stem = low[: -len(ext)].replace("-", "_").replace(" ", "_") if ext else ""
        tissue = MASK_FILE_NAMES.get(stem)
        if tissue is None:
            ignored.append(f.name)
            continue
        if tissue in found:
            raise InputError(
                f"{folder}: two masks for {TISSUE_INFO[tissue].key}: {found[tissue].name} and {f.name}; keep one"
            )
        found[tissue] = f
    if not found:
        raise InputError(
            f"{folder}: no per-class mask found (files: {', '.join(ignored[:8]) or 'none'}); a reference folder "
            "holds one binary NIfTI mask per tissue named muscle.nii.gz, imat.nii.gz, vat.nii.gz, sat.nii.gz"
        )
    if ignored:
        logger.info("%s: files not named after a tissue are ignored: %s", folder, ", ".join(ignored))
    return found


def _load_class_masks(folder: Path, volume: CTVolume) -> list[ReferenceSlice]:
    masks = find_class_masks(folder)
    missing = [TISSUE_INFO[t].key for t in Tissue if t not in masks]
    if missing:
        logger.warning(
            "%s: no mask for %s; %s not annotated there (NaN in the evaluation, listed in the CSV column "
            "reference_missing)", folder, ", ".join(missing),
            "that class is" if len(missing) == 1 else "those classes are",
        )
    labels = np.zeros(volume.shape, dtype=np.uint8)
    for tissue, path in masks.items():
        m = _nifti_on_grid(path, volume, "mask") != 0
        clash = m & (labels != 0)
        if clash.any():
            other = masks[Tissue(int(labels[clash].flat[0]))].name
            k = int(np.argwhere(clash)[0][0])
            raise InputError(
                f"{path}: overlaps {other} on {int(clash.sum())} pixels (first on slice {k}); a tissue map needs "
                "each pixel in one class — fix the masks so that they do not overlap"
            )
        labels[m] = int(tissue)
    out = [ReferenceSlice(k, labels[k], frozenset(masks)) for k in range(labels.shape[0]) if labels[k].any()]
    if not out:
        raise InputError(f"{folder}: every mask is empty (no labelled pixel)")
    return out


MASK_SUFFIXES = (".tag", ".nii", ".nii.gz")
#: Files in a fine-tuning folder that are neither images nor masks (notes, tables, OS clutter).
_NOT_IMAGES = (".json", ".csv", ".txt", ".md")


@dataclass(frozen=True)
class PairScan:
    """What ``scan_pairs`` found: the (image, reference) pairs and every file left unpaired."""

    pairs: tuple[tuple[Path, Path], ...]
    images_without_mask: tuple[Path, ...]
    masks_without_image: tuple[Path, ...]

    def unpaired_text(self, folder: Path) -> list[str]:
        """One line per kind of unpaired file (empty when every file is paired), names relative to ``folder``."""
        lines = []
        for what, files in (("images without a reference mask", self.images_without_mask),
                            ("masks without an image", self.masks_without_image)):
            if files:
                names = [f.relative_to(folder).as_posix() for f in files]
                lines.append(f"{len(files)} {what} (not used): {', '.join(names)}")
        return lines


def scan_pairs(folder: Path) -> PairScan:
    """Pair images with references in a fine-tuning folder (see the module docstring).

    Unpaired files are logged as a warning (a mask named ``X_seg.nii.gz`` beside ``X.dcm`` is
    not paired; silently training on fewer slices than the user annotated is a surprise).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; --data needs a folder of DICOM slices with reference masks")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    masks = [f for f in files if f.name.lower().endswith(MASK_SUFFIXES)]
    images = [f for f in files if f not in masks and not f.name.lower().endswith(_NOT_IMAGES)
              and f.name.upper() != "DICOMDIR"]
    pairs, lonely = [], []
    for f in images:
        stem = f.name[: -len(f.suffix)] if f.suffix.lower() == ".dcm" else f.name
        for cand in (f.with_name(f.name + ".tag"), f.with_name(stem + ".tag"),
                     f.with_name(stem + ".nii.gz"), f.with_name(stem + ".nii")):
            if cand.is_file():
                pairs.append((f, cand))
                break
        else:
            lonely.append(f)
    used = {ref for _, ref in pairs}
    scan = PairScan(tuple(pairs), tuple(lonely), tuple(m for m in masks if m not in used))
    for line in scan.unpaired_text(folder):
        logger.warning("%s: %s; a reference pairs with X.dcm as X.dcm.tag, X.tag, X.nii.gz or X.nii", folder, line)
    if not pairs:
        raise InputError(
            f"{folder}: no image with a reference mask found; put X.dcm beside X.dcm.tag, X.tag or X.nii.gz"
        )
    return scan


def find_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, reference) pairs in a fine-tuning folder (see ``scan_pairs``)."""
    return list(scan_pairs(folder).pairs)
