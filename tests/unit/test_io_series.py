"""Series discovery (headers only) and the choice of the series to measure."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest

from sarcoscope.errors import GeometryError, InputError
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


def test_series_of_two_patients_are_refused_not_silently_picked(tmp_path: Path) -> None:
    write_series(tmp_path / "a", n=6, series_uid="9.1", study_uid="5.1", name="a",
                 patient={"PatientID": "PAT-AAA", "PatientSex": "F"})
    write_series(tmp_path / "b", n=4, series_uid="9.2", study_uid="5.2", name="b",
                 patient={"PatientID": "PAT-BBB", "PatientSex": "M"})
    with pytest.raises(InputError, match=r"the 2 axial CT series in the input come from 2 different patients"
                       r".*--series UID") as info:
        read_ct(tmp_path)
    message = str(info.value)
    assert re.search(r"\[patient 1, study 1\] 9\.1 \| CT \| axial", message), message
    assert re.search(r"\[patient 2, study 2\] 9\.2 \| CT \| axial", message), message
    for secret in ("PAT-AAA", "PAT-BBB", "Secret"):
        assert secret not in message
    chosen = read_ct(tmp_path, series_uid="9.2")
    assert chosen.series.series_uid == "9.2" and chosen.patient.sex == "M"


def test_two_studies_of_one_patient_are_refused_too(tmp_path: Path) -> None:
    write_series(tmp_path / "a", n=6, series_uid="9.3", study_uid="5.3", name="a")
    write_series(tmp_path / "b", n=4, series_uid="9.4", study_uid="5.4", name="b")
    with pytest.raises(InputError, match=r"come from 2 different studies \(StudyInstanceUID differs\)"
                       r"(.|\n)*\[patient 1, study 2\] 9\.4"):
        read_ct(tmp_path)


def test_one_patient_two_series_of_one_study_still_picks_one(tmp_path: Path) -> None:
    # Unknown (empty) study UIDs count as "not different", not as another study.
    write_series(tmp_path / "a", n=6, series_uid="9.5", study_uid="5.5", name="a")
    write_series(tmp_path / "b", n=4, series_uid="9.6", study_uid="5.5", name="b")
    write_series(tmp_path / "c", n=3, series_uid="9.7", study_uid="", name="c")
    vol = read_ct(tmp_path)
    assert vol.series.series_uid == "9.5" and "picked 9.5 of 3 axial CT series" in vol.series.selection_reason


def test_identical_copies_of_the_files_are_read_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = write_series(tmp_path, n=5, rows=16, cols=16)
    (tmp_path / "copy").mkdir()
    for p in paths:
        shutil.copy(p, tmp_path / "copy" / p.name)
    with caplog.at_level(logging.INFO, logger="sarcoscope.io"):
        vol = read_ct(tmp_path)
    assert vol.n_slices == 5
    assert any(w.startswith("5 duplicate image(s) skipped: the same instance (SOPInstanceUID)")
               for w in vol.series.warnings), vol.series.warnings
    logged = [r for r in caplog.records if "duplicate image(s) skipped" in r.getMessage()]
    assert logged and logged[0].levelno == logging.WARNING
    assert "SECRET" not in caplog.text and "Secret" not in caplog.text


def test_different_images_sharing_a_position_are_still_refused_beside_duplicates(tmp_path: Path) -> None:
    paths = write_series(tmp_path, n=4, positions=[(0, 0, z) for z in (-20, -18, -18, -16)])
    shutil.copy(paths[0], tmp_path / "again.dcm")  # an exact copy: skipped
    with pytest.raises(GeometryError, match=r"1 pair\(s\) of slices share the same position"):
        read_ct(tmp_path)
