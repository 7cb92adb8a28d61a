"""The trained segmentation model, run with onnxruntime (no torch at run time).

How a slice is labelled:

1. The body's bounding box (HU > ``body_hu``) plus a margin is cut out; air around the body
   costs time and carries no tissue.
2. That box is resampled to the model's fixed grid (``spacing_mm`` per pixel, 1.5 mm for the
   shipped model) with an antialiased linear (triangle) kernel, padded with air to a multiple
   of the network's divisor, and turned into HU window channels.
3. The network predicts *compartments* — 0 none, 1 muscle fascia envelope (muscles and the
   fat marbling inside them), 2 visceral fat compartment, 3 subcutaneous fat compartment.
   Its logits are mapped back onto the original pixels with the same kernel and the highest
   logit wins: boundaries fall between model pixels, which matters for abdominal wall muscles
   only a few pixels thick on the model grid.
4. The tissue labels follow from the compartment and each original pixel's own HU, exactly
   as the Alberta protocol defines them (``tissues.MUSCLE_HU`` / ``FAT_HU``): envelope pixels
   of muscle HU are muscle, of fat HU IMAT; fat-HU pixels of the visceral / subcutaneous
   compartments are VAT / SAT; anything else is background. The network therefore never has
   to reproduce pixel noise, and the labels keep the scan's full resolution.
5. Only the trunk is measured (``segment.body.trunk_mask``): arms beside the abdomen, the
   table and blankets are cut off by the same rule the baseline uses, because a network
   trained on synthetic arms still calls real arm muscle "muscle" now and then.
6. Small muscle islands far from bone, subcutaneous fat, gas, the body's edge and anchored
   muscle are organ tissue the network mistook (``segment.islands``): they go to the
   visceral compartment.

The grid and window settings travel inside the ONNX file (metadata key ``sarcoscope``), so a
fine-tuned model is self-describing. ``models/<name>.json`` beside the file is the model card.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from sarcoscope.errors import InputError, ModelError
from sarcoscope.segment.body import trunk_mask
from sarcoscope.segment.islands import IslandRule, reassign_stray_muscle
from sarcoscope.tissues import AIR_HU, FAT_HU, MUSCLE_HU, Tissue

logger = logging.getLogger(__name__)

MODEL_FILENAME = "sarcoscope-l3.onnx"
METADATA_KEY = "sarcoscope"
#: Network outputs: none, muscle envelope, visceral fat compartment, subcutaneous fat compartment.
N_COMPARTMENTS = 4
COMPARTMENT_NAMES = ("none", "muscle_envelope", "visceral_fat", "subcutaneous_fat")


#: Where a wheel installs the shipped model (``[tool.setuptools.data-files]`` in pyproject.toml),
#: relative to the environment's prefix.
INSTALLED_MODEL_DIR = Path("share") / "sarcoscope" / "models"


def model_search_paths() -> list[Path]:
    """Where the shipped model is looked for: the repository's ``models/`` (a checkout or
    editable install), then ``<prefix>/share/sarcoscope/models`` (a wheel install)."""
    repo_models = Path(__file__).resolve().parents[3] / "models"
    return [repo_models / MODEL_FILENAME, Path(sys.prefix) / INSTALLED_MODEL_DIR / MODEL_FILENAME]


def default_model_path() -> Path:
    """The shipped model: the first of ``model_search_paths()`` that exists."""
    candidates = model_search_paths()
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]


@dataclass(frozen=True)
class GridSpec:
    """How a slice is turned into network input: stored in the ONNX metadata.

    Attributes
    ----------
    spacing_mm:
        Pixel size of the model grid (both axes).
    divisor:
        Network input sides must be multiples of this (2 ** number of poolings).
    windows:
        HU windows ``(low, high)``; each gives one channel scaled to ``-1 .. 1``.
    body_hu:
        Pixels above this HU count as body when cropping.
    margin_mm:
        Air kept around the body box, so the skin edge is never at the array border.
    """

    spacing_mm: float = 1.5
    divisor: int = 16
    windows: tuple[tuple[float, float], ...] = ((-250.0, 250.0), (-1000.0, 1000.0))
    body_hu: float = -500.0
    margin_mm: float = 12.0

    def __post_init__(self) -> None:
        if not self.spacing_mm > 0:
            raise ValueError(f"spacing_mm must be positive, got {self.spacing_mm}")
        if self.divisor < 1:
            raise ValueError(f"divisor must be >= 1, got {self.divisor}")
        if not self.windows or any(hi <= lo for lo, hi in self.windows):
            raise ValueError(f"windows must be non-empty (low, high) pairs with high > low, got {self.windows}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> GridSpec:
        raw = json.loads(text)
        raw["windows"] = tuple(tuple(float(v) for v in w) for w in raw["windows"])
        return cls(**raw)


def window_channels(hu: np.ndarray, spec: GridSpec) -> np.ndarray:
    """Stack one channel per HU window, each clipped and scaled to -1..1 (float32)."""
    out = np.empty((len(spec.windows),) + hu.shape, dtype=np.float32)
    for c, (lo, hi) in enumerate(spec.windows):
        centre, half = (hi + lo) / 2.0, (hi - lo) / 2.0
        np.clip((hu - centre) / half, -1.0, 1.0, out=out[c])
    return out


@dataclass(frozen=True)
class Taps:
    """A 1-D resampling kernel: output sample ``o`` = sum_k ``weights[o, k] * input[index[o, k]]``."""

    index: np.ndarray  # (n_out, K) int64, always within 0..n_in-1
    weights: np.ndarray  # (n_out, K) float32, rows sum to 1
    n_in: int


def resample_taps(n_in: int, step_in_mm: float, n_out: int, step_out_mm: float) -> Taps:
    """Kernel resampling a 1-D signal between two grids that share their first pixel edge.

    Pixel centres sit at ``(index + 0.5) * step``. The kernel is a triangle whose half-width is
    the coarser of the two steps: linear interpolation when upsampling, area-like averaging
    (antialiasing) when downsampling. Rows are normalised; an output sample beyond the input's
    reach takes its nearest input pixel.
    """
    half = max(step_in_mm, step_out_mm)
    x_out = (np.arange(n_out) + 0.5) * step_out_mm
    reach = int(np.ceil(half / step_in_mm)) + 1
    centre = np.floor(x_out / step_in_mm - 0.5).astype(np.int64)
    offsets = np.arange(-reach + 1, reach + 1)
    idx = centre[:, None] + offsets[None, :]
    x_in = (idx + 0.5) * step_in_mm
    w = np.maximum(0.0, 1.0 - np.abs(x_out[:, None] - x_in) / half)
    w = np.where((idx >= 0) & (idx < n_in), w, 0.0)
    sums = w.sum(axis=1)
    empty = sums <= 0
    if np.any(empty):  # beyond the input: nearest pixel
        w[empty] = 0.0
        w[empty, 0] = 1.0
        idx[empty, 0] = np.clip(np.round(x_out[empty] / step_in_mm - 0.5).astype(np.int64), 0, n_in - 1)
        sums = w.sum(axis=1)
    w = w / sums[:, None]
    keep = np.flatnonzero(w.max(axis=0) > 0)  # drop tap columns that are zero everywhere
    idx, w = idx[:, keep], w[:, keep]
    idx = np.clip(idx, 0, n_in - 1)  # zero-weight taps may point outside: park them on the edge
    return Taps(idx, w.astype(np.float32), n_in)


def resample_matrix(n_in: int, step_in_mm: float, n_out: int, step_out_mm: float) -> sparse.csr_matrix:
    """The same kernel as a sparse (n_out, n_in) matrix (for inspection and tests)."""
    t = resample_taps(n_in, step_in_mm, n_out, step_out_mm)
    rows = np.broadcast_to(np.arange(n_out)[:, None], t.index.shape)
    return sparse.csr_matrix((t.weights.ravel(), (rows.ravel(), t.index.ravel())), shape=(n_out, n_in))


def _apply(arr: np.ndarray, taps: Taps, axis: int) -> np.ndarray:
    shape = [1] * arr.ndim
    shape[axis] = taps.index.shape[0]
    out = None
    for k in range(taps.index.shape[1]):
        term = np.take(arr, taps.index[:, k], axis=axis) * taps.weights[:, k].reshape(shape)
        out = term if out is None else out + term
    return out


def resample_2d(image: np.ndarray, rows: Taps | sparse.csr_matrix, cols: Taps | sparse.csr_matrix) -> np.ndarray:
    """Separable resampling of a (rows, cols) or (channels, rows, cols) array (float32)."""
    arr = np.asarray(image, dtype=np.float32)
    rows_t = rows if isinstance(rows, Taps) else _taps_from_csr(rows)
    cols_t = cols if isinstance(cols, Taps) else _taps_from_csr(cols)
    # the smaller intermediate first
    if rows_t.index.shape[0] * arr.shape[-1] <= arr.shape[-2] * cols_t.index.shape[0]:
        return _apply(_apply(arr, rows_t, arr.ndim - 2), cols_t, arr.ndim - 1)
    return _apply(_apply(arr, cols_t, arr.ndim - 1), rows_t, arr.ndim - 2)


def _taps_from_csr(m: sparse.csr_matrix) -> Taps:
    m = m.tocsr()
    counts = np.diff(m.indptr)
    k = max(1, int(counts.max()))
    idx = np.zeros((m.shape[0], k), dtype=np.int64)
    w = np.zeros((m.shape[0], k), dtype=np.float32)
    for r in range(m.shape[0]):
        a, b = m.indptr[r], m.indptr[r + 1]
        idx[r, : b - a] = m.indices[a:b]
        w[r, : b - a] = m.data[a:b]
    return Taps(idx, w, m.shape[1])


@dataclass(frozen=True)
class GridContext:
    """Where the model grid sits in the original slice, to map the output back."""

    shape: tuple[int, int]
    box: tuple[int, int, int, int]  # r0, r1, c0, c1 (half-open) in original pixels
    grid_shape: tuple[int, int]  # valid model-grid samples (before padding)
    pixel_spacing_mm: tuple[float, float]


def body_box(hu: np.ndarray, pixel_spacing_mm: tuple[float, float], spec: GridSpec) -> tuple[int, int, int, int] | None:
    """Bounding box (r0, r1, c0, c1) of pixels above ``spec.body_hu`` plus the margin; None if empty."""
    body = hu > spec.body_hu
    rows = np.flatnonzero(body.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(body.any(axis=0))
    mr = int(np.ceil(spec.margin_mm / pixel_spacing_mm[0]))
    mc = int(np.ceil(spec.margin_mm / pixel_spacing_mm[1]))
    r0, r1 = max(0, rows[0] - mr), min(hu.shape[0], rows[-1] + 1 + mr)
    c0, c1 = max(0, cols[0] - mc), min(hu.shape[1], cols[-1] + 1 + mc)
    return int(r0), int(r1), int(c0), int(c1)


def to_grid_hu(
    hu: np.ndarray, pixel_spacing_mm: tuple[float, float], spec: GridSpec, *, pad_to_divisor: bool = True
) -> tuple[np.ndarray, GridContext] | None:
    """Cut the body box out of a slice and resample it to the model grid (HU, air-padded).

    Returns None when no pixel is above ``spec.body_hu`` (nothing to segment).
    """
    box = body_box(hu, pixel_spacing_mm, spec)
    if box is None:
        return None
    r0, r1, c0, c1 = box
    crop = hu[r0:r1, c0:c1]
    sr, sc = float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1])
    n_r = max(1, int(np.ceil((r1 - r0) * sr / spec.spacing_mm)))
    n_c = max(1, int(np.ceil((c1 - c0) * sc / spec.spacing_mm)))
    grid = resample_2d(
        crop,
        resample_taps(r1 - r0, sr, n_r, spec.spacing_mm),
        resample_taps(c1 - c0, sc, n_c, spec.spacing_mm),
    )
    if pad_to_divisor:
        d = spec.divisor
        big_r, big_c = -(-n_r // d) * d, -(-n_c // d) * d
        padded = np.full((big_r, big_c), AIR_HU, dtype=np.float32)
        padded[:n_r, :n_c] = grid
        grid = padded
    ctx = GridContext(shape=tuple(hu.shape), box=box, grid_shape=(n_r, n_c), pixel_spacing_mm=(sr, sc))
    return grid, ctx


def tissues_from_compartments(compartments: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """Alberta-protocol tissue labels (0..4) from compartments (0..3) and the pixels' own HU."""
    fat = (hu >= FAT_HU[0]) & (hu <= FAT_HU[1])
    muscle = (hu >= MUSCLE_HU[0]) & (hu <= MUSCLE_HU[1])
    out = np.zeros(hu.shape, dtype=np.uint8)
    envelope = compartments == 1
    out[envelope & muscle] = Tissue.MUSCLE
    out[envelope & fat] = Tissue.IMAT
    out[(compartments == 2) & fat] = Tissue.VAT
    out[(compartments == 3) & fat] = Tissue.SAT
    return out


