"""overlay.png: colours where the labels are, radiological orientation, square pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sarcoscope.pipeline import analyze
from sarcoscope.render.overlay import (
    IMAGE_PX,
    primary_index,
    render_overlay,
    render_overlay_image,
    window_to_uint8,
)
from sarcoscope.settings import AnalysisSettings
from sarcoscope.tissues import TISSUE_INFO, Tissue
from tests.e2e._fakes import LookupSegmenter, make_volume


def _result(slices="1,3"):
    vol, labels = make_volume(5, spacing=(2.5, 0.8, 0.8))
    return analyze(vol, AnalysisSettings(slices=slices), segmenter=LookupSegmenter()), labels


def test_soft_tissue_window():
    hu = np.array([-1000, -160, 40, 240, 3000], dtype=np.float32)
    assert window_to_uint8(hu).tolist() == [0, 0, 127, 255, 255]


def test_overlay_colours_each_class_at_its_pixels(tmp_path):
    result, labels = _result()
    path = render_overlay(result, 3, tmp_path / "overlay.png")
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    scale = IMAGE_PX / 50  # image px per CT pixel: the 50 columns fill IMAGE_PX
    assert img.shape[1] > IMAGE_PX  # image + side panel
    for tissue, (r, c) in {Tissue.MUSCLE: (6, 15), Tissue.VAT: (25, 15), Tissue.SAT: (34, 25)}.items():
        assert labels[3][r, c] == tissue
        y, x = int((r + 0.5) * scale), int((c + 0.5) * scale)
        pixel = img[y, x]
        rgb = np.array(TISSUE_INFO[tissue].rgb)
        grey = window_to_uint8(np.array([{1: 40, 3: -90, 4: -100}[int(tissue)]], dtype=np.float32))[0]
        expected = 0.55 * grey + 0.45 * rgb
        assert np.abs(pixel - expected).max() <= 3, (tissue, pixel, expected)
    # Background air stays black (no colour where there is no label).
    assert img[int(38.5 * scale), int(2 * scale)].max() <= 2


def test_patient_left_stays_on_image_right(tmp_path):
    """The muscle patch at columns 40-44 (patient's left) is drawn on the right half."""
    result, labels = _result()
    img = np.asarray(render_overlay_image(result, 1).convert("RGB")).astype(int)
    scale = IMAGE_PX / 50
    red = (img[:, :, 0] > 120) & (img[:, :, 1] < 90)
    top = red[: int(2 * scale) - 2, : IMAGE_PX]  # rows 0-1: only the patch at columns 40-44
    cols = np.where(top.any(axis=0))[0]
    assert cols.min() >= int(40 * scale) - 2 and cols.max() <= int(45 * scale) + 2


def test_non_square_pixels_are_resampled_to_square(tmp_path):
    vol, _ = make_volume(2, spacing=(2.5, 1.6, 0.8))  # rows twice as tall as columns
    result = analyze(vol, AnalysisSettings(slices="0"), segmenter=LookupSegmenter())
    img = render_overlay_image(result)
    h_mm, w_mm = 40 * 1.6, 50 * 0.8
    # The image part keeps the physical aspect: 64 mm tall vs 40 mm wide → height = IMAGE_PX.
    body = np.asarray(img.convert("L"))[:, : int(IMAGE_PX * w_mm / h_mm) + 1]
    assert img.size[1] >= IMAGE_PX and body.shape[0] >= IMAGE_PX


def test_default_slice_and_unknown_slice():
    result, _ = _result("3,1")
    assert primary_index(result) == 3  # manual: the first asked
    with pytest.raises(ValueError, match=r"slice 2 was not analysed; analysed slices: \(3, 1\)"):
        render_overlay_image(result, 2)
