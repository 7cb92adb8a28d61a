"""Reading CT: DICOM (folder, file, zip, DICOMDIR; any pixel encoding pydicom + pylibjpeg
decode) and NIfTI, into a display-oriented ``types.CTVolume``.

Public API::

    read_ct(path, series_uid=None, *, workers=None) -> CTVolume
    discover_series(path) -> list[SeriesCandidate]          # headers only
    select_series(candidates, series_uid=None) -> (SeriesCandidate, reason)
    plan_series(candidate) -> SeriesPlan                     # geometry from headers only
    load_series(candidate, indices=None, *, workers=None) -> CTVolume   # decode only what is needed
    load_slices(candidate, indices, *, workers=None) -> CTVolume  # partial, full-stack indices
    open_dicom(path, series_uid=None) -> OpenedSeries        # select + plan; .load(indices) later
    source_to_display_index(volume, k_source) -> int
    available_decoders() -> dict[transfer syntax name, plugins]   # for `sarcoscope info`
"""

from sarcoscope.io.dicom import (
    OpenedSeries,
    SeriesPlan,
    discover_series,
    load_series,
    load_slices,
    open_dicom,
    plan_series,
    read_dicom,
)
from sarcoscope.io.nifti import read_nifti
from sarcoscope.io.pixels import available_decoders
from sarcoscope.io.reader import display_to_source_index, read_ct, source_to_display_index
from sarcoscope.io.series import SeriesCandidate, select_series

__all__ = [
    "OpenedSeries",
    "SeriesCandidate",
    "SeriesPlan",
    "available_decoders",
    "discover_series",
    "display_to_source_index",
    "load_series",
    "load_slices",
    "open_dicom",
    "plan_series",
    "read_ct",
    "read_dicom",
    "read_nifti",
    "select_series",
    "source_to_display_index",
]
