"""Finding L3 (and the vertebrae around it) in a CT volume.

``find_l3(volume, settings)`` returns a ``SliceChoice`` or raises ``L3NotFound`` saying what the
scan covers. See docs/l3-localisation.md for the method and its measured accuracy.
"""

from sarcoscope.locate.finder import find_l3
from sarcoscope.locate.settings import DEFINITIONS, LocateSettings

__all__ = ["DEFINITIONS", "LocateSettings", "find_l3"]
