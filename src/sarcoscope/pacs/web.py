"""DICOMweb client side (dicomweb-client): QIDO-RS queries, WADO-RS retrieval, STOW-RS upload.

The same records and errors as the DIMSE side (``dimse.StudyRecord`` / ``SeriesRecord``,
``PacsError`` with ``http_status``, ``dimse.SendError`` saying which result objects the PACS
holds after a failed send), so callers do not care which protocol was used. WADO-RS
asks for the instances as stored (any transfer syntax) and writes each to disk as it arrives.

Credentials come from ``[nodes.X.auth]`` (HTTP basic or bearer token; the secret is read from a
file or an environment variable when the client is made). Every URL that goes into a message
passes through ``config.redact_url``, so a ``user:password@`` in ``dicomweb_url`` never shows.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from pydicom import Dataset
from pydicom.uid import UID

from sarcoscope.errors import PacsError, SarcoscopeError
from sarcoscope.pacs.config import PacsNode, redact_url, url_has_credentials
from sarcoscope.pacs.dimse import (
    SOP_CLASS_NOT_SUPPORTED, InstanceBrief, ResultObject, RetrieveStats, SendError, SeriesRecord, StudyQuery,
    StudyRecord, _brief, _store_failure_words, read_result_files,
)
from sarcoscope.pacs.uids import check_uid

log = logging.getLogger(__name__)


def _url(node: PacsNode) -> str:
    """The node's DICOMweb URL as shown to people: credentials removed."""
    return redact_url(node.dicomweb_url)


def _auth_table(node: PacsNode) -> str:
    return f"[nodes.{node.name}.auth]"


def _client(node: PacsNode, on_response: Callable | None = None):
    """A dicomweb-client for ``node``; ``on_response(response)`` sees every HTTP answer as it
    arrives (STOW-RS reads the body itself: dicomweb-client drops it on an HTTP error, and
    ignores it when the media type carries parameters)."""
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
    hook = (lambda response, *args, **kwargs: on_response(response)) if on_response is not None else None
    client = DICOMwebClient(url=node.dicomweb_url.rstrip("/"), session=session, timeout=node.timeout_s,
                            callback=hook)
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


# -- STOW-RS ----------------------------------------------------------------------------------
#: Store Instances Response attributes (PS3.18 10.5.3), as DICOM JSON and XML name them.
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_SEQUENCE = "00081199"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_FAILURE_REASON = "00081197"
_WARNING_REASON = "00081196"
#: STOW-RS failure reasons (PS3.18 Table 10.5.3-3) beyond the C-STORE statuses ``dimse`` knows.
_STOW_FAILURES = {0x0110: "processing failure", 0xC122: "transfer syntax not supported"}


@dataclass(frozen=True)
class _StowAnswer:
    """What a STOW-RS response body says instance by instance; empty when it says nothing usable."""

    referenced: frozenset[str] = frozenset()
    failed: dict[str, int | None] = field(default_factory=dict)  # SOPInstanceUID -> FailureReason
    warnings: dict[str, int | None] = field(default_factory=dict)  # SOPInstanceUID -> WarningReason

    @property
    def usable(self) -> bool:
        return bool(self.referenced or self.failed)


