"""sarcoscope: body composition at L3 on CT, on an ordinary CPU."""

from __future__ import annotations

import logging

__version__ = "0.1.0"

# Libraries log, applications configure: only cli.py adds handlers.
logging.getLogger(__name__).addHandler(logging.NullHandler())
