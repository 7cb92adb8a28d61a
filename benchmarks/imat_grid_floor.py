"""How much IMAT area error the model grid itself forces, with a perfect network (no model run).

The true compartments of each phantom slice are sent through a model grid and back the way
``OnnxSegmenter`` sends its logits: the body box resampled to ``spacing`` mm with the
antialiased kernel (``to_grid_hu``'s crop and kernel), the log of the oracle's per-pixel
fractions taken as its logits and mapped back by ``logits_to_compartments`` (resampled onto
the slice's pixels, arg-max), then the Alberta HU gating. Two oracles:

* ``hard``: only the majority compartment of each model pixel survives (what the training
  targets, ``train.data.to_canvas``, describe);
* ``soft``: the compartment fractions of each model pixel survive (training on them was
  tried in commit d5adda9 and reverted: see the model card).

IMAT is the fat-HU part of the envelope, so its per-slice area error is a measure of how
exactly the envelope edge is placed on the slice's own pixels; how exactly it must be is
printed too: the IMAT error of the true envelope grown by one pixel of the slice.

``--model`` also asks how close the network comes to the soft oracle: on the model grid of
each slice (the crop and kernel ``OnnxSegmenter`` uses), the mean envelope probability the
network gives the model pixels a true envelope edge crosses (true envelope fraction 2–98 %),
against the mean true fraction there, and their mean absolute difference next to that of a
network saying 0.5 everywhere. Equal means say the network is not biased at edges (it was
trained on hard targets only); the absolute difference is how far from the true fraction it
is pixel by pixel, the error the soft oracle does not have. The card's
numbers (docs/model-card.md, "What limits the IMAT error"):

    .venv/bin/python benchmarks/imat_grid_floor.py --seed 4242 --cases 100 --model shipped
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.segment.onnx_model import (
    N_COMPARTMENTS,
    GridContext,
    GridSpec,
    OnnxSegmenter,
    argmax_channels,
    logits_to_compartments,
    resample_2d,
    resample_taps,
    tissues_from_compartments,
    to_grid_hu,
)
from sarcoscope.tissues import Tissue
from sarcoscope.train.assess import heldout_source
from sarcoscope.train.data import draw_slice


def model_grid_fractions(compartments: np.ndarray, ctx: GridContext, spacing: float) -> np.ndarray:
    """Fractions (N_COMPARTMENTS, H, W) of each true compartment in each model pixel of ``ctx``'s
    grid (the crop and kernel ``OnnxSegmenter`` uses)."""
    r0, r1, c0, c1 = ctx.box
    n_r, n_c = ctx.grid_shape
    crop = compartments[r0:r1, c0:c1]
    onehot = np.stack([(crop == c).astype(np.float32) for c in range(N_COMPARTMENTS)])
    return resample_2d(onehot, resample_taps(r1 - r0, ctx.pixel_spacing_mm[0], n_r, spacing),
                       resample_taps(c1 - c0, ctx.pixel_spacing_mm[1], n_c, spacing))


def through_grid(hu: np.ndarray, compartments: np.ndarray, pixel_mm: tuple[float, float], spacing: float,
                 hard: bool) -> np.ndarray | None:
    """The true compartments after a round trip through a ``spacing`` mm model grid, sent back
    exactly as ``OnnxSegmenter`` sends its logits (``logits_to_compartments``): the oracle's
    logits are the log of its fractions (hard: of the majority compartment's one-hot)."""
    spec = GridSpec(spacing_mm=spacing)
    prepared = to_grid_hu(hu, pixel_mm, spec, pad_to_divisor=False)
    if prepared is None:
        return None
    _, ctx = prepared
    fractions = model_grid_fractions(compartments, ctx, spacing)
    if hard:
        winner = argmax_channels(fractions)
        fractions = np.stack([(winner == c).astype(np.float32) for c in range(N_COMPARTMENTS)])
    return logits_to_compartments(np.log(np.clip(fractions, 1e-6, 1.0)), ctx, spec)


def edge_calibration(seg: OnnxSegmenter, hu: np.ndarray, compartments: np.ndarray,
                     pixel_mm: tuple[float, float]) -> tuple[float, float, float, int, float]:
    """Sums of the network's envelope probability, of the true envelope fraction and of their
    absolute difference over the model pixels a true envelope edge crosses, their count, and
    the absolute difference a network saying 0.5 on every edge pixel would have."""
    result = seg.logits(hu, pixel_mm)
    if result is None:
        return 0.0, 0.0, 0.0, 0, 0.0
    logits, ctx = result
    n_r, n_c = ctx.grid_shape
    fraction = model_grid_fractions(compartments, ctx, seg.spec.spacing_mm)[1]
    z = logits[:, :n_r, :n_c]
    prob = np.exp(z - z.max(axis=0))
    prob = prob[1] / prob.sum(axis=0)
    edge = (fraction > 0.02) & (fraction < 0.98)
    p, f = prob[edge], fraction[edge]
    return float(p.sum()), float(f.sum()), float(np.abs(p - f).sum()), int(edge.sum()), float(np.abs(f - 0.5).sum())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=4242, help="phantom stream seed (777 is the held-out set)")
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--spacing", type=float, nargs="+", default=[1.0, 1.5])
    ap.add_argument("--model", default=None, help="'shipped' or an ONNX file: also measure its edge calibration")
    args = ap.parse_args()
    source = heldout_source(args.seed)
    seg = None if args.model is None else OnnxSegmenter(None if args.model == "shipped" else Path(args.model))
    calibration = np.zeros(5)
    errors: dict[tuple[float, str], list[float]] = {}
    for i in range(args.cases):
        s = draw_slice(source, i)
        if seg is not None:
            calibration += edge_calibration(seg, s.hu, s.compartments, s.pixel_spacing_mm)
        truth = int((s.labels == Tissue.IMAT).sum())
        if truth == 0:
            continue
        # sensitivity: the true envelope grown by one pixel of the slice into VAT / SAT / the rest
        envelope = s.compartments == 1
        grown = np.where(ndi.binary_dilation(envelope) & ~envelope, 1, s.compartments).astype(np.uint8)
        got = int((tissues_from_compartments(grown, s.hu) == Tissue.IMAT).sum())
        errors.setdefault((0.0, "one pixel out"), []).append((got - truth) / truth * 100)
        for spacing in args.spacing:
            for mode in ("hard", "soft"):
                comp = through_grid(s.hu, s.compartments, s.pixel_spacing_mm, spacing, hard=mode == "hard")
                if comp is None:
                    continue
                got = int((tissues_from_compartments(comp, s.hu) == Tissue.IMAT).sum())
                errors.setdefault((spacing, mode), []).append((got - truth) / truth * 100)
    print(f"seed {args.seed}, {args.cases} slices; IMAT area error of a perfect network through the model grid")
    for (spacing, mode), errs in sorted(errors.items()):
        e = np.array(errs)
        what = f"{spacing:g} mm {mode}" if spacing else "true envelope grown one pixel (no grid)"
        print(f"  {what}: mean |error| {np.abs(e).mean():.2f} %, mean {e.mean():+.2f} %, median {np.median(e):+.2f} %, "
              f"within 3 %: {np.mean(np.abs(e) <= 3) * 100:.0f} % of {e.size} slices")
    if seg is not None:
        p_sum, f_sum, d_sum, n, half_sum = calibration
        print(f"{seg.name} {seg.version}: on {int(n)} model pixels a true envelope edge crosses, mean envelope "
              f"probability {p_sum / n:.3f}, mean true envelope fraction {f_sum / n:.3f}, mean |difference| "
              f"{d_sum / n:.3f} (a constant 0.5 would be {half_sum / n:.3f} off)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
