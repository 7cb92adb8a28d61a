"""Overlays of the real CT slices in ../shared/data/real-ct for the model and the baseline.

No reference masks exist for these files, so this is the visual check the model card reports
(docs/model-card.md, "Real CT slices"): which structures each segmenter calls muscle, IMAT,
VAT and SAT, and the areas it measures. The middle slice of each series is used.

    .venv/bin/python benchmarks/real_overlays.py --out runs/real-overlays [--model FILE]

``--island-check`` instead goes through *every* slice of these series and reports where the
model's stray-island check (``segment.islands``) changes the labels: each changed region's
centre (row, column) and area, with an overlay of the changes (yellow) per changed slice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sarcoscope.io import read_ct
from sarcoscope.train.assess import make_segmenters, overlay_png
from sarcoscope.tissues import Tissue

REAL_CT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-ct"
CASES = {
    "explicitVR": "edge-cases/explicit_VR-UN.dcm",
    "ts": "ts-liver-dome-j2k",
    "ge": "ge-3slice-padding",
    "toshiba": "edge-cases/TOSHIBA_J2K_OpenJPEGv2Regression.dcm",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/real-overlays"))
    ap.add_argument("--model", type=Path, default=None, help="ONNX file (default: the shipped model)")
    ap.add_argument("--real-ct", type=Path, default=REAL_CT)
    ap.add_argument("--island-check", action="store_true", help="report what the island check changes, every slice")
    args = ap.parse_args()
    if not args.real_ct.is_dir():
        print(f"real CT folder not found: {args.real_ct}", file=sys.stderr)
        return 2
    if args.island_check:
        return island_check_report(args.real_ct, args.out, args.model)
    segmenters = make_segmenters(["model", "baseline"], args.model)
    for name, rel in CASES.items():
        volume = read_ct(args.real_ct / rel)
        k = volume.hu.shape[0] // 2
        hu = volume.slice_hu(k).astype(np.float32)
        for seg_name, seg in segmenters.items():
            labels = seg.segment(hu, volume.pixel_spacing_mm)
            px_cm2 = volume.pixel_spacing_mm[0] * volume.pixel_spacing_mm[1] / 100.0
            areas = {t.key: round(float((labels == int(t)).sum()) * px_cm2, 1) for t in Tissue}
            overlay_png(hu, labels, args.out / f"{name}_{seg_name}.png", f"{name} {seg_name} slice {k} {areas} cm²")
            print(f"{name:11s} {seg_name:8s} slice {k}: " + ", ".join(f"{key} {a} cm²" for key, a in areas.items()))
    return 0


def island_check_report(real_ct: Path, out: Path, model: Path | None) -> int:
    """Every slice of CASES with and without the stray-island check; prints the changed regions."""
    from scipy import ndimage as ndi

    from sarcoscope.segment.onnx_model import OnnxSegmenter

    with_check, without = OnnxSegmenter(model), OnnxSegmenter(model, island_rule=None)
    for old in out.glob("*_island_check.png"):  # only this run's changed slices stay
        old.unlink()
    for name, rel in CASES.items():
        volume = read_ct(real_ct / rel)
        sp = volume.pixel_spacing_mm
        px_cm2 = sp[0] * sp[1] / 100.0
        for k in range(volume.hu.shape[0]):
            hu = volume.slice_hu(k).astype(np.float32)
            a, b = with_check.segment(hu, sp), without.segment(hu, sp)
            changed = a != b
            if not changed.any():
                print(f"{name:11s} slice {k:2d}: unchanged")
                continue
            lab, n = ndi.label(changed, structure=np.ones((3, 3), bool))
            regions = []
            for i, (rows, cols) in enumerate(ndi.find_objects(lab), start=1):
                rr, cc = np.nonzero(lab[rows, cols] == i)
                area = float((lab == i).sum()) * px_cm2
                regions.append(f"r{rows.start + int(rr.mean())} c{cols.start + int(cc.mean())} {area:.2f} cm²")
            was_muscle = float(((b == int(Tissue.MUSCLE)) & changed).sum()) * px_cm2
            print(f"{name:11s} slice {k:2d}: {was_muscle:.2f} cm² of muscle moved, regions " + ", ".join(regions))
            shown = np.where(changed, np.uint8(Tissue.IMAT), b)  # yellow = moved by the check
            overlay_png(hu, shown, out / f"{name}_{k}_island_check.png", f"{name} slice {k}: yellow = moved by the island check")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
