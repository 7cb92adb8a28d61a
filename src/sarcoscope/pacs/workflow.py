"""PACS side of "analyse this study": list its series, choose the CT series, retrieve only that
series (C-GET, C-MOVE or WADO-RS), and send result files back (C-STORE or STOW-RS).

Transport only: the analysis itself is injected by the caller (``cli/pacs.py`` composes it with
``pipeline.analyze``), so this package never imports the segmenter or the measurements.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from sarcoscope.errors import PacsError
from sarcoscope.pacs import dimse, web
from sarcoscope.pacs.config import LocalNode, PacsNode
from sarcoscope.pacs.dimse import InstanceBrief, ResultObject, RetrieveStats, SendError, SeriesRecord  # noqa: F401 - SendError, ResultObject re-exported for callers
from sarcoscope.pacs.scp import StorageSCP
from sarcoscope.pacs.uids import check_uid, uid_path

log = logging.getLogger(__name__)

Via = Literal["get", "move", "wado"]
SendVia = Literal["store", "stow"]
VIAS: tuple[str, ...] = ("get", "move", "wado")
SEND_VIAS: tuple[str, ...] = ("store", "stow")

#: Series descriptions that are not cross-sectional CT images we can measure on.
NOT_AXIAL = re.compile(
    r"scout|topo|locali[sz]er|surview|scanogram|dose ?(report|info)|screen ?save|patient protocol|"
    r"\bsag|\bcor\b|coronal|sagittal|\bmip\b|3d|vrt",
    re.IGNORECASE,
)


def list_series(node: PacsNode, local: LocalNode, study_uid: str, via: Via) -> list[SeriesRecord]:
    """Series-level query (QIDO-RS when retrieving by WADO-RS, else C-FIND)."""
    if via == "wado":
        return web.qido_series(node, study_uid)
    return dimse.find_series(node, local.ae_title, study_uid)


def instance_problem(briefs: Sequence[InstanceBrief]) -> str | None:
    """Why a series' images are not axial cross-sections (None when they are, or when the PACS
    did not answer these attributes: the reader then decides after retrieval)."""
    if not briefs:
        return None
    scouts = sum(1 for b in briefs if "LOCALIZER" in b.image_type)
    if scouts * 2 > len(briefs):
        return f"{scouts} of {len(briefs)} images are LOCALIZER (scout)"
    oriented = [b.orientation for b in briefs if b.orientation]
    if oriented:
        import numpy as np

        normals = [np.cross(np.array(o[:3]), np.array(o[3:])) for o in oriented]
        axial = sum(1 for n in normals if np.linalg.norm(n) > 0 and abs(n[2]) / np.linalg.norm(n) >= 0.8)
        if axial * 2 <= len(oriented):
            return f"{len(oriented) - axial} of {len(oriented)} images are not axial (orientation)"
    return None


def choose_series(
    series: Sequence[SeriesRecord], study_uid: str,
    probe: Callable[[SeriesRecord], Sequence[InstanceBrief]] | None = None,
) -> SeriesRecord:
    """The axial CT series to analyse: modality CT, not a scout/reformat/dose page, most images.

    Mirrors ``io.select_series`` on query answers, so nothing else is retrieved: series-level
    attributes first, then (``probe``: an image-level query) ImageType and orientation of the
    candidates, largest first. The reader re-checks the real headers after retrieval.
    """
    ct = [s for s in series if s.modality.upper() == "CT"]
    usable = [s for s in ct if not NOT_AXIAL.search(s.description or "")]
    rejected: list[str] = []
    for cand in sorted(usable, key=lambda s: (-(s.n_instances or 0), s.number or 0)):
        problem = instance_problem(probe(cand)) if probe is not None else None
        if problem is None:
            return cand
        rejected.append(f"{cand.describe()}: {problem}")
    found = "; ".join(s.describe() for s in series) or "no series at all"
    what = "no CT series" if not ct else "no axial CT series (only scouts, reformats or dose pages)"
    detail = f"; rejected {'; '.join(rejected)}" if rejected else ""
    raise PacsError(
        f"study {study_uid} has {what} to analyse (found: {found}{detail}); body composition needs "
        "an axial abdominal CT series"
    )


def series_probe(node: PacsNode, local: LocalNode, via: Via) -> Callable[[SeriesRecord], list[InstanceBrief]]:
    """Image-level query of one series by the protocol matching ``via``."""
    if via == "wado":
        return lambda s: web.qido_instances(node, s.study_uid, s.series_uid)
    return lambda s: dimse.find_instances(node, local.ae_title, s.study_uid, s.series_uid)


def retrieve_series(
    node: PacsNode, local: LocalNode, series: SeriesRecord, dest_root: Path, via: Via
) -> RetrieveStats:
    """Retrieve one series into ``dest_root/<study>/<series>/`` (files written as they arrive)."""
    study_uid = check_uid(series.study_uid, "study UID")
    series_uid = check_uid(series.series_uid, "series UID")
    folder = uid_path(dest_root, study_uid, series_uid)
    expected = series.n_instances
    if via == "get":
        return dimse.get_series(node, local.ae_title, study_uid, series_uid, folder, expected)
    if via == "wado":
        return web.wado_series(node, study_uid, series_uid, folder, expected)
    if via == "move":
        import time

        t0 = time.perf_counter()
        with StorageSCP(local, dest_root, durable=False) as scp:
            dimse.move_series(
                node, local.ae_title, study_uid, series_uid, local.ae_title, expected,
                received=lambda: scp.n_received,
            )
            n = scp.n_received
        files = list(folder.glob("*.dcm"))
        return RetrieveStats(folder, n, sum(f.stat().st_size for f in files), time.perf_counter() - t0, ())
    raise PacsError(f"--via {via!r}: choose one of {', '.join(VIAS)}")


def send_files(node: PacsNode, local: LocalNode, paths: Sequence[Path], via: SendVia) -> list[str]:
    """Send result files to ``node`` by C-STORE or STOW-RS; returns the stored SOPInstanceUIDs.

    A failure raises ``SendError`` whose ``stored`` / ``unconfirmed`` / ``not_sent`` (and message)
    say which objects the PACS holds, for the caller's audit record, and ``refused_sop_classes``
    which classes it will never accept. By C-STORE such a PACS gets nothing (checked on the
    negotiated presentation contexts before the first object); by STOW-RS the answer's
    Referenced/FailedSOPSequence says what was stored.
    """
    if via == "store":
        return dimse.store_files(node, local.ae_title, list(paths))
    if via == "stow":
        return web.stow_files(node, list(paths))
    raise PacsError(f"--send-via {via!r}: choose one of {', '.join(SEND_VIAS)}")
