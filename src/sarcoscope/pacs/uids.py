"""UID checks: a UID from the network is validated before it becomes part of a file path.

A peer controls StudyInstanceUID / SeriesInstanceUID / SOPInstanceUID; ``../../etc`` or an
absurdly long value must never reach ``Path``. DICOM PS3.5 §9.1: digits and dots, components
without leading zeros, at most 64 characters.
"""

from __future__ import annotations

import re
from pathlib import Path

from sarcoscope.errors import PacsError

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")

def is_valid_uid(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(_UID_RE.match(value))


def check_uid(value: object, what: str) -> str:
    """Return ``value`` if it is a valid DICOM UID, else raise PacsError naming it."""
    if not is_valid_uid(value):
        shown = repr(value)[:80]
        raise PacsError(
            f"{what} {shown} is not a valid DICOM UID (digits and dots, at most 64 characters); "
            "refusing to use it"
        )
    return str(value)


def uid_path(root: Path, *uids: str) -> Path:
    """``root/uid1/uid2/...`` after validating every component (no traversal possible)."""
    path = root
    for uid in uids:
        path = path / check_uid(uid, "UID used as a file name")
    return path
