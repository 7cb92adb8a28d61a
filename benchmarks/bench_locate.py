"""Speed of the L3 finder (and of spine.png) on a 512×512×400 series, reading excluded.

The series is a phantom (sarcoscope.phantom) rendered at 256×256×200 and upsampled ×2 along
every axis (0.78 mm pixels, 1 mm slices, int16, 210 MB) — rendering 512×512×400 directly
would take minutes. The finder only ever strides the array to ~2 mm and reads small
full-resolution boxes, so its cost depends on the array size, not on fine detail.

Reference in the same run: one full pass over the array (``np.count_nonzero(hu > 180)``),
the least any method that looks at every voxel must pay.

Usage::

    .venv/bin/python benchmarks/bench_locate.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from sarcoscope.locate import find_l3
from sarcoscope.phantom import make_volume, random_params, random_spine
from sarcoscope.render.spine import render_spine
from sarcoscope.types import CTVolume


def build_volume(seed: int = 3) -> tuple[CTVolume, float]:
    rng = np.random.default_rng(seed)
    params = random_params(rng, matrix=(256, 256), pixel_spacing_mm=1.5625, seed=seed,
                           metal_implant=False)
    spine = random_spine(rng, lumbar_count=5, rib_pairs=12, lumbar_rib=False,
                         hypoplastic_last_rib=False)
    pv = make_volume(params, spine, coverage="abdomen-pelvis", n_slices=200, template_step_mm=16.0)
    small = pv.volume
    hu = np.repeat(np.repeat(np.repeat(small.hu, 2, axis=0), 2, axis=1), 2, axis=2)
    affine = small.affine.copy()
    affine[:3, :3] /= 2.0
    # Keep voxel centres where they were: shift the origin by a quarter of the old spacing.
    affine[:3, 3] -= (small.affine[:3, :3] @ np.full(3, 0.25))
    vol = CTVolume(hu=hu, affine=affine, series=small.series, patient=small.patient)
    l3 = pv.vertebra("L3")
    return vol, (l3.z_mm if l3 is not None else float("nan"))


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    vol, truth_z = build_volume()
    find_l3(vol)  # warm-up (imports, page faults)
    ref = timed(lambda: np.count_nonzero(vol.hu > 180), args.repeats)
    loc = timed(lambda: find_l3(vol), args.repeats)
    choice = find_l3(vol)
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "spine.png"
        render_spine(vol, choice, png)  # warm-up (matplotlib import)
        ren = timed(lambda: render_spine(vol, choice, png), args.repeats)
    med_ref, med_loc, med_ren = (statistics.median(x) for x in (ref, loc, ren))
    print(f"volume {vol.hu.shape} {vol.hu.dtype}, {vol.hu.nbytes / 1e6:.0f} MB; "
          f"L3 found at z {choice.z_mm[0]:.1f} mm (truth {truth_z:.1f} mm)")
    print("| step | median s | min s | max s | × one full pass |")
    print("|---|---|---|---|---|")
    for name, xs, med in (("one full pass (hu > 180)", ref, med_ref),
                          ("find_l3", loc, med_loc),
                          ("render_spine", ren, med_ren)):
        print(f"| {name} | {med:.3f} | {min(xs):.3f} | {max(xs):.3f} | {med / med_ref:.1f} |")
    print(f"repeats: {args.repeats}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
