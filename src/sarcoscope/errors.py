"""One exception tree for everything sarcoscope reports to a user.

Every message says *which* file or value, *what* is wrong and *what to do*.
``cli.py`` maps each class to a documented exit code (see ``EXIT_CODES``).
"""

from __future__ import annotations


class SarcoscopeError(Exception):
    """Base class: an error we explain to the user (never a bare traceback)."""

    exit_code = 70  # internal error unless a subclass says otherwise


class InputError(SarcoscopeError):
    """The input cannot be used: missing, unreadable, not CT, not axial, damaged."""

    exit_code = 2


class GeometryError(InputError):
    """Slice geometry cannot be trusted: gantry tilt, uneven or missing spacing, mixed orientations."""

    exit_code = 2


class L3NotFound(SarcoscopeError):
    """The third lumbar vertebra is not in the scan (or cannot be identified)."""

    exit_code = 3

    def __init__(self, message: str, *, coverage: str | None = None) -> None:
        super().__init__(message)
        self.coverage = coverage


class ModelError(SarcoscopeError):
    """The segmentation model is missing, corrupt or incompatible."""

    exit_code = 4


class ExportError(SarcoscopeError):
    """A result could not be written (disk full, permission, invalid DICOM)."""

    exit_code = 5


class PacsError(SarcoscopeError):
    """A PACS operation failed. ``status`` is the DIMSE status, ``http_status`` the HTTP code."""

    exit_code = 6

    def __init__(
        self, message: str, *, status: int | None = None, http_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.http_status = http_status


class ConfigError(SarcoscopeError):
    """A configuration file or option is invalid."""

    exit_code = 2


#: Documented process exit codes (README and ``sarcoscope --help`` repeat them).
EXIT_CODES: dict[str, int] = {
    "success": 0,
    "bad input (file, option or configuration)": 2,
    "L3 not found in the scan": 3,
    "model missing or invalid": 4,
    "results could not be written": 5,
    "PACS operation failed": 6,
    "internal error (a bug: please report it)": 70,
}
