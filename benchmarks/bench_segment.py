"""Segmentation speed on one 512x512 slice: ONNX model vs the rule-based baseline, same run.

Usage::

    .venv/bin/python benchmarks/bench_segment.py [--model PATH] [--repeats 15] [--threads N] [--json OUT]
        [--slice-file CT [--slice-index K]]   # a real slice instead of the phantom one

Reports the median (and spread) of ``segment()`` wall time including pre/post-processing,
the model load time (median of 5 fresh sessions), the peak resident memory growth of this
process while segmenting, the ratio model/baseline, and the stray-island check
(``segment.islands``) alone with the number of pixels it changes on this slice. Numbers go
in docs/model-card.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np


def _slice(path: Path | None = None, index: int | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    if path is not None:
        from sarcoscope.io import read_ct

        volume = read_ct(path)
        k = volume.hu.shape[0] // 2 if index is None else index
        return volume.slice_hu(k).astype(np.float32), volume.pixel_spacing_mm
    from sarcoscope.phantom import make_slice, random_params

    params = random_params(np.random.default_rng(2024), matrix=(512, 512), pixel_spacing_mm=0.78)
    s = make_slice(params, level="L3")
    return s.hu.astype(np.float32), s.pixel_spacing_mm


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _time_island_check(seg, hu: np.ndarray, spacing: tuple[float, float], repeats: int) -> list[float]:
    """The island check alone (``segment.islands``) on this slice's compartments."""
    from sarcoscope.segment.islands import reassign_stray_muscle

    compartments, trunk = seg.trunk_compartments(hu, spacing)
    return _time(lambda: reassign_stray_muscle(compartments, hu, spacing, trunk), 2 * repeats)


def _without_island_check(seg, hu: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    from sarcoscope.segment.onnx_model import tissues_from_compartments

    compartments, _ = seg.trunk_compartments(hu, spacing)
    return tissues_from_compartments(compartments, np.asarray(hu, dtype=np.float32))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--slice-file", type=Path, default=None, help="CT file/folder: time its slice instead of the phantom's")
    ap.add_argument("--slice-index", type=int, default=None, help="slice of --slice-file (default: the middle one)")
    args = ap.parse_args()

    from sarcoscope.segment.baseline import BaselineSegmenter
    from sarcoscope.segment.onnx_model import OnnxSegmenter

    hu, spacing = _slice(args.slice_file, args.slice_index)
    loads = []
    for _ in range(5):
        t = time.perf_counter()
        model = OnnxSegmenter(args.model, threads=args.threads)
        loads.append(time.perf_counter() - t)
    rss0 = _rss_mb()
    t_model = _time(lambda: model.segment(hu, spacing), args.repeats)
    rss_model = _rss_mb()
    # the island check alone on this slice's compartments: on a busy machine the difference
    # of two whole segment() medians is mostly noise (and a second session shares the caches)
    t_check = _time_island_check(model, hu, spacing, args.repeats)
    moved = int((model.segment(hu, spacing) != _without_island_check(model, hu, spacing)).sum())
    baseline = BaselineSegmenter()
    t_base = _time(lambda: baseline.segment(hu, spacing), args.repeats)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, load avg {os.getloadavg()[0]:.1f}",
        "slice": {"source": str(args.slice_file or "phantom L3, seed 2024"), "shape": list(hu.shape),
                  "pixel_spacing_mm": list(spacing)},
        "model": {"file": str(model.path), "sha256": model.sha256, "version": model.version},
        "model_load_s_median": statistics.median(loads),
        "model_segment_ms_median": 1000 * statistics.median(t_model),
        "model_segment_ms_min_max": [1000 * min(t_model), 1000 * max(t_model)],
        "island_check_alone_ms_median": 1000 * statistics.median(t_check),
        "pixels_changed_by_island_check": moved,
        "baseline_segment_ms_median": 1000 * statistics.median(t_base),
        "ratio_model_over_baseline": statistics.median(t_model) / statistics.median(t_base),
        "peak_rss_mb_before_segmenting": rss0,
        "peak_rss_mb_after_model": rss_model,
        "repeats": args.repeats,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
