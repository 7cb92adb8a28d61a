"""Shared fixtures. Real scans are read from ../shared/data beside the repo, never copied in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
REAL_CT = SHARED_DATA / "real-ct"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, what: str) -> None:
    """Skip locally when a component is missing; in CI a missing component fails the run."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required test component missing in CI: {what}")
    pytest.skip(f"missing: {what}")


@pytest.fixture(scope="session")
def real_ct() -> Path:
    require(REAL_CT.is_dir(), f"real CT data at {REAL_CT}")
    return REAL_CT
