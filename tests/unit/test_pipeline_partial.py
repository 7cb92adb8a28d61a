"""``--slices`` on DICOM decodes only the named slices: every output equals a full read's."""

from __future__ import annotations

import numpy as np
import pytest

from sarcoscope.errors import InputError
from sarcoscope.export.csv import result_rows
from sarcoscope.export.labels_nifti import display_label_volume, source_grid_labels
from sarcoscope.export.result_json import result_to_dict
from sarcoscope.io import open_dicom, read_ct
from sarcoscope.phantom import write_dicom_series
from sarcoscope.pipeline import analyze
from sarcoscope.render.overlay import render_overlay_image
from sarcoscope.settings import AnalysisSettings
from sarcoscope.types import CTVolume
from tests.e2e._fakes import LookupSegmenter, make_volume

N = 9


@pytest.fixture(scope="module", params=["HFS", "FFS"])
def series(request, tmp_path_factory):
    """A 9-slice DICOM series, each slice with a different muscle area (head- or feet-first)."""
    vol, labels = make_volume(N, muscle_rows_per_slice=tuple(range(4, 4 + N)))
    out = tmp_path_factory.mktemp(f"series-{request.param}")
    write_dicom_series(vol, out, patient_position=request.param)
    return out, labels


def _comparable(result) -> dict:
    doc = result_to_dict(result)
    doc.pop("timings_s")
    doc.pop("created_utc")
    return doc


@pytest.mark.parametrize("spec", ["6", "1,7,3", "2:4"])
def test_partial_read_reports_what_a_full_read_reports(series, spec):
    path, labels = series
    settings = AnalysisSettings(slices=spec)
    partial = analyze(path, settings, segmenter=LookupSegmenter())
    full = analyze(read_ct(path), settings, segmenter=LookupSegmenter())
    assert not full.volume.is_partial
    # Only the named slices were decoded, yet the volume describes the whole stack.
    wanted = sorted(partial.choice.indices)
    assert partial.volume.is_partial and partial.volume.stack_indices == tuple(wanted)
    assert partial.volume.hu.shape[0] == len(wanted)
    assert partial.volume.shape == full.volume.hu.shape
    assert partial.choice == full.choice
    for m_p, m_f in zip(partial.measurements, full.measurements):
        k = m_f.slice_index
        assert m_p.slice_index == k
        assert m_p.tissues["muscle"].n_pixels == int((labels[k] == 1).sum())
    assert _comparable(partial) == _comparable(full)
    assert result_rows(partial, "x") == result_rows(full, "x")
    lab_p, aff_p = source_grid_labels(partial.volume, display_label_volume(partial))
    lab_f, aff_f = source_grid_labels(full.volume, display_label_volume(full))
    assert lab_p.shape == lab_f.shape == (50, 40, N)  # (column, row, slice) of the whole series
    np.testing.assert_array_equal(lab_p, lab_f)
    np.testing.assert_allclose(aff_p, aff_f)
    assert np.count_nonzero(lab_p.reshape(-1, N).any(axis=0)) == len(wanted)
    for k in wanted:
        a = np.asarray(render_overlay_image(partial, k))
        b = np.asarray(render_overlay_image(full, k))
        np.testing.assert_array_equal(a, b)


def test_out_of_range_slice_is_refused_like_a_full_read(series):
    path, _ = series
    with pytest.raises(InputError, match=rf"--slices {N}: slice index {N} is out of range; the input has {N} slice"):
        analyze(path, AnalysisSettings(slices=str(N)), segmenter=LookupSegmenter())


def test_load_slices_keeps_full_stack_geometry(series):
    path, _ = series
    opened = open_dicom(path)
    full = opened.load()
    part = opened.load_slices([5, 1])
    assert part.stack_indices == (1, 5) and part.n_slices == N
    np.testing.assert_array_equal(part.hu, full.hu[[1, 5]])
    np.testing.assert_allclose(part.affine, full.affine)
    assert part.slice_uids == full.slice_uids and part.slice_files == full.slice_files
    assert part.source_grid is not None and full.source_grid is not None
    assert part.source_grid.shape == full.source_grid.shape
    np.testing.assert_allclose(part.source_grid.affine, full.source_grid.affine)
    for k in (1, 5):
        assert part.z_mm(k) == pytest.approx(full.z_mm(k))
        np.testing.assert_array_equal(part.slice_hu(k), full.slice_hu(k))
    with pytest.raises(IndexError, match="slice 2 was not decoded in this partial read"):
        part.slice_hu(2)
    with pytest.raises(InputError, match=rf"slice index {N} is outside the series' 0…{N - 1}"):
        opened.load_slices([0, N])


def test_auto_l3_refuses_a_partial_volume(series):
    path, _ = series
    part = open_dicom(path).load_slices([2])
    with pytest.raises(InputError, match="the L3 finder needs the whole series"):
        analyze(part, AnalysisSettings(), segmenter=LookupSegmenter())
    with pytest.raises(InputError, match=r"--slices 3: slice 3 was not decoded in this partial read"):
        analyze(part, AnalysisSettings(slices="3"), segmenter=LookupSegmenter())
    assert analyze(part, AnalysisSettings(slices="2"), segmenter=LookupSegmenter()).choice.indices == (2,)


