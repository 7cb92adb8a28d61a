"""Inputs that are not CT in Hounsfield units are refused before anything is measured."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sarcoscope.errors import InputError
from sarcoscope.phantom import make_slice, random_params
from sarcoscope.pipeline import analyze
from sarcoscope.segment.plausibility import check_hounsfield
from sarcoscope.settings import AnalysisSettings
from tests.e2e._fakes import LookupSegmenter
from tests.e2e._fakes import make_volume as fake_volume


@pytest.fixture(scope="module")
def l3_slice():
    return make_slice(random_params(np.random.default_rng(4)), level="L3")


def test_a_ct_slice_passes(l3_slice):
    check_hounsfield(np.asarray(l3_slice.hu, dtype=np.float32), "scan")


def test_a_label_map_is_not_hounsfield_units(l3_slice):
    with pytest.raises(InputError, match=r"labels.nii: values 0…4 with no fat or air.*label map"):
        check_hounsfield(np.asarray(l3_slice.labels), "labels.nii")


def test_values_stored_without_the_rescale_intercept_are_refused(l3_slice):
    stored = np.asarray(l3_slice.hu, dtype=np.float32) + 1024  # unsigned storage, intercept lost
    with pytest.raises(InputError, match=r"rescale intercept.*RescaleIntercept"):
        check_hounsfield(stored, "scan.nii")


def test_lost_intercept_is_refused_even_with_padding_masked_to_air(l3_slice):
    # the reader sets padding to −1024 HU: that ring looks like air while the body is unshifted
    stored = np.asarray(l3_slice.hu, dtype=np.float32) + 1024
    rows, cols = np.ogrid[: stored.shape[0], : stored.shape[1]]
    outside = (rows - stored.shape[0] / 2) ** 2 + (cols - stored.shape[1] / 2) ** 2 > (0.48 * stored.shape[0]) ** 2
    stored[outside] = -1024
    with pytest.raises(InputError, match=r"scan.dcm: the body's pixels have a median of \d+.*RescaleIntercept"):
        check_hounsfield(stored, "scan.dcm")


def test_a_constant_image_is_refused():
    with pytest.raises(InputError, match=r"slope0.dcm: every pixel has the same value \(-1024\).*RescaleSlope"):
        check_hounsfield(np.full((3, 64, 64), -1024.0), "slope0.dcm")


def test_analyze_refuses_a_label_map_before_segmenting():
    vol, labels = fake_volume(3)
    as_labels = dataclasses.replace(vol, hu=labels.astype(np.int16))
    seg = LookupSegmenter()
    with pytest.raises(InputError, match="the volume given: values 0…4 with no fat or air"):
        analyze(as_labels, AnalysisSettings(slices="1"), segmenter=seg)
    assert seg.calls == 0
    assert analyze(vol, AnalysisSettings(slices="1"), segmenter=seg).choice.indices == (1,)


def test_a_single_slice_says_its_level_is_not_checked():
    vol, _ = fake_volume(1)
    result = analyze(vol, AnalysisSettings(), segmenter=LookupSegmenter())
    assert any("single-slice input: its vertebral level cannot be checked" in w for w in result.warnings)


def test_an_upside_down_nifti_is_refused_and_a_right_one_is_not(real_ct, tmp_path):
    import nibabel as nib

    from sarcoscope.io import read_ct
    from sarcoscope.locate.orientation import spine_pattern_share, upside_down
    from sarcoscope.phantom import make_volume, write_nifti

    volume = read_ct(real_ct / "ts-liver-dome-j2k")  # real CT, 20 slices
    right = write_nifti(volume, tmp_path / "right.nii")
    img = nib.load(str(right))
    wrong_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine  # LPS labelled as RAS
    wrong = tmp_path / "wrong.nii"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), wrong_affine), str(wrong))
    seg = LookupSegmenter()
    assert analyze(right, AnalysisSettings(slices="10"), segmenter=seg).choice.indices
    with pytest.raises(InputError, match=r"wrong.nii: the image is upside down.*LPS coordinates labelled as RAS"):
        analyze(wrong, AnalysisSettings(slices="10"), segmenter=seg)
    assert spine_pattern_share(read_ct(right)) >= 0.5
    # a phantom volume, where the pattern matches both ways, is never called upside down
    ph = make_volume(random_params(np.random.default_rng(1), matrix=(128, 128), pixel_spacing_mm=3.0),
                     coverage="abdomen", slice_spacing_mm=10.0)
    assert not upside_down(ph.volume)
