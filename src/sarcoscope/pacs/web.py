"""DICOMweb client side (dicomweb-client): QIDO-RS queries, WADO-RS retrieval, STOW-RS upload.

The same records and errors as the DIMSE side (``dimse.StudyRecord`` / ``SeriesRecord``,
``PacsError`` with ``http_status``), so callers do not care which protocol was used. WADO-RS
asks for the instances as stored (any transfer syntax) and writes each to disk as it arrives.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from pydicom import Dataset, dcmread

from sarcoscope.errors import PacsError
from sarcoscope.pacs.config import PacsNode
from sarcoscope.pacs.dimse import InstanceBrief, RetrieveStats, SeriesRecord, StudyQuery, StudyRecord, _brief
from sarcoscope.pacs.uids import check_uid

log = logging.getLogger(__name__)


def _client(node: PacsNode):
    if not node.dicomweb_url:
        raise PacsError(
            f"node {node.name!r} has no dicomweb_url; set it in the configuration or pass --dicomweb-url, "
            "or use DIMSE (--via get / --via move, --send-via store)"
        )
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    if node.tls is not None and node.tls.ca_file is not None:
        session.verify = str(node.tls.ca_file)
    if node.tls is not None and node.tls.cert_file is not None:
        session.cert = (str(node.tls.cert_file), str(node.tls.key_file))
    client = DICOMwebClient(url=node.dicomweb_url.rstrip("/"), session=session, timeout=node.timeout_s)
    # dicomweb-client retries every failure (even "connection refused") for ~30 s; fail fast and
    # let the caller decide (the node retries whole jobs with its own back-off).
    client.set_http_retry_params(retry=False)
    return client


def _wrap(node: PacsNode, what: str, exc: Exception) -> PacsError:
    import requests

    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        hint = {
            401: "the server wants credentials", 403: "we are not allowed to do this",
            404: "not found (check the UIDs and the dicomweb_url)", 409: "the server refused the instances",
        }.get(code, "check the server log")
        return PacsError(f"{what} on {node.dicomweb_url} failed: HTTP {code} ({hint})", http_status=code)
    if isinstance(exc, requests.exceptions.RequestException):
        return PacsError(
            f"{what}: cannot reach {node.dicomweb_url} ({type(exc).__name__}); check the URL and that "
            "the server is running"
        )
    return PacsError(f"{what} on {node.dicomweb_url} failed: {exc}")


def _ds(item: dict) -> Dataset:
    return Dataset.from_json(item)


def _int(ds: Dataset, key: str) -> int | None:
    try:
        v = ds.get(key)
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def qido_studies(node: PacsNode, query: StudyQuery) -> list[StudyRecord]:
    filters: dict[str, str] = {}
    if query.patient_id:
        filters["PatientID"] = query.patient_id
    if query.accession:
        filters["AccessionNumber"] = query.accession
    if query.study_uid:
        filters["StudyInstanceUID"] = check_uid(query.study_uid, "--study")
    if query.date_range():
        filters["StudyDate"] = query.date_range()
    if query.modality:
        filters["ModalitiesInStudy"] = query.modality
    try:
        items = _client(node).search_for_studies(
            search_filters=filters,
            fields=["StudyDescription", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "ModalitiesInStudy"],
        )
    except PacsError:
        raise
    except Exception as exc:  # noqa: BLE001 - wrapped into PacsError with the HTTP status
        raise _wrap(node, "QIDO-RS study search", exc) from exc
    out = []
    for item in items:
        ds = _ds(item)
        mods = ds.get("ModalitiesInStudy", "")
        out.append(StudyRecord(
            study_uid=str(ds.get("StudyInstanceUID", "")), patient_id=str(ds.get("PatientID", "")),
            accession=str(ds.get("AccessionNumber", "")), study_date=str(ds.get("StudyDate", "")),
            description=str(ds.get("StudyDescription", "")),
            modalities=(mods,) if isinstance(mods, str) and mods else tuple(str(m) for m in mods or ()),
            n_series=_int(ds, "NumberOfStudyRelatedSeries"), n_instances=_int(ds, "NumberOfStudyRelatedInstances"),
        ))
    return out


def qido_series(node: PacsNode, study_uid: str) -> list[SeriesRecord]:
    check_uid(study_uid, "study UID")
    try:
        items = _client(node).search_for_series(
            study_uid, fields=["SeriesDescription", "NumberOfSeriesRelatedInstances", "BodyPartExamined"]
        )
    except PacsError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _wrap(node, "QIDO-RS series search", exc) from exc
    out = []
    for item in items:
        ds = _ds(item)
        out.append(SeriesRecord(
            study_uid=study_uid, series_uid=str(ds.get("SeriesInstanceUID", "")),
            modality=str(ds.get("Modality", "")), description=str(ds.get("SeriesDescription", "")),
            number=_int(ds, "SeriesNumber"), n_instances=_int(ds, "NumberOfSeriesRelatedInstances"),
            body_part=str(ds.get("BodyPartExamined", "")),
        ))
    return out


def qido_instances(node: PacsNode, study_uid: str, series_uid: str) -> list[InstanceBrief]:
    """QIDO-RS instance search with ImageType and orientation (see ``dimse.find_instances``)."""
    check_uid(study_uid, "study UID")
    check_uid(series_uid, "series UID")
    try:
        items = _client(node).search_for_instances(
            study_uid, series_uid, fields=["ImageType", "ImageOrientationPatient"]
        )
    except PacsError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _wrap(node, "QIDO-RS instance search", exc) from exc
    return [_brief(_ds(item)) for item in items]


def wado_series(node: PacsNode, study_uid: str, series_uid: str, folder: Path,
                expected: int | None = None) -> RetrieveStats:
    """WADO-RS one series into ``folder``, instance by instance (as stored: any transfer syntax)."""
    check_uid(study_uid, "study UID")
    check_uid(series_uid, "series UID")
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n = n_bytes = 0
    syntaxes: set[str] = set()
    try:
        for ds in _client(node).iter_series(study_uid, series_uid, media_types=(("application/dicom", "*"),)):
            sop = check_uid(ds.get("SOPInstanceUID", ""), "received SOPInstanceUID")
            dest = folder / f"{sop}.dcm"
            tmp = dest.with_name(dest.name + ".part")
            ds.save_as(tmp, enforce_file_format=True)
            tmp.replace(dest)
            n += 1
            n_bytes += dest.stat().st_size
            syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
    except PacsError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _wrap(node, f"WADO-RS retrieve (after {n} images)", exc) from exc
    if expected is not None and n < expected:
        raise PacsError(
            f"WADO-RS from {node.dicomweb_url}: only {n} of {expected} images arrived (interrupted "
            "transfer); run the command again"
        )
    seconds = time.perf_counter() - t0
    log.info("WADO-RS from %s: %d files in %.2f s", node.name, n, seconds)
    return RetrieveStats(folder, n, n_bytes, seconds, tuple(sorted(syntaxes)))


def stow_files(node: PacsNode, paths: Sequence[Path]) -> list[str]:
    """STOW-RS the files; returns the stored SOPInstanceUIDs, PacsError if any failed."""
    if not paths:
        return []
    datasets = [dcmread(p) for p in paths]
    try:
        rsp = _client(node).store_instances(datasets)
    except PacsError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _wrap(node, "STOW-RS upload", exc) from exc
    failed = rsp.get("FailedSOPSequence", []) if rsp is not None else []
    if failed:
        reasons = sorted({int(i.get("FailureReason", 0)) for i in failed})
        raise PacsError(
            f"STOW-RS to {node.dicomweb_url}: {len(failed)} of {len(datasets)} instance(s) refused "
            f"(failure reasons {', '.join(f'0x{r:04X}' for r in reasons)})",
            status=reasons[0] if reasons else None,
        )
    return [str(d.SOPInstanceUID) for d in datasets]
