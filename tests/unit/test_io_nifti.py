"""NIfTI reading: RAS→LPS, any axis-aligned storage order, source grid, --slices mapping."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sarcoscope.errors import GeometryError, InputError
from sarcoscope.io import read_ct, source_to_display_index
from sarcoscope.io.reader import display_to_source_index
from sarcoscope.tissues import AIR_HU
from tests.unit.test_io_factory import expected_display_hu, world_hu

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _write(path: Path, affine_ras: np.ndarray, shape=(12, 10, 6), dtype=np.int16, slope=None) -> np.ndarray:
    """Write a NIfTI whose voxels hold world_hu at their LPS position; returns the stored array."""
    idx = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"), axis=-1)
    ras = np.concatenate([idx, np.ones(shape + (1,))], axis=-1) @ affine_ras.T
    lps = ras @ RAS_TO_LPS.T
    data = world_hu(lps[..., 0], lps[..., 1], lps[..., 2]).astype(dtype)
    img = nib.Nifti1Image(data, affine_ras)
    if slope is not None:
        img.header.set_slope_inter(*slope)
    nib.save(img, str(path))
    return data


def _affine(columns: list[list[float]], origin=(20.0, -15.0, -40.0)) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = np.array(columns, dtype=float).T
    a[:3, 3] = origin
    return a


# Integral spacings (1, 2, 3 mm on different axes) keep world_hu exact after the float32
# round trip of the NIfTI header while still telling the axes apart.
AFFINES = {
    "RAS": _affine([[1, 0, 0], [0, 2, 0], [0, 0, 3]]),
    "LPS_stored": _affine([[-1, 0, 0], [0, -2, 0], [0, 0, 3]]),
    "LAS": _affine([[-1, 0, 0], [0, 2, 0], [0, 0, 3]]),
    "z_flipped": _affine([[1, 0, 0], [0, 2, 0], [0, 0, -3]]),
    "coronal_stored": _affine([[1, 0, 0], [0, 0, 3], [0, 2, 0]]),
    "permuted": _affine([[0, 2, 0], [-1, 0, 0], [0, 0, 3]]),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_orientations_reach_display_convention(tmp_path: Path, name: str, suffix: str) -> None:
    path = tmp_path / f"ct{suffix}"
    stored = _write(path, AFFINES[name])
    vol = read_ct(path)
    a = vol.affine
    assert a[0, 0] > 0 and a[1, 1] > 0 and a[2, 2] > 0, a.round(3).tolist()
    np.testing.assert_array_equal(vol.hu.astype(np.int32), expected_display_hu(vol))
    assert vol.series.format == "nifti"
    grid = vol.source_grid
    assert grid.shape == stored.shape
    np.testing.assert_allclose(grid.affine, AFFINES[name])
    np.testing.assert_array_equal(grid.to_source(vol.hu), stored)


def test_slices_count_along_stored_third_axis(tmp_path: Path) -> None:
    path = tmp_path / "flipped.nii.gz"
    stored = _write(path, AFFINES["z_flipped"])
    vol = read_ct(path)
    for k_src in (0, 2, 5):
        k = source_to_display_index(vol, k_src)
        np.testing.assert_array_equal(vol.hu[k].T[::-1, ::-1], stored[:, :, k_src])  # RAS x,y vs display i,j
        assert display_to_source_index(vol, k) == k_src
    with pytest.raises(InputError, match="outside the NIfTI's third axis 0…5"):
        source_to_display_index(vol, 6)


def test_slices_refused_when_third_axis_is_not_axial(tmp_path: Path) -> None:
    path = tmp_path / "cor.nii"
    _write(path, AFFINES["coronal_stored"])
    vol = read_ct(path)
    assert any("third axis" in w for w in vol.series.warnings)
    with pytest.raises(InputError, match="third axis is not the body axis"):
        source_to_display_index(vol, 0)


def test_float_nifti_with_scaling_and_padding(tmp_path: Path) -> None:
    path = tmp_path / "f.nii.gz"
    data = np.full((8, 8, 3), 40.0, dtype=np.float32)
    data[:4] = -3024.0
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    vol = read_ct(path)
    assert vol.hu.dtype == np.float32
    assert vol.hu.min() == AIR_HU and vol.padding_fraction == pytest.approx(0.5)
    assert any("-3024" in w for w in vol.series.warnings)


def test_scaled_integer_nifti(tmp_path: Path) -> None:
    path = tmp_path / "s.nii"
    raw = np.full((6, 6, 2), 1064, dtype=np.uint16)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(1.0, -1024.0)
    nib.save(img, str(path))
    vol = read_ct(path)
    assert vol.hu.dtype == np.int16 and np.all(vol.hu == 40)


def test_four_d_nifti(tmp_path: Path) -> None:
    one = tmp_path / "one.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 1), np.int16) - 1000, np.eye(4)), str(one))
    assert read_ct(one).hu.shape == (3, 4, 4)
    many = tmp_path / "many.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.int16), np.eye(4)), str(many))
    with pytest.raises(InputError, match=r"many.nii: NIfTI has shape \(4, 4, 3, 2\); sarcoscope needs one 3-D"):
        read_ct(many)


def test_truncated_nifti_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.nii.gz"
    _write(path, AFFINES["RAS"])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"t.nii.gz: cannot read this NIfTI file"):
        read_ct(path)


def test_nifti_not_in_hu_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "raw.nii"
    nib.save(nib.Nifti1Image(np.full((4, 4, 2), 1000, np.int16), np.eye(4)), str(path))
    vol = read_ct(path)
    assert any("may not be in Hounsfield units" in w for w in vol.series.warnings)


def _signed_permutations():
    import itertools

    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            cols = np.zeros((3, 3))
            for stored_axis, (world_axis, sign) in enumerate(zip(perm, signs)):
                cols[world_axis, stored_axis] = sign * (stored_axis + 1)  # spacing 1, 2, 3 mm
            yield cols


@pytest.mark.parametrize("index", range(48))
def test_all_48_axis_aligned_nifti_layouts(tmp_path: Path, index: int) -> None:
    cols = list(_signed_permutations())[index]
    affine = np.eye(4)
    affine[:3, :3] = cols
    affine[:3, 3] = (3.0, -4.0, -30.0)
    path = tmp_path / "ct.nii"
    stored = _write(path, affine, shape=(5, 4, 3))
    vol = read_ct(path)
    a = vol.affine
    assert a[0, 0] > 0 and a[1, 1] > 0 and a[2, 2] > 0
    np.testing.assert_array_equal(vol.hu.astype(np.int32), expected_display_hu(vol))
    np.testing.assert_array_equal(vol.source_grid.to_source(vol.hu), stored)


def test_nifti_without_orientation_codes_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "nocode.nii"
    nib.save(nib.Nifti1Image(np.full((4, 4, 2), -1000, np.int16), None), str(path))
    vol = read_ct(path)
    assert any("neither sform nor qform" in w for w in vol.series.warnings)
    ok = tmp_path / "ok.nii"
    nib.save(nib.Nifti1Image(np.full((4, 4, 2), -1000, np.int16), np.eye(4)), str(ok))
    assert not any("sform" in w for w in read_ct(ok).series.warnings)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_truncated_in_its_image_data_names_the_file(tmp_path: Path, suffix: str) -> None:
    # The header survives, so nibabel opens the file and only fails when the voxels are read:
    # EOFError (gzip) became a CLI "aborted" (exit 130), OSError (plain) an internal error.
    path = tmp_path / f"cut{suffix}"
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1000, size=(48, 48, 24), dtype=np.int16)  # incompressible-ish
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match=rf"cut{re.escape(suffix)}: the NIfTI file is truncated or damaged.*"
                       r"re-export or re-download it"):
        read_ct(path)


def test_no_eoferror_escapes_read_ct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sarcoscope.io.reader as reader

    def boom(path: Path):
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    monkeypatch.setattr(reader, "read_nifti", boom)
    path = tmp_path / "x.nii.gz"
    path.write_bytes(b"\x1f\x8b")
    with pytest.raises(InputError, match=r"x.nii.gz: a file of this input ends unexpectedly.*truncated"):
        read_ct(path)


def _rotated_about_x(degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    rot = np.eye(4)
    rot[1:3, 1:3] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return rot @ AFFINES["RAS"]


def test_oblique_nifti_is_flagged_and_too_oblique_refused(tmp_path: Path) -> None:
    # A slice plane leaning 25° from axial (an oblique reformat) used to be read silently;
    # it now gets the DICOM reader's rule (io.geometry.check_axial_plane).
    path = tmp_path / "obl25.nii.gz"
    _write(path, _rotated_about_x(25))
    vol = read_ct(path)
    assert any("the slices are oblique, angled 25.0° from axial" in w and "10% larger" in w
               for w in vol.series.warnings), vol.series.warnings
    assert np.abs(vol.hu.astype(np.int32) - expected_display_hu(vol)).max() <= 1
    steep = tmp_path / "obl40.nii.gz"
    _write(steep, _rotated_about_x(40))
    with pytest.raises(GeometryError, match=r"obl40.nii.gz: the slices are oblique, angled 40° from axial.*"
                       r"reformat the scan to axial"):
        read_ct(steep)
    straight = tmp_path / "obl3.nii.gz"
    _write(straight, _rotated_about_x(3))
    assert not any("oblique" in w for w in read_ct(straight).series.warnings)


def test_truncated_gzip_nifti_exits_2_not_aborted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # What the user saw: "aborted", exit 130 (click turns an escaping EOFError into Abort).
    from sarcoscope.cli.main import main

    path = tmp_path / "cut.nii.gz"
    rng = np.random.default_rng(1)
    nib.save(nib.Nifti1Image(rng.integers(-1000, 1000, size=(48, 48, 24), dtype=np.int16), np.eye(4)), str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code = main(["analyze", str(path), "--out", str(tmp_path / "out"), "--segmenter", "baseline"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert "cut.nii.gz: the NIfTI file is truncated or damaged" in err and "aborted" not in err
