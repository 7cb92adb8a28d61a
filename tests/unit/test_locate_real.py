"""The L3 finder on real CT: the liver-dome series (about T11–T12) has no L3 in it."""

from __future__ import annotations

import re

import pytest

from sarcoscope.errors import L3NotFound
from sarcoscope.locate import find_l3
from tests.conftest import require


@pytest.fixture(scope="module")
def liver_dome(real_ct):
    folder = real_ct / "ts-liver-dome-j2k"
    require(folder.is_dir(), f"real CT series {folder}")
    try:
        from sarcoscope.io import read_ct
    except ImportError:  # the reader is another engineer's stage
        require(False, "sarcoscope.io.read_ct")
    return read_ct(folder)


def test_liver_dome_series_has_no_l3_and_says_what_it_covers(liver_dome) -> None:
    vol = liver_dome
    with pytest.raises(L3NotFound) as info:
        find_l3(vol)
    message = str(info.value)
    coverage = info.value.coverage
    assert coverage is not None and coverage in message
    # The z range of the scan, to the millimetre, as the user's viewer shows it.
    z_lo, z_hi = sorted((vol.z_mm(0), vol.z_mm(vol.n_slices - 1)))
    match = re.search(r"covers z (-?\d+)…(-?\d+) mm", coverage)
    assert match, coverage
    assert abs(float(match.group(1)) - z_lo) <= 1 and abs(float(match.group(2)) - z_hi) <= 1
    # At the liver dome every vertebra carries ribs: the finder must say it is thoracic.
    assert "thoracic" in coverage and "L3 lies below the scan" in coverage
    assert "L1" not in message and "L2" not in message