def test_partial_volume_invariants_are_checked():
    vol, _ = make_volume(3)
    kw = dict(affine=vol.affine, series=vol.series)
    with pytest.raises(ValueError, match="stack_indices has 2 entries for 3 decoded slices"):
        CTVolume(hu=vol.hu, stack_indices=(0, 1), stack_size=5, **kw)
    with pytest.raises(ValueError, match="strictly increasing"):
        CTVolume(hu=vol.hu, stack_indices=(0, 2, 2), stack_size=5, **kw)
    with pytest.raises(ValueError, match="fall outside 0…3"):
        CTVolume(hu=vol.hu, stack_indices=(0, 2, 4), stack_size=4, **kw)
    with pytest.raises(ValueError, match="slice_uids has 3 entries for 5 slices"):
        CTVolume(hu=vol.hu, stack_indices=(0, 2, 4), stack_size=5, slice_uids=("a", "b", "c"), **kw)
    with pytest.raises(ValueError, match="stack_size 4 given for a full volume of 3 slices"):
        CTVolume(hu=vol.hu, stack_size=4, **kw)
    ok = CTVolume(hu=vol.hu, stack_indices=(0, 2, 4), stack_size=5, **kw)
    assert ok.n_slices == 5 and ok.shape == (5, 40, 50) and ok.loaded_position(4) == 2
    assert ok.loaded_position(3) is None


# ------------------------------------------------------------------ automatic L3, thin slices


@pytest.fixture(scope="module")
def thin_series(tmp_path_factory):
    """A 1.25 mm phantom series (stride 2 for the L3 finder) with its true L3 slice."""
    from sarcoscope import phantom

    params = phantom.random_params(np.random.default_rng(102), matrix=(256, 256))
    ph = phantom.make_volume(params, phantom.random_spine(np.random.default_rng(102)),
                             coverage="abdomen", slice_spacing_mm=1.25)
    out = tmp_path_factory.mktemp("thin")
    write_dicom_series(ph.volume, out)
    return out, ph


def test_auto_l3_on_thin_slices_decodes_a_strided_subset_and_the_chosen_slice(thin_series, tmp_path):
    from sarcoscope.cli.analyze import write_outputs
    from sarcoscope.pipeline import locate_stride

    path, ph = thin_series
    n = ph.volume.n_slices
    assert locate_stride(1.25, n) == 2
    fast = analyze(path, AnalysisSettings(segmenter="baseline"))
    full = analyze(read_ct(path), AnalysisSettings(segmenter="baseline"))
    k = fast.choice.indices[0]
    assert fast.choice.method == "auto" and fast.volume.is_partial
    assert fast.volume.stack_indices == (k,) and fast.volume.n_slices == n
    assert fast.overview is not None and fast.overview.n_slices == (n + 1) // 2
    # Same level as the finder on every slice (within one slice), near the truth.
    assert abs(k - full.choice.indices[0]) <= 1
    assert abs(k - ph.l3_index) * 1.25 <= 2.5
    # The chosen slice is measured exactly as a full read measures that slice.
    again = analyze(read_ct(path), AnalysisSettings(segmenter="baseline", slices=str(k)))
    assert fast.measurements[0].tissues == again.measurements[0].tissues
    assert fast.measurements[0].z_mm == pytest.approx(again.measurements[0].z_mm)
    doc = result_to_dict(fast)
    assert doc["l3"]["index"] == k and doc["slices"][0]["index"] == k
    assert doc["source"]["shape"] == [n, 256, 256]
    written = write_outputs(fast, out_dir=tmp_path / "out", labels_path=tmp_path / "l.nii.gz")
    names = sorted(p.name for p in written.paths)
    assert names == ["l.nii.gz", "overlay.png", "result.json", "spine.png"]
    import nibabel as nib

    lab = np.asarray(nib.load(tmp_path / "l.nii.gz").dataobj)
    assert lab.shape == (256, 256, n)
    assert [kk for kk in range(n) if lab[:, :, kk].any()] == [k]


def test_auto_l3_averaging_band_is_taken_on_the_full_stack(thin_series):
    path, _ = thin_series
    fast = analyze(path, AnalysisSettings(segmenter="baseline", average_mm=2.5))
    ks = fast.choice.indices
    assert ks == tuple(range(ks[0], ks[0] + 5))  # ±2.5 mm at 1.25 mm: 5 consecutive slices
    assert fast.volume.stack_indices == ks
    assert len(fast.measurements) == 5


def test_thick_or_short_series_keep_the_full_read():
    from sarcoscope.pipeline import locate_stride

    assert locate_stride(2.5, 300) == 1
    assert locate_stride(3.0, 300) == 1
    assert locate_stride(0.625, 600) == 3
    assert locate_stride(1.0, 10) == 1
