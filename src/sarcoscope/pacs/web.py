"""DICOMweb client side (dicomweb-client): QIDO-RS queries, WADO-RS retrieval, STOW-RS upload.

The same records and errors as the DIMSE side (``dimse.StudyRecord`` / ``SeriesRecord``,
``PacsError`` with ``http_status``), so callers do not care which protocol was used. WADO-RS
asks for the instances as stored (any transfer syntax) and writes each to disk as it arrives.

Credentials come from ``[nodes.X.auth]`` (HTTP basic or bearer token; the secret is read from a
file or an environment variable when the client is made). Every URL that goes into a message
passes through ``config.redact_url``, so a ``user:password@`` in ``dicomweb_url`` never shows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from pydicom import Dataset, dcmread

from sarcoscope.errors import PacsError, SarcoscopeError
from sarcoscope.pacs.config import PacsNode, redact_url, url_has_credentials
from sarcoscope.pacs.dimse import InstanceBrief, RetrieveStats, SeriesRecord, StudyQuery, StudyRecord, _brief
from sarcoscope.pacs.uids import check_uid

log = logging.getLogger(__name__)


def _url(node: PacsNode) -> str:
    """The node's DICOMweb URL as shown to people: credentials removed."""
    return redact_url(node.dicomweb_url)


def _auth_table(node: PacsNode) -> str:
    return f"[nodes.{node.name}.auth]"


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
    if node.auth is not None:
        secret = node.auth.secret(_auth_table(node))
        if node.auth.type == "basic":
            session.auth = (str(node.auth.username), secret)
        else:
            session.auth = _Bearer(secret)
    client = DICOMwebClient(url=node.dicomweb_url.rstrip("/"), session=session, timeout=node.timeout_s)
    # dicomweb-client retries every failure (even "connection refused") for ~30 s; fail fast and
    # let the caller decide (the node retries whole jobs with its own back-off).
    client.set_http_retry_params(retry=False)
    return client


class _Bearer:
    """``Authorization: Bearer <token>`` on each request (requests drops it on a redirect to another host)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:  # never the token
        return "_Bearer(***)"


def _http_hint(node: PacsNode, code: int) -> str:
    table = _auth_table(node)
    how = (f'set {table} with type = "basic", username and secret_file or secret_env (the password), or '
           f'type = "bearer" and secret_file or secret_env (the token); see docs/pacs.md')
    in_url = node.auth is None and url_has_credentials(node.dicomweb_url)
    if code == 401:
        if in_url:
            return (f"the server did not accept the user:password given in dicomweb_url; remove them from the "
                    f"URL and {how}")
        if node.auth is None:
            return f"the server wants credentials and none are configured: {how}"
        return (f"the server did not accept our credentials ({node.auth.describe()}); check {table} and "
                f"the {node.auth.secret_name} stored there")
    if code == 403:
        if in_url:
            return ("forbidden: the account given in dicomweb_url may not do this (or our address is refused); "
                    f"ask the PACS administrator, and move the credentials to {table}")
        if node.auth is None:
            return (f"forbidden: the server refuses this without an account, or refuses our address; if it "
                    f"needs credentials, {how}")
        return (f"forbidden: the account of {table} ({node.auth.describe()}) may not do this; ask the PACS "
                "administrator for the permission")
    return {
        404: "not found (check the UIDs and the dicomweb_url)", 409: "the server refused the instances",
    }.get(code, "check the server log")


def _wrap(node: PacsNode, what: str, exc: Exception) -> PacsError:
    import requests

    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        return PacsError(f"{what} on {_url(node)} failed: HTTP {code} ({_http_hint(node, code)})",
                         http_status=code)
    if isinstance(exc, requests.exceptions.SSLError):
        return PacsError(
            f"{what}: the TLS handshake with {_url(node)} failed ({type(exc).__name__}); check that node "
            f"{node.name!r}'s tls ca_file (or --tls-ca) holds the CA that signed the server's certificate"
        )
    if isinstance(exc, requests.exceptions.RequestException):
        dns = "resolve" in str(exc).lower() or "name or service not known" in str(exc).lower()
        return PacsError(
            f"{what}: cannot reach {_url(node)} ("
            + ("the host name does not resolve" if dns else type(exc).__name__)
            + "); check the dicomweb_url and that the server is running"
        )
    return PacsError(f"{what} on {_url(node)} failed: {redact_url(exc)}")


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
    except SarcoscopeError:  # PacsError, ConfigError (credentials) as they are
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
    except SarcoscopeError:  # PacsError, ConfigError (credentials) as they are
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
    except SarcoscopeError:  # PacsError, ConfigError (credentials) as they are
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
    except SarcoscopeError:  # PacsError, ConfigError (credentials) as they are
        raise
    except Exception as exc:  # noqa: BLE001
        raise _wrap(node, f"WADO-RS retrieve (after {n} images)", exc) from exc
    if expected is not None and n < expected:
        raise PacsError(
            f"WADO-RS from {_url(node)}: only {n} of {expected} images arrived (interrupted "
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
    except SarcoscopeError:  # PacsError, ConfigError (credentials) as they are
        raise
    except Exception as exc:  # noqa: BLE001
        raise _wrap(node, "STOW-RS upload", exc) from exc
    failed = rsp.get("FailedSOPSequence", []) if rsp is not None else []
    if failed:
        reasons = sorted({int(i.get("FailureReason", 0)) for i in failed})
        raise PacsError(
            f"STOW-RS to {_url(node)}: {len(failed)} of {len(datasets)} instance(s) refused "
            f"(failure reasons {', '.join(f'0x{r:04X}' for r in reasons)})",
            status=reasons[0] if reasons else None,
        )
    return [str(d.SOPInstanceUID) for d in datasets]