def _reason(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _json_items(doc: object) -> dict[str, list[dict[str, str]]]:
    """The items of the two response sequences in DICOM JSON (PS3.18 F.2): tag -> first value."""
    if isinstance(doc, list):  # some servers wrap the response dataset in an array
        doc = doc[0] if doc else {}
    doc = {str(k).upper(): v for k, v in doc.items()} if isinstance(doc, dict) else {}
    out: dict[str, list[dict[str, str]]] = {}
    for seq in (_FAILED_SOP_SEQUENCE, _REFERENCED_SOP_SEQUENCE):
        element = doc.get(seq)
        items = element.get("Value") if isinstance(element, dict) else None
        out[seq] = [
            {str(tag).upper(): str(el["Value"][0]) for tag, el in item.items()
             if isinstance(el, dict) and isinstance(el.get("Value"), list) and el["Value"]}
            for item in items or () if isinstance(item, dict)
        ]
    return out


def _xml_items(root: ElementTree.Element) -> dict[str, list[dict[str, str]]]:
    """The same from the Native DICOM Model (PS3.19 A.1, ``application/dicom+xml``)."""
    def local(el: ElementTree.Element) -> str:
        return str(el.tag).rsplit("}", 1)[-1]

    out: dict[str, list[dict[str, str]]] = {_FAILED_SOP_SEQUENCE: [], _REFERENCED_SOP_SEQUENCE: []}
    for attr in root:
        seq = (attr.get("tag") or "").upper()
        if local(attr) != "DicomAttribute" or seq not in out:
            continue
        for item in (i for i in attr if local(i) == "Item"):
            values = {}
            for el in (e for e in item if local(e) == "DicomAttribute"):
                value = next((v.text for v in el if local(v) == "Value" and v.text), None)
                if value is not None:
                    values[(el.get("tag") or "").upper()] = value.strip()
            out[seq].append(values)
    return out


def _stow_answer(response) -> _StowAnswer:
    """Read the Store Instances Response from ``response`` (DICOM JSON or XML, whichever the
    server sent; media type parameters such as ``charset`` ignored)."""
    body = response.content or b""
    media = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    start = body.lstrip()[:1]
    try:
        if media.endswith("json") or (not media.endswith("xml") and start in (b"{", b"[")):
            items = _json_items(json.loads(body))
        elif media.endswith("xml") or start == b"<":
            items = _xml_items(ElementTree.fromstring(body))
        else:
            return _StowAnswer()
    except (ValueError, ElementTree.ParseError) as exc:  # JSON, encoding and XML errors alike
        log.warning("STOW-RS answer (HTTP %d, %s) could not be read: %s", response.status_code,
                    media or "no media type", exc)
        return _StowAnswer()
    uid = _REFERENCED_SOP_INSTANCE_UID
    referenced = items[_REFERENCED_SOP_SEQUENCE]
    return _StowAnswer(
        referenced=frozenset(i[uid] for i in referenced if i.get(uid)),
        failed={i[uid]: _reason(i.get(_FAILURE_REASON)) for i in items[_FAILED_SOP_SEQUENCE] if i.get(uid)},
        warnings={i[uid]: _reason(i.get(_WARNING_REASON)) for i in referenced if i.get(uid) and i.get(_WARNING_REASON)},
    )


def _failure_words(code: int | None) -> str:
    if code is None:
        return "no failure reason given"
    return f"failure reason 0x{code:04X} ({_STOW_FAILURES.get(code) or _store_failure_words(code)})"


def _never_sent(exc: BaseException) -> bool:
    """Whether a request failed before any byte of it reached the server (no connection made)."""
    import requests
    from urllib3.exceptions import NewConnectionError

    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        cause = exc.args[0] if exc.args else None
        return isinstance(getattr(cause, "reason", cause), NewConnectionError)  # refused, host unknown
    return not isinstance(exc, requests.exceptions.RequestException)  # e.g. encoding, before the POST


def _no_answer(node: PacsNode, objects: Sequence[ResultObject], exc: BaseException | None) -> PacsError:
    if exc is not None and _never_sent(exc):
        return _wrap(node, "STOW-RS upload", exc)  # nothing left this machine: a plain PACS error
    why = f"{type(exc).__name__}: " if exc is not None else ""
    return SendError(
        f"STOW-RS to {_url(node)}: no answer to the upload ({why}the connection closed, or no answer within "
        f"{node.timeout_s:g} s), so the PACS may or may not hold {', '.join(o.describe() for o in objects)}. "
        "Check the server log, then send again: the same UIDs are used, so the missing objects are added "
        "and none is duplicated",
        unconfirmed=objects,
    )


def _stow_error(
    node: PacsNode, code: int, answer: _StowAnswer, stored: Sequence[ResultObject],
    unconfirmed: Sequence[ResultObject], not_sent: Sequence[ResultObject],
) -> SendError:
    refused = [o for o in not_sent if answer.failed.get(o.sop_instance_uid) == SOP_CLASS_NOT_SUPPORTED]
    reasons = [answer.failed[o.sop_instance_uid] for o in not_sent if o.sop_instance_uid in answer.failed]
    # the permanent condition first: a processing failure (0x0110) must not hide a refused class
    status = SOP_CLASS_NOT_SUPPORTED if refused else next((r for r in reasons if r is not None), None)
    failed = [f"{o.kind} ({o.file_name}): {_failure_words(answer.failed[o.sop_instance_uid])}"
              for o in not_sent if o.sop_instance_uid in answer.failed]
    if failed:
        what = "the PACS did not store " + "; ".join(failed)
    elif code >= 400:
        what = _http_hint(node, code)
    else:
        what = "the answer does not confirm every instance"
    held = ("Stored in the PACS: " + ", ".join(o.describe() for o in stored)) if stored else \
        "The PACS confirmed none of them"
    maybe = ("; the PACS may or may not hold " + ", ".join(o.describe() for o in unconfirmed)
             + " (its answer does not say)") if unconfirmed else ""
    missing = f"; not stored: {', '.join(o.kind for o in not_sent)}" if not_sent else ""
    if refused:
        classes = ", ".join(f"{UID(c).name or 'SOP class'} ({c})" for c in sorted({o.sop_class_uid for o in refused}))
        tail = (f"The PACS does not accept {classes} by STOW-RS: configure it to accept them, or send by C-STORE "
                "(--send-via store) if it accepts them there; sending again cannot help until then")
        if stored or unconfirmed:
            tail += " (the PACS may now hold an incomplete result set)"
    elif stored or unconfirmed:
        tail = ("The PACS may now hold an incomplete result set. Fix the cause and send again: the same UIDs "
                "are used, so the missing objects are added and none is duplicated")
    else:
        tail = "Nothing was stored; fix the cause and send again"
    return SendError(
        f"STOW-RS to {_url(node)} answered HTTP {code}: {what}. {held}{maybe}{missing}. {tail}",
        stored=stored, unconfirmed=unconfirmed, not_sent=not_sent,
        refused_sop_classes=sorted({o.sop_class_uid for o in refused}), status=status, http_status=code,
    )


def stow_files(node: PacsNode, paths: Sequence[Path]) -> list[str]:
    """STOW-RS the files in one request; returns the SOPInstanceUIDs the server confirmed.

    The answer is read instance by instance (``ReferencedSOPSequence`` / ``FailedSOPSequence``,
    DICOM JSON or XML, also from an HTTP error such as 409). Unless the server confirms every
    instance, raises ``dimse.SendError`` as C-STORE does: ``stored`` (confirmed), ``unconfirmed``
    (sent, the answer does not say: no answer, an HTTP 5xx without a body), ``not_sent`` (failed,
    or refused as a whole by an HTTP 4xx) and ``refused_sop_classes`` (failure reason 0x0122:
    permanent, never worth a retry). An HTTP 200 without a response body returns no UIDs (the
    server stored them all, it says, but not which) and logs a warning. A request that never
    reached the server is a plain ``PacsError``; an unreadable file an ``ExportError``.
    """
    if not paths:
        return []
    datasets, objects = read_result_files(paths)
    answers: list = []  # every HTTP answer, as it arrived (dicomweb-client hides the body of an error)
    failure: Exception | None = None
    try:
        _client(node, on_response=answers.append).store_instances(datasets)
    except SarcoscopeError:  # ConfigError (credentials) as it is
        raise
    except Exception as exc:  # noqa: BLE001 - judged below from the answer itself, or wrapped
        failure = exc
    if not answers:
        raise _no_answer(node, objects, failure) from failure
    response = answers[-1]
    code = response.status_code
    answer = _stow_answer(response)
    stored, unconfirmed, not_sent = [], [], []
    for o in objects:
        uid = o.sop_instance_uid
        if uid in answer.failed:
            not_sent.append(o)
        elif uid in answer.referenced:
            stored.append(o)
            if uid in answer.warnings:
                log.warning("STOW-RS of the %s to %s: stored with warning reason 0x%04X", o.kind, node.name,
                            answer.warnings[uid] or 0)
        elif 400 <= code < 500:  # the request was refused as a whole (PS3.18 10.5.3): none stored
            not_sent.append(o)
        else:
            unconfirmed.append(o)
    if code < 300 and not not_sent:
        if not unconfirmed:
            log.info("STOW-RS to %s: %d instance(s)", node.name, len(stored))
            return [o.sop_instance_uid for o in stored]
        if code == 200 and not answer.usable:
            log.warning("STOW-RS to %s: HTTP 200 without a Store Instances Response: the server says it stored "
                        "all %d instance(s) but not which; none is reported as confirmed", node.name, len(objects))
            return []
    raise _stow_error(node, code, answer, stored, unconfirmed, not_sent) from failure
