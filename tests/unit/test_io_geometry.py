"""Geometry helpers and oblique / padding-range inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from sarcoscope.errors import GeometryError, InputError
from sarcoscope.io import read_ct
from sarcoscope.io.geometry import check_stack, display_mapping, is_axial, plane_name
from sarcoscope.io.patient import RawPatient, parse_patient
from sarcoscope.tissues import AIR_HU
from tests.unit.test_io_factory import expected_display_hu, write_series


def test_display_mapping_permutation_and_flips() -> None:
    # stored axes: 0 → -z (feet-first stack), 1 → +x, 2 → -y
    steps = np.array([[0, 0, -2.0], [0.5, 0, 0], [0, -0.7, 0]])
    m = display_mapping(steps, np.array([10.0, 20.0, 30.0]), (5, 8, 9), "t")
    assert m.axes == (0, 2, 1) and m.flips == (True, True, False)
    # display origin: last stored slice, last stored column, first stored row
    np.testing.assert_allclose(m.affine[:3, 3], [10.0, 20.0 - 0.7 * 8, 30.0 - 2.0 * 4])
    np.testing.assert_allclose(np.diag(m.affine)[:3], [0.5, 0.7, 2.0])


def test_display_mapping_refuses_45_degree_oblique() -> None:
    c = np.sqrt(0.5)
    steps = np.array([[0, 0, 1.0], [c, c, 0], [-c, c, 0]])  # rows and columns both 45° from x
    with pytest.raises(GeometryError, match="too oblique to tell which is axial"):
        display_mapping(steps, np.zeros(3), (2, 2, 2), "oblique.nii")


def test_sheared_grid_refused() -> None:
    steps = np.array([[0, 0.3, 2.0], [1.0, 0, 0], [0, 1.0, 0]])  # slices shift in y: tilt
    with pytest.raises(GeometryError, match=r"tilt.nii: the voxel axes are not orthogonal .*gantry tilt"):
        display_mapping(steps, np.zeros(3), (3, 4, 4), "tilt.nii")


def test_plane_names() -> None:
    assert plane_name((1, 0, 0, 0, 1, 0)) == "axial" and is_axial((1, 0, 0, 0, 1, 0))
    assert plane_name((1, 0, 0, 0, 0, -1)) == "coronal" and not is_axial((1, 0, 0, 0, 0, -1))
    assert plane_name((0, 1, 0, 0, 0, -1)) == "sagittal"


def test_check_stack_reports_uneven_and_returns_mean_spacing() -> None:
    pos = np.array([[0, 0, z] for z in (0.0, 1.0, 2.1, 3.0, 4.0)])
    res = check_stack(pos, np.array([0, 0, 1.0]), (1.0, 1.0), "s")
    assert res.spacing_mm == pytest.approx(1.0) and res.max_gap_mm == pytest.approx(1.1)
    assert res.warnings and "uneven slice spacing" in res.warnings[0]


def test_in_plane_rotated_axial_keeps_true_cosines(tmp_path: Path) -> None:
    a = np.radians(10)
    orientation = (np.cos(a), np.sin(a), 0, -np.sin(a), np.cos(a), 0)
    write_series(tmp_path, n=3, orientation=orientation)
    vol = read_ct(tmp_path)
    np.testing.assert_allclose(vol.affine[:3, 0], [np.cos(a), np.sin(a), 0], atol=1e-6)
    assert np.abs(vol.hu.astype(np.int32) - expected_display_hu(vol)).max() <= 1


def test_oblique_plane_with_positions_along_its_normal_is_accepted(tmp_path: Path) -> None:
    a = np.radians(15)
    orientation = (1, 0, 0, 0, np.cos(a), np.sin(a))
    write_series(tmp_path, n=4, orientation=orientation, dz=2.0)
    vol = read_ct(tmp_path)
    assert vol.spacing_mm[0] == pytest.approx(2.0)
    assert np.abs(vol.hu.astype(np.int32) - expected_display_hu(vol)).max() <= 1
    assert not any("tilt" in w for w in vol.series.warnings)


def test_padding_range_limit(tmp_path: Path) -> None:
    (path,) = write_series(tmp_path, n=1, pixel_representation=1, intercept=0, padding_value=-2000)
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array.copy()
    raw[-3:, :] = -1995  # inside the padding range, not equal to the padding value
    ds.PixelData = raw.tobytes()
    ds.add_new(0x00280121, "SS", -1990)  # PixelPaddingRangeLimit
    ds.save_as(path)
    vol = read_ct(path)
    assert np.all(vol.hu[0, -3:, :] == AIR_HU) and np.all(vol.hu[0, :2, :2] == AIR_HU)
    assert vol.padding_fraction == pytest.approx((3 * 20 + 4) / (16 * 20))


@pytest.mark.parametrize(
    "raw,expected,warning",
    [
        (RawPatient("M", "1.80", "82.5", "045Y"), ("M", 1.80, 82.5, 45.0), None),
        (RawPatient("f", "", "", "006M"), ("F", None, None, 0.5), None),
        (RawPatient("", "180", "", ""), (None, None, None, None), "looks like centimetres"),
        (RawPatient("", "abc", "", ""), (None, None, None, None), "not a plausible height"),
        (RawPatient("", "", "900", ""), (None, None, None, None), "not a plausible weight"),
        (RawPatient("", "", "", "45 years"), (None, None, None, None), "not a DICOM age string"),
    ],
)
def test_patient_parsing(raw: RawPatient, expected, warning) -> None:
    info, warnings = parse_patient(raw)
    assert (info.sex, info.height_m, info.weight_kg, info.age_years) == expected
    if warning is None:
        assert warnings == ()
    else:
        assert any(warning in w for w in warnings)


def _in_plane_orientations():
    axes = {"x": np.array([1, 0, 0]), "y": np.array([0, 1, 0])}
    out = []
    for row_axis, col_axis in (("x", "y"), ("y", "x")):
        for rs in (1, -1):
            for cs in (1, -1):
                out.append(tuple(np.concatenate([rs * axes[row_axis], cs * axes[col_axis]]).tolist()))
    return out


@pytest.mark.parametrize("orientation", _in_plane_orientations())
@pytest.mark.parametrize("stack_sign", [1, -1])
def test_every_axis_aligned_dicom_orientation(tmp_path: Path, orientation, stack_sign: int) -> None:
    """All 8 in-plane layouts × head-first/feet-first file order reach the display convention."""
    positions = [(-5.0, 7.0, -50.0 + stack_sign * 2.0 * s) for s in range(3)]
    write_series(tmp_path, n=3, orientation=orientation, positions=positions, rows=6, cols=5)
    vol = read_ct(tmp_path)
    a = vol.affine
    assert a[0, 0] > 0 and a[1, 1] > 0 and a[2, 2] > 0
    np.testing.assert_array_equal(vol.hu.astype(np.int32), expected_display_hu(vol))
    stored = vol.source_grid.to_source(vol.hu)
    assert stored.shape == (3, 6, 5)


@pytest.mark.parametrize("degrees", [25.0, 40.0])
def test_oblique_planes_warn_and_are_refused_alike_in_dicom_and_nifti(tmp_path: Path, degrees: float) -> None:
    import nibabel as nib

    t = np.radians(degrees)
    orientation = (1, 0, 0, 0, np.cos(t), np.sin(t))  # rows along x, columns leaning into z
    write_series(tmp_path / "dcm", n=4, orientation=orientation, dz=2.0)
    ras = np.eye(4)
    ras[:3, 0] = [-1, 0, 0]  # LPS → RAS of the same grid
    ras[:3, 1] = [0, -np.cos(t), np.sin(t)]
    ras[:3, 2] = [0, np.sin(t), np.cos(t)]
    nii = tmp_path / "obl.nii"
    nib.save(nib.Nifti1Image(np.full((6, 6, 4), -1000, np.int16), ras), str(nii))
    if degrees < 37:
        for path in (tmp_path / "dcm", nii):
            warnings = read_ct(path).series.warnings
            assert any(f"the slices are oblique, angled {degrees:.1f}° from axial" in w for w in warnings), (path, warnings)
    else:
        with pytest.raises(InputError, match=r"not an axial CT: its slices are oblique, 40° from axial"):
            read_ct(tmp_path / "dcm")
        with pytest.raises(GeometryError, match=r"the slices are oblique, angled 40° from axial"):
            read_ct(nii)
