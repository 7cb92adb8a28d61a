"""Is a volume upside down (the patient's back at the top of the array)?

Every stage expects the display orientation the readers produce: anterior at the top. A
NIfTI file whose affine labels LPS data as RAS (a common conversion slip) reads back rotated
by 180° in-plane, and both segmenters then label it anyway (a phantom L3 slice read that
way gave 36 % more "muscle"). Headers cannot reveal that; the spine can. The column finder scores, slice by
slice, a vertebral body with the spinal canal and the posterior arch *behind* it
(``column.find_column``). On real CT that pattern is found on most slices of a correctly
oriented volume and on none of the same volume turned upside down (0.8 vs 0.0 on the
shared TotalSegmentator series, 1.0 vs 0.0 on the GE slices). A volume is called upside down
only when the pattern is (almost) absent as stored and clearly present once turned over, so
a scan without a visible spine, or one where both ways match, is never refused.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sarcoscope.locate.column import find_column, make_work
from sarcoscope.types import CTVolume

#: Share of slices showing the body–canal–arch pattern at most, as stored, for "upside down" ...
ABSENT_SHARE = 0.2
#: ... and at least, once the volume is turned over.
PRESENT_SHARE = 0.5


def spine_pattern_share(volume: CTVolume) -> float:
    """Share of slices on which the column finder sees a vertebral body with the canal behind it."""
    column = find_column(make_work(volume))
    return 0.0 if column is None else float(np.mean(column.present))


def upside_down(volume: CTVolume) -> bool:
    """True when the spine pattern is absent as stored and present with the rows reversed
    (rotated by 180° or mirrored front to back)."""
    if spine_pattern_share(volume) > ABSENT_SHARE:
        return False
    for view in (volume.hu[:, ::-1, ::-1], volume.hu[:, ::-1, :]):
        if spine_pattern_share(dataclasses.replace(volume, hu=view)) >= PRESENT_SHARE:
            return True
    return False
