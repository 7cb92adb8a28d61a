"""Series discovery (headers only) and the choice of the series to measure."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarcoscope.errors import InputError
from sarcoscope.io import discover_series, read_ct
from sarcoscope.io.series import kernel_class
from tests.unit.test_io_factory import write_series


@pytest.mark.parametrize(
    "kernel,expected",
    [("B30f", 2), ("Br38f\\3", 2), ("I31f", 2), ("B70f", 0), ("STANDARD", 2), ("BONE", 0), ("LUNG", 0),
     ("FC08", 2), ("FC52", 0), ("B", 2), ("YC", 0), ("", 1), ("custom", 1)],
)
def test_kernel_classes(kernel: str, expected: int) -> None:
    assert kernel_class(kernel) == expected


def test_discovery_reads_headers_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_series(tmp_path, n=4, series_uid="1.2.7", description="abdomen")

    import sarcoscope.io.dicom_headers as headers

    flags = []
    original = headers.read_dataset

    def spy(fh, name, *, stop_before_pixels):
        flags.append(stop_before_pixels)
        return original(fh, name, stop_before_pixels=stop_before_pixels)

    monkeypatch.setattr(headers, "read_dataset", spy)
    (c,) = discover_series(tmp_path)
    assert flags == [True] * 4
    assert c.n_slices == 4 and c.rejection is None
    line = c.describe()
    for part in ("1.2.7", "CT", "axial", "'abdomen'", "kernel B30f", "4 slices 16x20", "every 2 mm", "explicit VR"):
        assert part in line


def test_soft_kernel_preferred_over_thin_bone_kernel(tmp_path: Path) -> None:
    write_series(tmp_path / "bone", n=12, dz=1.0, z0=-100, series_uid="1.1.1", kernel="B70f", name="b")
    write_series(tmp_path / "soft", n=4, dz=3.0, z0=-100, series_uid="2.2.2", kernel="B30f", name="s")
    vol = read_ct(tmp_path)
    assert vol.series.series_uid == "2.2.2"
    assert "soft-tissue kernel B30f" in vol.series.selection_reason
    forced = read_ct(tmp_path, series_uid="1.1.1")
    assert forced.series.series_uid == "1.1.1" and forced.n_slices == 12
    assert "requested with --series" in forced.series.selection_reason


def test_thinnest_among_equal_kernels_and_longer_coverage_first(tmp_path: Path) -> None:
    write_series(tmp_path / "a", n=4, dz=3.0, series_uid="3.3.3", name="a")
    write_series(tmp_path / "b", n=12, dz=1.0, series_uid="4.4.4", name="b")
    assert read_ct(tmp_path).series.series_uid == "4.4.4"
    # a longer series wins even with a sharper kernel
    write_series(tmp_path / "c", n=30, dz=1.0, z0=-130, series_uid="5.5.5", kernel="B70f", name="c")
    vol = read_ct(tmp_path)
    assert vol.series.series_uid == "5.5.5" and "covers 30 mm" in vol.series.selection_reason


def test_localizer_and_mr_skipped_when_an_axial_ct_exists(tmp_path: Path) -> None:
    write_series(tmp_path / "scout", n=1, orientation=(1, 0, 0, 0, 0, -1), series_uid="6.1",
                 image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), name="l")
    write_series(tmp_path / "mr", n=3, modality="MR", series_uid="6.2", name="m")
    write_series(tmp_path / "ct", n=3, series_uid="6.3", name="c")
    vol = read_ct(tmp_path)
    assert vol.series.series_uid == "6.3"
    assert "the only axial CT series in the input (2 other series skipped" in vol.series.selection_reason
    with pytest.raises(InputError, match=r"a scout is not a cross-section"):
        read_ct(tmp_path, series_uid="6.1")


def test_nothing_usable_lists_each_reason(tmp_path: Path) -> None:
    write_series(tmp_path / "scout", n=1, orientation=(1, 0, 0, 0, 0, -1), series_uid="7.1",
                 image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), name="l")
    write_series(tmp_path / "mr", n=2, modality="MR", series_uid="7.2", name="m")
    with pytest.raises(InputError, match=r"none of the 2 series is an axial CT(.|\n)*scout(.|\n)*modality MR"):
        read_ct(tmp_path)


def test_mixed_sizes_in_one_series_are_split(tmp_path: Path) -> None:
    write_series(tmp_path, n=5, series_uid="8.8", rows=16, cols=20, name="big")
    write_series(tmp_path, n=2, series_uid="8.8", rows=8, cols=8, z0=-50, name="small")
    cands = discover_series(tmp_path)
    assert sorted(c.key for c in cands) == ["8.8#1", "8.8#2"]
    vol = read_ct(tmp_path)
    assert vol.hu.shape == (5, 16, 20)
    assert any("mixes 2 different orientations or image sizes" in w for w in vol.series.warnings)
    vol = read_ct(tmp_path, series_uid="8.8")
    assert vol.n_slices == 5 and "holds 2 stacks" in vol.series.selection_reason


def test_empty_uid_series_separated_by_kernel(tmp_path: Path) -> None:
    write_series(tmp_path, n=4, series_uid="", kernel="B30f", name="soft")
    write_series(tmp_path, n=4, series_uid="", kernel="B70f", name="bone")
    cands = discover_series(tmp_path)
    assert len(cands) == 2 and all(c.key.startswith("noUID:") for c in cands)
    vol = read_ct(tmp_path)
    assert vol.series.kernel == "B30f"
