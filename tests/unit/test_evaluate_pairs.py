"""`sarcoscope evaluate --images --references` on DICOM + NIfTI label map written from a phantom."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sarcoscope.cli.main import main
from sarcoscope.types import CTVolume, SeriesInfo


def test_evaluate_dicom_against_nifti_labels(tmp_path: Path) -> None:
    import nibabel as nib

    from sarcoscope.phantom import make_slice, random_params, write_dicom_series
    from sarcoscope.train.annotations import read_nifti_labels

    s = make_slice(random_params(np.random.default_rng(77), matrix=(192, 192), pixel_spacing_mm=2.0), level="L3")
    sp = s.pixel_spacing_mm
    vol = CTVolume(hu=np.round(s.hu)[None].astype(np.int16), affine=np.diag([sp[1], sp[0], 1.0, 1.0]),
                   series=SeriesInfo(source_path="p", format="phantom"))
    (dcm,) = write_dicom_series(vol, tmp_path / "ct")
    # NIfTI stores (i, j, k) in RAS: i runs right→left = −x in RAS, j anterior→posterior = −y
    ref = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(s.labels.T[:, :, None].astype(np.uint8), np.diag([-sp[1], -sp[0], 1.0, 1.0])), ref)
    assert np.array_equal(read_nifti_labels(ref)[0], s.labels)

    out = tmp_path / "eval"
    code = main(["evaluate", "--images", str(dcm), "--references", str(ref), "--segmenter", "baseline",
                 "--out", str(out)])
    assert code == 0
    rows = (out / "cases_baseline.csv").read_text().splitlines()
    assert len(rows) == 2
    header, values = rows[0].split(","), rows[1].split(",")
    row = dict(zip(header, values))
    ref_muscle = float((s.labels == 1).sum()) * sp[0] * sp[1] / 100
    assert math.isclose(float(row["muscle_ref_area_cm2"]), ref_muscle, rel_tol=1e-3)
    assert float(row["muscle_dice"]) > 0.5  # the baseline finds the muscle it should
