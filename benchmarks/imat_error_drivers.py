"""Which held-out phantom slices carry the model's IMAT area error (pixel size, kernel, noise, level, IMAT area).

Reads the per-case CSV that ``sarcoscope evaluate --synthetic N`` wrote and redraws each
case's phantom parameters (``train.data.draw_phantom_params``: cheap, no slice is rendered),
then tabulates the mean absolute and the mean signed IMAT area error (%) by group.

    .venv/bin/python benchmarks/imat_error_drivers.py runs/eval-heldout-v3-islands/cases_model.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from sarcoscope.train.assess import heldout_source
from sarcoscope.train.data import draw_phantom_params

GROUPS = {
    "pixel spacing mm": ("pixel_spacing_mm", (0.0, 0.7, 0.85, 1.0, 1.5, 3.1)),
    "kernel sharpness": ("kernel_sharpness", (0.0, 0.3, 0.5, 0.7, 1.01)),
    "noise SD HU": ("noise_sd", (0.0, 12.0, 18.0, 25.0, 35.0, 60.0)),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases_csv", type=Path)
    ap.add_argument("--seed", type=int, default=None, help="held-out seed the CSV was made with (default: the test seed)")
    args = ap.parse_args()
    src = heldout_source() if args.seed is None else heldout_source(args.seed)
    rows = list(csv.DictReader(args.cases_csv.open(encoding="utf-8")))
    error, area, level, params = [], [], [], []
    for i, row in enumerate(rows):
        if not row["case"].startswith(f"{i:04d}-"):
            raise SystemExit(f"{args.cases_csv}: row {i} is case {row['case']}, expected index {i} (not a --synthetic CSV?)")
        case_level, case_params = draw_phantom_params(src, i)
        level.append(case_level)
        params.append(case_params)
        error.append(float(row["imat_area_error_pct"]))
        area.append(float(row["imat_ref_area_cm2"]))
    e = np.asarray(error)
    print(f"{len(e)} slices: IMAT mean |area error| {np.abs(e).mean():.2f} %, mean signed {e.mean():+.2f} %, "
          f"share within 3 %: {np.mean(np.abs(e) <= 3):.2f}")

    def show(name: str, mask: np.ndarray) -> None:
        if mask.any():
            print(f"  {name:22s} n {int(mask.sum()):3d}  mean |error| {np.abs(e[mask]).mean():5.2f} %  "
                  f"signed {e[mask].mean():+5.2f} %  within 3 %: {np.mean(np.abs(e[mask]) <= 3):.2f}")

    for title, (attr, edges) in GROUPS.items():
        print(title)
        x = np.asarray([getattr(p, attr) for p in params])
        for lo, hi in zip(edges[:-1], edges[1:]):
            show(f"{lo:g}–{hi:g}", (x >= lo) & (x < hi))
    print("reference IMAT area cm²")
    a = np.asarray(area)
    for lo, hi in zip((0, 3, 5, 10, 20), (3, 5, 10, 20, 1000)):
        show(f"{lo:g}–{hi:g}", (a >= lo) & (a < hi))
    print("level")
    lv = np.asarray(level)
    for name in src.levels:
        show(name, lv == name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
