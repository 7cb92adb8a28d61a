"""Does locating L3 on a strided subset of a thin-slice series change the chosen slice?

For N phantoms (256×256, slice spacing drawn from 0.625/0.8/1.0/1.25 mm, coverage
abdomen / whole / abdomen-pelvis, random spine variants), runs ``locate.find_l3`` on every
slice and on every s-th slice (s = round(2 mm / spacing), as ``pipeline.locate_stride``),
maps the strided answer back to the full stack the way ``pipeline`` does (the L3 level's z,
nearest slice) and prints one JSON line per case: true, full and strided indices and the
confidences, for the definitions mid-L3 and L3-inferior-endplate.

Usage::

    .venv/bin/python benchmarks/eval_locate_stride.py N [FIRST_SEED]
"""
import json
import sys
import time

import numpy as np

from sarcoscope import phantom
from sarcoscope.errors import L3NotFound
from sarcoscope.locate import LocateSettings, find_l3
from sarcoscope.types import CTVolume

def strided(vol, s):
    aff = vol.affine.copy(); aff[:3, 2] *= s
    return CTVolume(hu=vol.hu[::s], affine=aff, series=vol.series, patient=vol.patient)

def to_stack(vol, choice_s, def_="mid-L3"):
    l3 = [v for v in choice_s.vertebrae if v.name == "L3"][0]
    z = l3.z_mm if def_ == "mid-L3" else l3.z_bottom_mm
    zs = np.array([vol.z_mm(k) for k in range(vol.n_slices)])
    return int(np.argmin(np.abs(zs - z)))

n = int(sys.argv[1]); seed0 = int(sys.argv[2]) if len(sys.argv) > 2 else 100
rows = []
for i in range(n):
    rng = np.random.default_rng(seed0 + i)
    dz = float(rng.choice([0.625, 0.8, 1.0, 1.25]))
    cov = str(rng.choice(["abdomen", "whole", "abdomen-pelvis"]))
    params = phantom.random_params(rng, matrix=(256, 256))
    spine = phantom.random_spine(rng)
    t0 = time.perf_counter()
    ph = phantom.make_volume(params, spine, coverage=cov, slice_spacing_mm=dz)
    t1 = time.perf_counter()
    vol = ph.volume
    s = max(1, int(round(2.0 / vol.spacing_mm[0])))
    out = {"seed": seed0 + i, "dz": dz, "n": vol.n_slices, "cov": cov, "variant": ph.variant, "true": ph.l3_index, "s": s}
    for def_ in ("mid-L3", "L3-inferior-endplate"):
        st = LocateSettings(definition=def_)
        try:
            a = find_l3(vol, st); ka = a.indices[0]; ca = a.confidence
        except L3NotFound:
            ka, ca = None, None
        try:
            b = find_l3(strided(vol, s), st); kb = to_stack(vol, b, def_); cb = b.confidence
        except L3NotFound:
            kb, cb = None, None
        out[def_] = {"full": ka, "strided": kb, "conf": [ca, cb]}
    t2 = time.perf_counter()
    out["gen_s"] = round(t1 - t0, 1); out["loc_s"] = round(t2 - t1, 1)
    print(json.dumps(out), flush=True)
