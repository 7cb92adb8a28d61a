"""Phantom studies on disk for the end-to-end tests (built once per session, kept small)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

#: Small but realistic: 256×256 pixels of 1.56 mm (a 400 mm field of view), 3 mm slices,
#: lower chest to sacrum so the L3 finder can count. Seed chosen once; see test docstrings.
MATRIX = 256
PIXEL_MM = 1.56
SLICE_MM = 3.0
SEED = 0


@dataclass(frozen=True)
class Study:
    truth: object  # phantom.PhantomVolume
    dicom_dir: Path
    dicom_ffs_dir: Path
    nifti: Path
    nifti_flipped: Path  # stored k axis superior → inferior (affine with negative z step)
    root: Path

    @property
    def l3(self) -> int:
        return int(self.truth.l3_index)

    def true_areas_cm2(self, k: int) -> dict[str, float]:
        from sarcoscope.tissues import TISSUE_INFO

        px = PIXEL_MM * PIXEL_MM / 100.0
        lab = self.truth.labels[k]
        return {info.key: float((lab == int(t)).sum()) * px for t, info in TISSUE_INFO.items()}


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Study:
    import nibabel as nib

    from sarcoscope import phantom

    root = tmp_path_factory.mktemp("phantom-study")
    params = phantom.random_params(
        np.random.default_rng(SEED), matrix=(MATRIX, MATRIX), pixel_spacing_mm=PIXEL_MM
    )
    truth = phantom.make_volume(params, coverage="abdomen", slice_spacing_mm=SLICE_MM)
    assert truth.l3_index is not None
    phantom.write_dicom_series(truth.volume, root / "dicom")
    phantom.write_dicom_series(truth.volume, root / "dicom-ffs", patient_position="FFS")
    nifti = phantom.write_nifti(truth.volume, root / "ct.nii.gz")
    img = nib.load(nifti)
    data = np.asarray(img.dataobj)[:, :, ::-1]
    n = data.shape[2]
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1.0, n - 1.0  # stored k' = n-1-k
    flipped = nib.Nifti1Image(np.ascontiguousarray(data), img.affine @ flip)
    flipped.set_qform(img.affine @ flip, code=1)
    flipped.set_sform(img.affine @ flip, code=1)
    nib.save(flipped, str(root / "ct-flipped.nii.gz"))
    return Study(truth, root / "dicom", root / "dicom-ffs", nifti, root / "ct-flipped.nii.gz", root)
