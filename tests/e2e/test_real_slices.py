"""Real CT slices through the CLI: read, oriented (anterior up), segmented, written."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from sarcoscope.cli.main import main


def test_real_abdominal_slice_with_flipped_rows(real_ct, tmp_path, capsys):
    """explicit_VR-UN.dcm stores its rows posterior→anterior (ImageOrientationPatient
    1,0,0,0,-1,0); the overlay must still show anterior up: the vertebral body (bone) lies in
    the lower half of the picture and the muscle areas are those of an adult abdomen."""
    src = real_ct / "edge-cases" / "explicit_VR-UN.dcm"
    out = tmp_path / "out"
    rc = main(["analyze", str(src), "--out", str(out), "--segmenter", "baseline",
               "--sex", "F", "--height-cm", "165"])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert doc["slice_selection"]["method"] == "single"
    t = doc["slices"][0]["tissues"]
    # Broad adult L1–L3 ranges (shared/ANATOMY.md), not a precision claim.
    assert 50 <= t["muscle"]["area_cm2"] <= 250
    assert 20 <= t["sat"]["area_cm2"] <= 600
    assert 10 <= t["vat"]["area_cm2"] <= 400
    assert 20 <= t["muscle"]["mean_hu"] <= 70
    img = np.asarray(Image.open(out / "overlay.png").convert("L")).astype(int)
    side = min(img.shape[0], 512)
    picture = img[:side, :side]
    rows = np.where((picture > 250).sum(axis=1) > 5)[0]  # bone saturates the W400/L40 window
    assert rows.size and np.median(rows) > side / 2  # the spine is posterior: lower half
