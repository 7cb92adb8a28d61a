"""Synthetic training data: phantom slices drawn from fixed seed streams, cached on the model grid.

Every slice is a pure function of ``(seed, stream, index)``: training, validation and the
held-out test set draw from different streams (``STREAM_*``), so the test set can never
leak into training, and every set can be regenerated bit for bit.

Training slices are cut to the body box, resampled to the model grid exactly as
``OnnxSegmenter`` does at run time, and stored on a fixed ``canvas x canvas`` air-padded
array. The training target is the *compartment* map (see ``segment.onnx_model``): 0 none,
1 muscle envelope, 2 visceral fat, 3 subcutaneous fat — for the phantom taken from its
structure map, so it is free of the pixel noise that the HU-gated tissue labels carry.
Targets are resampled as one-hot maps with the same antialiased kernel and the majority
class kept, so thin muscles are not lost to nearest-neighbour sampling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sarcoscope.segment.onnx_model import (
    N_COMPARTMENTS,
    GridSpec,
    body_box,
    compartments_from_tissues,
    argmax_channels,
    resample_2d,
    resample_taps,
)
from sarcoscope.tissues import AIR_HU

if TYPE_CHECKING:
    from sarcoscope.phantom import PhantomParams

logger = logging.getLogger(__name__)

STREAM_TRAIN = 1
STREAM_VAL = 2
STREAM_TEST = 3
#: The seed of the published held-out test set (docs/model-card.md); never train on it.
TEST_SEED = 777
#: Bump when the cached arrays change meaning, so old caches are not reused.
CACHE_FORMAT = 2


@dataclass(frozen=True)
class SliceSource:
    """What to draw: generator name, seed, stream and the level mix."""

    generator: str
    seed: int
    stream: int
    levels: tuple[str, ...]
    level_weights: tuple[float, ...]


#: phantom structure compartment (phantom.structures.COMPARTMENT: 1, 3, 4) → model compartment.
_PHANTOM_COMPARTMENT = np.zeros(256, dtype=np.uint8)
_PHANTOM_COMPARTMENT[[1, 3, 4]] = [1, 2, 3]


@dataclass(frozen=True)
class DrawnSlice:
    hu: np.ndarray  # float32 HU
    labels: np.ndarray  # uint8 tissue labels 0..4 (ground truth for evaluation)
    compartments: np.ndarray  # uint8 0..3 (training target)
    pixel_spacing_mm: tuple[float, float]
    level: str


def _level_draw(source: SliceSource, index: int) -> tuple[np.random.Generator, str]:
    """The generator of slice ``index`` and its level (the first draw from it)."""
    rng = np.random.default_rng([source.seed, source.stream, index])
    p = np.asarray(source.level_weights, dtype=float)
    return rng, str(source.levels[int(rng.choice(len(source.levels), p=p / p.sum()))])


def draw_phantom_params(source: SliceSource, index: int) -> tuple[str, PhantomParams]:
    """Level and body parameters of phantom slice ``index``, without rendering it (cheap)."""
    if source.generator != "phantom":
        raise ValueError(f"draw_phantom_params needs a phantom stream, got {source.generator!r}")
    from sarcoscope.phantom import random_params

    rng, level = _level_draw(source, index)
    return level, random_params(rng)


def draw_slice(source: SliceSource, index: int) -> DrawnSlice:
    """Generate slice ``index`` of a stream (a pure function of seed, stream and index)."""
    rng, level = _level_draw(source, index)
    if source.generator == "toy":
        from sarcoscope.train.toy import toy_slice

        hu, labels, spacing = toy_slice(rng, level)
        comp = compartments_from_tissues(labels)
    elif source.generator == "phantom":
        from sarcoscope.phantom import make_slice, random_params
        from sarcoscope.phantom.structures import COMPARTMENT

        params = random_params(rng)
        s = make_slice(params, level=level)
        hu, labels, spacing = s.hu, s.labels, s.pixel_spacing_mm
        comp = _PHANTOM_COMPARTMENT[COMPARTMENT[np.asarray(s.structures)]]
    else:
        raise ValueError(f"unknown generator {source.generator!r}")
    spacing = (float(spacing[0]), float(spacing[1])) if np.ndim(spacing) else (float(spacing), float(spacing))
    return DrawnSlice(
        np.asarray(hu, dtype=np.float32), np.asarray(labels, dtype=np.uint8), comp.astype(np.uint8), spacing, level
    )


def to_canvas(
    hu: np.ndarray, target: np.ndarray, spacing: tuple[float, float], spec: GridSpec, canvas: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a slice's body box to the model grid, centred on a canvas (int16 HU, uint8 target)."""
    out_hu = np.full((canvas, canvas), AIR_HU, dtype=np.int16)
    out_lab = np.zeros((canvas, canvas), dtype=np.uint8)
    box = body_box(hu, spacing, spec)
    if box is None:
        return out_hu, out_lab
    r0, r1, c0, c1 = box
    n_r = max(1, int(np.ceil((r1 - r0) * spacing[0] / spec.spacing_mm)))
    n_c = max(1, int(np.ceil((c1 - c0) * spacing[1] / spec.spacing_mm)))
    m_r = resample_taps(r1 - r0, spacing[0], n_r, spec.spacing_mm)
    m_c = resample_taps(c1 - c0, spacing[1], n_c, spec.spacing_mm)
    g_hu = resample_2d(hu[r0:r1, c0:c1], m_r, m_c)
    lab = target[r0:r1, c0:c1]
    onehot = np.stack([lab == k for k in range(N_COMPARTMENTS)]).astype(np.float32)
    g_lab = argmax_channels(resample_2d(onehot, m_r, m_c))
    # centre on the canvas; crop the middle when the body is larger than the canvas
    src_r0 = max(0, (n_r - canvas) // 2)
    src_c0 = max(0, (n_c - canvas) // 2)
    h, w = min(n_r, canvas), min(n_c, canvas)
    dst_r0, dst_c0 = (canvas - h) // 2, (canvas - w) // 2
    out_hu[dst_r0 : dst_r0 + h, dst_c0 : dst_c0 + w] = np.clip(
        np.round(g_hu[src_r0 : src_r0 + h, src_c0 : src_c0 + w]), -32768, 32767
    ).astype(np.int16)
    out_lab[dst_r0 : dst_r0 + h, dst_c0 : dst_c0 + w] = g_lab[src_r0 : src_r0 + h, src_c0 : src_c0 + w]
    return out_hu, out_lab


def _canvas_job(args: tuple[SliceSource, int, GridSpec, int]) -> tuple[int, np.ndarray, np.ndarray, str]:
    source, index, spec, canvas = args
    s = draw_slice(source, index)
    c_hu, c_lab = to_canvas(s.hu, s.compartments, s.pixel_spacing_mm, spec, canvas)
    return index, c_hu, c_lab, s.level


def generator_fingerprint(generator: str) -> str:
    """Hash of the generator's source code, recorded with the cache and in the model card.

    The phantom evolves; a cache made by another version is reused with a warning (deleting
    the cache folder regenerates it), and the card names the version the model saw.
    """
    if generator == "toy":
        files = [Path(__file__).with_name("toy.py")]
    else:
        import sarcoscope.phantom as phantom

        files = sorted(Path(phantom.__file__).parent.glob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class CachedSet:
    """A cached split: memory-mapped int16 HU and uint8 compartment targets, (n, canvas, canvas)."""

    hu: np.ndarray
    labels: np.ndarray
    levels: tuple[str, ...]
    path: Path
    generator_fingerprint: str = ""


def build_cache(
    source: SliceSource, n: int, spec: GridSpec, canvas: int, cache_dir: Path, workers: int = 1
) -> CachedSet:
    """Generate (or reuse) ``n`` canvases of a stream under ``cache_dir``; spawn-safe workers."""
    key = hashlib.sha256(
        json.dumps(
            [CACHE_FORMAT, source.generator, source.seed, source.stream, list(source.levels),
             list(source.level_weights), n, canvas, spec.to_json()]
        ).encode()
    ).hexdigest()[:16]
    folder = Path(cache_dir) / f"{source.generator}-s{source.seed}-st{source.stream}-n{n}-{key}"
    done = folder / "meta.json"
    fingerprint = generator_fingerprint(source.generator)
    if done.is_file():
        meta = json.loads(done.read_text())
        if meta.get("generator_fingerprint") != fingerprint:
            logger.warning(
                "cached slices in %s were generated by another version of the %s generator (%s, now %s): "
                "reusing them; delete the folder to regenerate with the current code",
                folder, source.generator, meta.get("generator_fingerprint"), fingerprint,
            )
        else:
            logger.info("reusing cached slices %s", folder)
        return CachedSet(
            np.load(folder / "hu.npy", mmap_mode="r"), np.load(folder / "labels.npy", mmap_mode="r"),
            tuple(meta["levels"]), folder, meta.get("generator_fingerprint", ""),
        )
    folder.mkdir(parents=True, exist_ok=True)
    hu = np.lib.format.open_memmap(folder / "hu.npy", mode="w+", dtype=np.int16, shape=(n, canvas, canvas))
    lab = np.lib.format.open_memmap(folder / "labels.npy", mode="w+", dtype=np.uint8, shape=(n, canvas, canvas))
    levels = [""] * n
    jobs = [(source, i, spec, canvas) for i in range(n)]
    t0 = time.perf_counter()
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            results = pool.imap_unordered(_canvas_job, jobs, chunksize=4)
            for k, (i, c_hu, c_lab, level) in enumerate(results):
                hu[i], lab[i], levels[i] = c_hu, c_lab, level
                if (k + 1) % 200 == 0:
                    logger.info("generated %d/%d slices (%.0f s)", k + 1, n, time.perf_counter() - t0)
    else:
        for k, job in enumerate(jobs):
            i, c_hu, c_lab, level = _canvas_job(job)
            hu[i], lab[i], levels[i] = c_hu, c_lab, level
            if (k + 1) % 200 == 0:
                logger.info("generated %d/%d slices (%.0f s)", k + 1, n, time.perf_counter() - t0)
    hu.flush()
    lab.flush()
    del hu, lab
    done.write_text(json.dumps(
        {"levels": levels, "seconds": time.perf_counter() - t0, "generator_fingerprint": fingerprint}
    ))
    logger.info("cached %d slices in %s (%.0f s)", n, folder, time.perf_counter() - t0)
    return CachedSet(
        np.load(folder / "hu.npy", mmap_mode="r"), np.load(folder / "labels.npy", mmap_mode="r"), tuple(levels), folder,
        fingerprint,
    )
