"""Options of the L3 finder, grouped in one frozen object (short signatures)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from sarcoscope.errors import ConfigError

Definition = Literal["mid-L3", "L3-inferior-endplate", "L3-transverse-processes"]

#: The slice definitions the finder knows, in the words written into result.json.
DEFINITIONS: tuple[str, ...] = ("mid-L3", "L3-inferior-endplate", "L3-transverse-processes")


@dataclass(frozen=True)
class LocateSettings:
    """How to turn "L3" into slice indices.

    Parameters
    ----------
    definition
        ``"mid-L3"`` (default): the slice nearest the middle of the L3 vertebral body.
        ``"L3-inferior-endplate"``: the lowest slice inside the L3 body, at its inferior endplate.
        ``"L3-transverse-processes"``: going from the top of L3 down, the first slice on which
        both transverse processes are visible.
    average_mm
        Half-width of a band around the chosen level: every slice within ``± average_mm`` of it
        is returned (0 = one slice). Averaging a few slices lowers the effect of the exact pick.
    """

    definition: Definition = "mid-L3"
    average_mm: float = 0.0

    def __post_init__(self) -> None:
        if self.definition not in DEFINITIONS:
            raise ConfigError(
                f"LocateSettings.definition {self.definition!r} is not one of {', '.join(DEFINITIONS)}; pick one of those"
            )
        if not (math.isfinite(self.average_mm) and 0.0 <= self.average_mm <= 50.0):
            raise ConfigError(
                f"LocateSettings.average_mm {self.average_mm} must be within 0–50 mm "
                "(half-width of the band of slices averaged around L3)"
            )
