"""Where the model's IMAT errors lie on held-out phantom slices (the card's IMAT analysis).

IMAT is the fat-HU part of the predicted muscle envelope, so its errors are envelope errors
on fat-HU pixels. This tallies the wrong IMAT pixels by the phantom structure underneath and
by distance to the true envelope edge, on the first ``--cases`` slices of one level of the
held-out stream (seed 777, stream 3, the set `sarcoscope evaluate --synthetic` uses).

    .venv/bin/python benchmarks/imat_error_sources.py --level L3 --cases 25 [--model FILE]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.phantom import make_slice
from sarcoscope.phantom.structures import S
from sarcoscope.segment.onnx_model import OnnxSegmenter
from sarcoscope.tissues import Tissue
from sarcoscope.train.assess import heldout_source
from sarcoscope.train.data import draw_phantom_params


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--level", default="L3")
    ap.add_argument("--cases", type=int, default=25)
    ap.add_argument("--edge-px", type=int, default=2, help="band around the true envelope edge (pixels)")
    ap.add_argument("--model", type=Path, default=None)
    args = ap.parse_args()
    seg = OnnxSegmenter(args.model)
    src = heldout_source(777)
    fp, fn = Counter(), Counter()
    totals = Counter()
    n, index = 0, 0
    while n < args.cases and index < 50 * args.cases:
        level, params = draw_phantom_params(src, index)
        if level == args.level:
            s = make_slice(params, level=level)  # the slice draw_slice(src, index) makes
            structures = np.asarray(s.structures)
            hu, labels = np.asarray(s.hu, dtype=np.float32), np.asarray(s.labels)
            spacing = tuple(float(v) for v in np.broadcast_to(s.pixel_spacing_mm, (2,)))
            pred = seg.segment(hu, spacing)
            envelope = (labels == Tissue.MUSCLE) | (labels == Tissue.IMAT)
            band = ndi.binary_dilation(envelope, iterations=args.edge_px) & ~ndi.binary_erosion(
                envelope, iterations=args.edge_px
            )
            wrong_fp = (pred == Tissue.IMAT) & (labels != Tissue.IMAT)
            wrong_fn = (labels == Tissue.IMAT) & (pred != Tissue.IMAT)
            for mask, tally, key in ((wrong_fp, fp, "fp"), (wrong_fn, fn, "fn")):
                values, counts = np.unique(structures[mask], return_counts=True)
                for v, c in zip(values, counts):
                    tally[S(int(v)).name] += int(c)
                totals[key] += int(mask.sum())
                totals[key + "_edge"] += int((mask & band).sum())
            n += 1
        index += 1
    print(f"{n} held-out {args.level} slices; model {seg.name} {seg.version}")
    for key, tally in (("fp", fp), ("fn", fn)):
        share = totals[key + "_edge"] / max(1, totals[key])
        print(f"IMAT {'false positive' if key == 'fp' else 'false negative'} pixels: {totals[key]}, "
              f"{100 * share:.0f} % within {args.edge_px} px of the true envelope edge")
        print("  by phantom structure: " + ", ".join(f"{k} {v}" for k, v in tally.most_common(8)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
