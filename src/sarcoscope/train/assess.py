"""Running segmenters against references: the held-out phantom test set and user-annotated CT.

No torch. ``sarcoscope evaluate`` calls these; the numbers in docs/model-card.md come from
``sarcoscope evaluate --synthetic 500 --segmenter model --segmenter baseline``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from sarcoscope.errors import InputError
from sarcoscope.evaluate import (
    CaseAgreement,
    case_names,
    compare_case,
    summarise,
    summary_table,
    write_report,
)
from sarcoscope.segment.base import Segmenter
from sarcoscope.train.config import LEVELS
from sarcoscope.train.data import STREAM_TEST, TEST_SEED, SliceSource, generator_fingerprint, draw_slice

logger = logging.getLogger(__name__)

#: Level mix of the held-out test set: every level, L3 three times as often (as in training).
TEST_LEVEL_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 1.0, 3.0, 1.0, 1.0)


def make_segmenters(choices: list[str], model: Path | None = None) -> dict[str, Segmenter]:
    """Instantiate the named segmenters ('model', 'baseline') in the given order."""
    segs: dict[str, Segmenter] = {}
    for choice in choices:
        if choice == "model":
            from sarcoscope.segment.onnx_model import OnnxSegmenter

            segs["model"] = OnnxSegmenter(model)
        elif choice == "baseline":
            from sarcoscope.segment.baseline import BaselineSegmenter

            segs["baseline"] = BaselineSegmenter()
        else:
            raise InputError(f"unknown segmenter {choice!r}; use 'model' or 'baseline'")
    return segs


def heldout_source(seed: int = TEST_SEED) -> SliceSource:
    """The held-out synthetic test stream (never drawn by training: different seed and stream)."""
    return SliceSource("phantom", seed, STREAM_TEST, LEVELS, TEST_LEVEL_WEIGHTS)


def _finish(
    cases: dict[str, list[CaseAgreement]], levels: list[str], timings: dict[str, list[float]], out_dir: Path,
    meta: dict[str, object],
) -> dict[str, dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for name, rows in cases.items():
        write_report(rows, out_dir, name)
        summaries[name] = summarise(rows)
    by_level: dict[str, dict[str, dict]] = {}
    for level in sorted(set(levels)):
        idx = [i for i, lv in enumerate(levels) if lv == level]
        by_level[level] = {
            name: {k: v["dice"]["mean"] for k, v in summarise([rows[i] for i in idx]).items()}
            for name, rows in cases.items()
        }
    timing = {name: {"median_ms": 1000 * float(np.median(t)), "n": len(t)} for name, t in timings.items()}
    table = summary_table(summaries)
    (out_dir / "summary.md").write_text(
        f"# Evaluation\n\n{json.dumps(meta)}\n\n{table}\n\n## Mean Dice by level\n\n```\n"
        + json.dumps(by_level, indent=1) + "\n```\n\n## Segmentation time (median, this machine)\n\n```\n"
        + json.dumps(timing, indent=1) + "\n```\n",
        encoding="utf-8",
    )
    (out_dir / "by_level.json").write_text(json.dumps({"dice_by_level": by_level, "timing": timing, **meta}, indent=1))
    return summaries


def evaluate_synthetic(
    segmenters: dict[str, Segmenter], n: int, out_dir: Path, seed: int | None = None
) -> dict[str, dict]:
    """Score each segmenter on the first ``n`` slices of the held-out phantom test stream
    (``seed`` None or ``TEST_SEED``), or of a development stream (any other seed)."""
    seed = TEST_SEED if seed is None else seed
    source = heldout_source(seed)
    cases: dict[str, list[CaseAgreement]] = {name: [] for name in segmenters}
    timings: dict[str, list[float]] = {name: [] for name in segmenters}
    levels = []
    t0 = time.perf_counter()
    for i in range(n):
        s = draw_slice(source, i)
        levels.append(s.level)
        for name, seg in segmenters.items():
            t = time.perf_counter()
            pred = seg.segment(s.hu, s.pixel_spacing_mm)
            timings[name].append(time.perf_counter() - t)
            cases[name].append(compare_case(f"{i:04d}-{s.level}", s.hu, pred, s.labels, s.pixel_spacing_mm))
        if (i + 1) % 50 == 0:
            logger.info("evaluated %d/%d slices (%.0f s)", i + 1, n, time.perf_counter() - t0)
    kind = "phantom held-out" if seed == TEST_SEED else "phantom development stream"
    meta = {"set": kind, "seed": seed, "stream": STREAM_TEST, "n": n,
            "generator_fingerprint": generator_fingerprint("phantom"),
            "segmenters": {k: {"name": v.name, "version": v.version, "sha256": v.sha256} for k, v in segmenters.items()}}
    return _finish(cases, levels, timings, Path(out_dir), meta)


def evaluate_pairs(
    segmenters: dict[str, Segmenter],
    pairs: list[tuple[Path, Path]],
    out_dir: Path,
    value_map: dict[int, int] | None = None,
) -> dict[str, dict]:
    """Score each segmenter on user CT with reference masks (every annotated slice is a case)."""
    from sarcoscope.io import read_ct
    from sarcoscope.train.annotations import load_reference

    cases: dict[str, list[CaseAgreement]] = {name: [] for name in segmenters}
    timings: dict[str, list[float]] = {name: [] for name in segmenters}
    levels = []
    names = case_names([Path(i) for i, _ in pairs], [Path(r) for _, r in pairs])
    for (image, ref), case in zip(pairs, names):
        volume = read_ct(Path(image))
        image_file = Path(image) if Path(image).is_file() else None
        ref_slices = load_reference(Path(ref), volume, value_map, image_file=image_file)  # grid checked there
        for rs in ref_slices:
            hu = volume.slice_hu(rs.k)
            levels.append("user")
            for name, seg in segmenters.items():
                t = time.perf_counter()
                pred = seg.segment(hu, volume.pixel_spacing_mm)
                timings[name].append(time.perf_counter() - t)
                agreement = compare_case(f"{case}#{rs.k}", hu, pred, rs.labels, volume.pixel_spacing_mm, rs.tissues)
                cases[name].append(agreement)
                _warn_empty_reference_classes(agreement, Path(ref), name)
    meta = {"set": "user references", "n": len(levels),
            "segmenters": {k: {"name": v.name, "version": v.version, "sha256": v.sha256} for k, v in segmenters.items()}}
    return _finish(cases, levels, timings, Path(out_dir), meta)


#: A class the prediction finds over this area (cm²) but the reference has not a pixel of is
#: more likely unannotated than absent.
EMPTY_REFERENCE_WARN_CM2 = 5.0


def _warn_empty_reference_classes(agreement: CaseAgreement, ref: Path, segmenter: str) -> None:
    """Say loudly when a reference that claims to annotate a class has none of it while the
    prediction has plenty: its Dice of 0 then measures the reference, not the segmenter."""
    for key, c in agreement.tissues.items():
        if c.reference_annotated and c.ref_area_cm2 == 0 and c.pred_area_cm2 > EMPTY_REFERENCE_WARN_CM2:
            logger.warning(
                "%s: case %s has no %s pixels in the reference while %s finds %.1f cm²; if the reference "
                "does not annotate %s, give per-class masks without it (then it is not scored) — as it is, "
                "its Dice counts as 0", ref, agreement.case, key, segmenter, c.pred_area_cm2, key,
            )


__all__ = ["evaluate_pairs", "evaluate_synthetic", "make_segmenters", "summary_table", "heldout_source"]


def overlay_png(hu: np.ndarray, labels: np.ndarray, path: Path, title: str = "") -> Path:
    """Side-by-side soft-tissue window and label overlay (tissue colours), for eyeballing results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sarcoscope.tissues import TISSUE_INFO, Tissue

    grey = (np.clip(hu, -250, 250) + 250) / 500
    rgb = np.repeat(grey[..., None], 3, axis=2)
    over = rgb.copy()
    for t in Tissue:
        m = labels == int(t)
        over[m] = 0.45 * rgb[m] + 0.55 * np.array(TISSUE_INFO[t].rgb) / 255
    fig, ax = plt.subplots(1, 2, figsize=(12, 6), dpi=80)
    for a, img in zip(ax, (rgb, over)):
        a.imshow(img, interpolation="nearest")
        a.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
