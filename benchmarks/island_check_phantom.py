"""What the model's stray-island check (segment.islands) changes on phantom slices, against truth.

Runs the shipped model once per slice of a phantom stream (the held-out test stream, or a
development seed), applies the island check to its compartments and reports every island
moved: level, area, and how much of it was true muscle in the phantom's labels. The card's
numbers (docs/model-card.md, step 6 and the held-out section):

    .venv/bin/python benchmarks/island_check_phantom.py --seed 4242 --cases 500   # development
    .venv/bin/python benchmarks/island_check_phantom.py --seed 11 --cases 500     # development
    .venv/bin/python benchmarks/island_check_phantom.py --seed 777 --cases 500    # held-out
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sarcoscope.segment.islands import ENVELOPE, IslandRule, reassign_stray_muscle
from sarcoscope.segment.onnx_model import OnnxSegmenter
from sarcoscope.tissues import Tissue
from sarcoscope.train.assess import heldout_source
from sarcoscope.train.data import draw_slice


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=777, help="stream seed (777: the held-out test set)")
    ap.add_argument("--cases", type=int, default=500)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--max-island-cm2", type=float, default=IslandRule.max_island_cm2)
    args = ap.parse_args()
    rule = IslandRule(max_island_cm2=args.max_island_cm2)
    seg = OnnxSegmenter(args.model, island_rule=None)
    source = heldout_source(args.seed)
    islands, moved_cm2, true_muscle_cm2 = 0, 0.0, 0.0
    t0 = time.perf_counter()
    for i in range(args.cases):
        s = draw_slice(source, i)
        result = seg.trunk_compartments(s.hu, s.pixel_spacing_mm)
        if result is None:
            continue
        compartments, trunk = result
        checked, n = reassign_stray_muscle(compartments, s.hu, s.pixel_spacing_mm, trunk, rule)
        moved = (compartments == ENVELOPE) & (checked != ENVELOPE)
        if not moved.any():
            continue
        px_cm2 = s.pixel_spacing_mm[0] * s.pixel_spacing_mm[1] / 100.0
        lost = moved & (s.labels == Tissue.MUSCLE)
        islands += n
        moved_cm2 += float(moved.sum()) * px_cm2
        true_muscle_cm2 += float(lost.sum()) * px_cm2
        print(f"slice {i:4d} {s.level}: {n} island(s), {moved.sum() * px_cm2:.3f} cm², "
              f"true muscle {lost.sum() * px_cm2:.3f} cm²")
    print(f"seed {args.seed}, {args.cases} slices: {islands} island(s) moved, {moved_cm2:.3f} cm² in all, "
          f"of it true muscle {true_muscle_cm2:.3f} cm² ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