def compartments_from_tissues(labels: np.ndarray) -> np.ndarray:
    """The inverse view used for reference masks: muscle and IMAT → 1, VAT → 2, SAT → 3."""
    lut = np.array([0, 1, 1, 2, 3] + [0] * 251, dtype=np.uint8)
    return lut[labels]


def logits_to_compartments(logits: np.ndarray, ctx: GridContext, spec: GridSpec) -> np.ndarray:
    """Map (classes, H, W) model-grid logits back onto the original pixels and take the argmax."""
    n_r, n_c = ctx.grid_shape
    r0, r1, c0, c1 = ctx.box
    sr, sc = ctx.pixel_spacing_mm
    back = resample_2d(
        logits[:, :n_r, :n_c],
        resample_taps(n_r, spec.spacing_mm, r1 - r0, sr),
        resample_taps(n_c, spec.spacing_mm, c1 - c0, sc),
    )
    labels = np.zeros(ctx.shape, dtype=np.uint8)
    labels[r0:r1, c0:c1] = argmax_channels(back)
    return labels


def argmax_channels(x: np.ndarray) -> np.ndarray:
    """``np.argmax(x, axis=0)`` as uint8 for a few channels, without strided reductions (faster)."""
    best = x[0].copy()
    idx = np.zeros(x.shape[1:], dtype=np.uint8)
    for c in range(1, x.shape[0]):
        better = x[c] > best
        idx[better] = c
        np.maximum(best, x[c], out=best)
    return idx


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_slice(hu: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
    """Validate a slice handed to a segmenter; returns it as float32."""
    arr = np.asarray(hu)
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise InputError(f"segment() needs a 2-D slice (rows, columns), got shape {arr.shape}")
    if len(pixel_spacing_mm) != 2 or any(not np.isfinite(s) or s <= 0 for s in pixel_spacing_mm):
        raise InputError(
            f"pixel spacing {pixel_spacing_mm} is not two positive numbers (row mm, column mm); "
            "check PixelSpacing in the input"
        )
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise InputError("slice holds NaN or infinite HU values; the reader must mask them before segmenting")
    return arr


class OnnxSegmenter:
    """The trained U-Net (``Segmenter``), one onnxruntime session per instance.

    Parameters
    ----------
    path:
        ONNX file; default the shipped ``models/sarcoscope-l3.onnx``.
    threads:
        onnxruntime intra-op threads; default ``min(4, cpu count)`` (more threads than cores
        only adds contention on small CPUs).
    island_rule:
        The stray-island check (``segment.islands``); None switches it off (for comparisons).
    """

    def __init__(
        self, path: Path | None = None, *, threads: int | None = None, island_rule: IslandRule | None = IslandRule()
    ) -> None:
        import onnxruntime as ort  # imported here: reading the package must stay light

        self.path = Path(path) if path is not None else default_model_path()
        self.island_rule = island_rule
        if not self.path.is_file():
            raise ModelError(
                f"segmentation model {self.path} not found; reinstall sarcoscope, pass --model with "
                "an ONNX file from `sarcoscope train`, or use --segmenter baseline"
            )
        self.sha256: str | None = _sha256(self.path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or max(1, min(4, os.cpu_count() or 1))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own unrelated exception types
            raise ModelError(
                f"segmentation model {self.path} cannot be loaded ({type(exc).__name__}: {exc}); the file "
                "is damaged or not an ONNX model: reinstall sarcoscope or re-export it with `sarcoscope train`"
            ) from exc
        meta = self._session.get_modelmeta()
        props = meta.custom_metadata_map
        if METADATA_KEY not in props:
            raise ModelError(
                f"{self.path} is an ONNX model but not a sarcoscope one (no '{METADATA_KEY}' metadata with the "
                "grid settings); export models with `sarcoscope train`"
            )
        try:
            self.spec = GridSpec.from_json(props[METADATA_KEY])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{self.path} has unreadable '{METADATA_KEY}' metadata: {exc}") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or inputs[0].shape[1] != len(self.spec.windows):
            raise ModelError(
                f"{self.path} expects inputs {[(i.name, i.shape) for i in inputs]}, but its metadata "
                f"describes {len(self.spec.windows)} window channels; the file is inconsistent"
            )
        if outputs[0].shape[1] != N_COMPARTMENTS:
            raise ModelError(
                f"{self.path} outputs {outputs[0].shape[1]} classes; sarcoscope needs {N_COMPARTMENTS} "
                f"compartments {COMPARTMENT_NAMES}"
            )
        self._input_name = inputs[0].name
        self.name = props.get("name", meta.graph_name or self.path.stem)
        self.version = props.get("version", "unknown")
        self.card = self._read_card()

    @property
    def post_steps(self) -> tuple[str, ...]:
        """What runs after the network, in words, for the result record (``SegmenterInfo``)."""
        steps = ["Alberta HU gating", "trunk only"]
        if self.island_rule is not None:
            r = self.island_rule
            steps.append(
                f"stray muscle islands < {r.max_island_cm2:g} cm² more than {r.anchor_mm:g} mm from bone, "
                f"subcutaneous fat, gas and the body's edge and {r.muscle_anchor_mm:g} mm from anchored "
                "muscle counted as visceral"
            )
        return tuple(steps)

    def _read_card(self) -> dict | None:
        card_path = self.path.with_suffix(".json")
        if not card_path.is_file():
            return None
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("model card %s unreadable (%s); ignoring it", card_path, exc)
            return None
        if card.get("sha256") and card["sha256"] != self.sha256:
            logger.warning(
                "model card %s describes a different file (sha256 %s, file has %s); ignoring the card",
                card_path, card["sha256"][:12], (self.sha256 or "")[:12],
            )
            return None
        return card

    def logits(self, hu: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> tuple[np.ndarray, GridContext] | None:
        """Model-grid logits (classes, H, W) and the context to map them back; None for an empty slice."""
        arr = check_slice(hu, pixel_spacing_mm)
        prepared = to_grid_hu(arr, pixel_spacing_mm, self.spec)
        if prepared is None:
            return None
        grid, ctx = prepared
        x = window_channels(grid, self.spec)[None]
        (out,) = self._session.run(None, {self._input_name: x})
        return out[0], ctx

    def trunk_compartments(
        self, hu: np.ndarray, pixel_spacing_mm: tuple[float, float]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Compartments (0..3) on the original pixels cut to the trunk, before the island check,
        and the trunk mask; None for an empty slice."""
        result = self.logits(hu, pixel_spacing_mm)
        if result is None:
            return None
        compartments = logits_to_compartments(*result, self.spec)
        # the trunk only: arms beside the abdomen look like trunk muscle and fat to the network
        trunk = trunk_mask(np.asarray(hu, dtype=np.float32), pixel_spacing_mm, self.spec.body_hu)
        compartments[~trunk] = 0
        return compartments, trunk

    def segment(self, hu: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
        """Label one display-oriented slice: uint8 (rows, columns), 0 background .. 4 SAT."""
        result = self.trunk_compartments(hu, pixel_spacing_mm)
        if result is None:
            logger.warning("slice has no pixel above %s HU: no body to segment, all background", self.spec.body_hu)
            return np.zeros(np.asarray(hu).shape, dtype=np.uint8)
        compartments, trunk = result
        arr = np.asarray(hu, dtype=np.float32)
        if self.island_rule is not None:
            compartments, _ = reassign_stray_muscle(compartments, arr, pixel_spacing_mm, trunk, self.island_rule)
        return tissues_from_compartments(compartments, arr)
