"""DIMSE client side (pynetdicom): C-ECHO, C-FIND, C-GET, C-MOVE and C-STORE against a PACS node.

Every failure becomes a ``PacsError`` whose message names the node and says what to check;
``status`` carries the DIMSE status when there is one. Retrieved instances are written to disk
one by one as they arrive (never the whole series in memory). Patient identifiers never
reach the log.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.sop_class import Verification
from pynetdicom import AE, evt
from pynetdicom.presentation import PresentationContext, build_context, build_role
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from sarcoscope.errors import ExportError, PacsError
from sarcoscope.pacs.config import PacsNode
from sarcoscope.pacs.contexts import CT_STORAGE, ct_retrieve_contexts
from sarcoscope.pacs.scp import write_instance_atomically
from sarcoscope.pacs.uids import check_uid

log = logging.getLogger(__name__)

PENDING = (0xFF00, 0xFF01)
SUCCESS = 0x0000
#: C-STORE warnings that still mean "stored" (coercion, elements discarded, not fully validated).
STORE_WARNINGS = (0x0001, 0xB000, 0xB006, 0xB007)

_REJECT_REASONS = {
    (0x01, 0x02): "no reason given",
    (0x01, 0x03): "our calling AE title is not recognised by the PACS",
    (0x01, 0x07): "the called AE title is not recognised by the PACS",
    (0x02, 0x01): "no reason given",
    (0x03, 0x01): "temporary congestion",
    (0x03, 0x02): "local limit exceeded",
}


@dataclass(frozen=True)
class StudyQuery:
    """C-FIND / QIDO-RS study-level filters (all optional; ``None`` = no constraint)."""

    patient_id: str | None = None
    accession: str | None = None
    study_uid: str | None = None
    date_from: str | None = None  # YYYYMMDD
    date_to: str | None = None
    modality: str | None = None

    def date_range(self) -> str | None:
        if not self.date_from and not self.date_to:
            return None
        return f"{self.date_from or ''}-{self.date_to or ''}"


@dataclass(frozen=True)
class StudyRecord:
    study_uid: str
    patient_id: str
    accession: str
    study_date: str
    description: str
    modalities: tuple[str, ...]
    n_series: int | None
    n_instances: int | None


@dataclass(frozen=True)
class SeriesRecord:
    study_uid: str
    series_uid: str
    modality: str
    description: str
    number: int | None
    n_instances: int | None
    body_part: str = ""

    def describe(self) -> str:
        n = "?" if self.n_instances is None else str(self.n_instances)
        return f"{self.modality} #{self.number} '{self.description}' ({n} images)"


@dataclass(frozen=True)
class RetrieveStats:
    """What a retrieval put on disk."""

    folder: Path
    n_files: int
    n_bytes: int
    seconds: float
    transfer_syntaxes: tuple[str, ...]


# -- associations -----------------------------------------------------------------------------
def _new_ae(calling_aet: str, node: PacsNode) -> AE:
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = node.timeout_s
    ae.dimse_timeout = node.timeout_s
    ae.network_timeout = node.timeout_s
    ae.connection_timeout = min(node.timeout_s, 10.0)
    return ae


def explain_failed_association(assoc, node: PacsNode, calling_aet: str) -> PacsError:
    """Turn a failed association into a message that says what to check."""
    if assoc.is_rejected:
        prim = assoc.acceptor.primitive
        key = (getattr(prim, "result_source", None), getattr(prim, "diagnostic", None))
        reason = _REJECT_REASONS.get(key, f"source {key[0]}, reason {key[1]}")
        hint = {
            (0x01, 0x03): f"register calling AE {calling_aet!r} (and our host/port) at the PACS, "
            "or set [local] ae_title / --calling-aet to one it knows",
            (0x01, 0x07): f"check ae_title of node {node.name!r} (currently {node.ae_title!r})",
        }.get(key, "check the AE titles and the PACS's list of allowed modalities")
        return PacsError(
            f"PACS {node.describe()} rejected the association from {calling_aet!r}: {reason}; {hint}"
        )
    if assoc.is_aborted and _port_answers(node):
        # the PACS listens but dropped the association unanswered: how many PACS (and Orthanc
        # now and then, instead of its A-ASSOCIATE-RJ) turn away a calling AE title they do not
        # know, and what a TLS mismatch looks like from this side
        return PacsError(
            f"PACS {node.describe()} accepted the connection but closed the association from {calling_aet!r} "
            f"without answering it (or gave no answer within {node.timeout_s:g} s). Usual causes: it does not "
            f"know calling AE {calling_aet!r} (register calling AE {calling_aet!r} and our host/port at the PACS, "
            f"or set [local] ae_title / --calling-aet to one it knows), its own AE title is not "
            f"{node.ae_title!r} (check ae_title of node {node.name!r}), or TLS is on at one side only or its "
            f"certificate is not trusted (compare node {node.name!r}'s tls settings with the PACS); the PACS's "
            "log says which"
        )
    return PacsError(
        f"cannot connect to PACS {node.describe()}: connection refused, closed or no answer within "
        f"{node.timeout_s:g} s; check that the PACS is running and the host/port are right"
    )


def _port_answers(node: PacsNode) -> bool:
    """Whether a plain TCP connection to the node's port succeeds (is anything listening?)."""
    try:
        with socket.create_connection((node.host, node.port), timeout=min(node.timeout_s, 5.0)):
            return True
    except OSError:
        return False


@contextmanager
def associate(
    node: PacsNode,
    calling_aet: str,
    contexts: Sequence[PresentationContext],
    *,
    ext_neg: list | None = None,
    evt_handlers: list | None = None,
) -> Iterator:
    """An established association to ``node``, released on exit."""
    ae = _new_ae(calling_aet, node)
    ae.requested_contexts = list(contexts)
    tls_args = None
    if node.tls is not None:
        from sarcoscope.pacs.tls import client_context

        tls_args = (client_context(node.tls), node.host)
    try:
        assoc = ae.associate(
            node.host, node.port, ae_title=node.ae_title, ext_neg=ext_neg,
            evt_handlers=evt_handlers, tls_args=tls_args,
        )
    except OSError as exc:  # the host name does not resolve (socket.gaierror) or the network is down
        ae.shutdown()
        raise PacsError(
            f"cannot reach {node.describe()}: {exc.strerror or exc} — check the host name and the "
            "network ([nodes.<name>] host / --host)"
        ) from exc
    if not assoc.is_established:
        raise explain_failed_association(assoc, node, calling_aet)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def _check_status(status: Dataset, node: PacsNode, what: str, allowed: Sequence[int] = (SUCCESS,)) -> int:
    if not status or "Status" not in status:
        raise PacsError(
            f"{what} on {node.describe()} got no answer: the PACS aborted the association or did "
            "not reply in time (interrupted transfer; nothing was lost, run the command again). If it "
            "happens every time, the PACS may not allow our calling AE title to do this: register it "
            "there as a modality"
        )
    code = int(status.Status)
    if code not in allowed:
        comment = status.get("ErrorComment", "")
        raise PacsError(
            f"{what} on {node.describe()} failed with DIMSE status 0x{code:04X}"
            + (f" ({comment})" if comment else "")
            + "; check the PACS log and permissions for our AE title",
            status=code,
        )
    return code


# -- C-ECHO -----------------------------------------------------------------------------------
def echo(node: PacsNode, calling_aet: str) -> float:
    """C-ECHO ``node``; returns the round trip in milliseconds (association included)."""
    t0 = time.perf_counter()
    with associate(node, calling_aet, [build_context(Verification)]) as assoc:
        status = assoc.send_c_echo()
        _check_status(status, node, "C-ECHO")
    return (time.perf_counter() - t0) * 1000.0


# -- C-FIND -----------------------------------------------------------------------------------
def _find(node: PacsNode, calling_aet: str, identifier: Dataset) -> list[Dataset]:
    ctx = build_context(StudyRootQueryRetrieveInformationModelFind)
    out: list[Dataset] = []
    with associate(node, calling_aet, [ctx]) as assoc:
        final = None
        for status, ds in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
            if status and int(getattr(status, "Status", -1)) in PENDING:
                if ds is not None:
                    out.append(ds)
            else:
                final = status
        _check_status(final, node, f"C-FIND ({identifier.QueryRetrieveLevel} level)")
    return out


def _int(ds: Dataset, key: str) -> int | None:
    v = ds.get(key)
    try:
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def find_studies(node: PacsNode, calling_aet: str, query: StudyQuery) -> list[StudyRecord]:
    """Study-level C-FIND with the given filters."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = check_uid(query.study_uid, "--study") if query.study_uid else ""
    ds.PatientID = query.patient_id or ""
    ds.AccessionNumber = query.accession or ""
    ds.StudyDate = query.date_range() or ""
    ds.ModalitiesInStudy = query.modality or ""
    ds.StudyDescription = ""
    ds.NumberOfStudyRelatedSeries = ""
    ds.NumberOfStudyRelatedInstances = ""
    records = []
    for r in _find(node, calling_aet, ds):
        uid = str(r.get("StudyInstanceUID", ""))
        mods = r.get("ModalitiesInStudy", "")
        if isinstance(mods, str):
            mods_t = tuple(m for m in mods.split("\\") if m)
        else:
            mods_t = tuple(str(m) for m in mods)
        records.append(
            StudyRecord(
                study_uid=uid,
                patient_id=str(r.get("PatientID", "")),
                accession=str(r.get("AccessionNumber", "")),
                study_date=str(r.get("StudyDate", "")),
                description=str(r.get("StudyDescription", "")),
                modalities=mods_t,
                n_series=_int(r, "NumberOfStudyRelatedSeries"),
                n_instances=_int(r, "NumberOfStudyRelatedInstances"),
            )
        )
    log.info("C-FIND studies on %s: %d match(es)", node.name, len(records))
    return records


def find_series(node: PacsNode, calling_aet: str, study_uid: str) -> list[SeriesRecord]:
    """Series-level C-FIND inside one study (what the study holds, before retrieving anything)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = check_uid(study_uid, "study UID")
    ds.SeriesInstanceUID = ""
    ds.Modality = ""
    ds.SeriesDescription = ""
    ds.SeriesNumber = ""
    ds.BodyPartExamined = ""
    ds.NumberOfSeriesRelatedInstances = ""
    out = []
    for r in _find(node, calling_aet, ds):
        out.append(
            SeriesRecord(
                study_uid=study_uid,
                series_uid=str(r.get("SeriesInstanceUID", "")),
                modality=str(r.get("Modality", "")),
                description=str(r.get("SeriesDescription", "")),
                number=_int(r, "SeriesNumber"),
                n_instances=_int(r, "NumberOfSeriesRelatedInstances"),
                body_part=str(r.get("BodyPartExamined", "")),
            )
        )
    return out


@dataclass(frozen=True)
class InstanceBrief:
    """What an instance-level query tells about an image without retrieving it."""

    sop_uid: str
    image_type: tuple[str, ...]
    orientation: tuple[float, ...]  # ImageOrientationPatient, () when not answered


def _brief(r: Dataset) -> InstanceBrief:
    it = r.get("ImageType", "")
    image_type = tuple(str(v).upper() for v in it) if not isinstance(it, str) else tuple(v for v in it.upper().split("\\") if v)
    try:
        iop = tuple(float(v) for v in (r.get("ImageOrientationPatient") or ()))
    except (TypeError, ValueError):
        iop = ()
    return InstanceBrief(str(r.get("SOPInstanceUID", "")), image_type, iop if len(iop) == 6 else ())


def find_instances(node: PacsNode, calling_aet: str, study_uid: str, series_uid: str) -> list[InstanceBrief]:
    """Image-level C-FIND: ImageType and orientation of each instance (to reject scouts/reformats
    before retrieving a single pixel)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = check_uid(study_uid, "study UID")
    ds.SeriesInstanceUID = check_uid(series_uid, "series UID")
    ds.SOPInstanceUID = ""
    ds.ImageType = ""
    ds.ImageOrientationPatient = ""
    return [_brief(r) for r in _find(node, calling_aet, ds)]


def resolve_study(node: PacsNode, calling_aet: str, *, study_uid: str | None, accession: str | None) -> str:
    """The one StudyInstanceUID for ``--study`` or ``--accession`` (error if none or several)."""
    if study_uid:
        return check_uid(study_uid, "--study")
    if not accession:
        raise PacsError("give --study UID or --accession NUMBER to say which study to analyse")
    found = find_studies(node, calling_aet, StudyQuery(accession=accession))
    uids = sorted({r.study_uid for r in found if r.study_uid})
    if not uids:
        raise PacsError(f"no study on {node.describe()} matches the accession number given; check it with `sarcoscope pacs find`")
    if len(uids) > 1:
        raise PacsError(
            f"{len(uids)} studies on {node.describe()} share the accession number given; use --study UID instead"
        )
    return uids[0]


# -- C-GET ------------------------------------------------------------------------------------
class _Receiver:
    """C-STORE sub-operation handler writing each instance to ``folder`` as it arrives."""

    def __init__(self, folder: Path, series_uid: str | None) -> None:
        self.folder = folder
        self.series_uid = series_uid
        self.n_files = 0
        self.n_bytes = 0
        self.syntaxes: set[str] = set()

    def handle(self, event: evt.Event) -> int:
        try:
            sop = check_uid(event.request.AffectedSOPInstanceUID, "received SOPInstanceUID")
        except PacsError as exc:
            log.warning("refusing a received instance: %s", exc)
            return 0xC000
        data = event.encoded_dataset(include_meta=True)
        try:
            write_instance_atomically(data, self.folder / f"{sop}.dcm", durable=False)
        except OSError as exc:
            log.error("cannot write received instance into %s: %s", self.folder, exc)
            return 0xA700
        self.n_files += 1
        self.n_bytes += len(data)
        self.syntaxes.add(str(event.context.transfer_syntax))
        return SUCCESS


def _retrieve_identifier(study_uid: str, series_uid: str) -> Dataset:
    # Unique keys only: Orthanc 1.10 refuses C-GET/C-MOVE identifiers with empty keys.
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = check_uid(study_uid, "study UID")
    ds.SeriesInstanceUID = check_uid(series_uid, "series UID")
    return ds


def _check_sub_operations(final: Dataset | None, node: PacsNode, what: str, expected: int | None, got: int) -> None:
    code = _check_status(final, node, what, allowed=(SUCCESS, 0xB000))
    failed = _int(final, "NumberOfFailedSuboperations") or 0
    if code == 0xB000 or failed:
        raise PacsError(
            f"{what} on {node.describe()}: {failed} image(s) failed to transfer ({got} received); "
            "the received files are kept, run the command again to complete the transfer",
            status=code,
        )
    if expected is not None and got < expected:
        raise PacsError(
            f"{what} on {node.describe()}: only {got} of {expected} images arrived "
            "(interrupted transfer); run the command again",
            status=code,
        )


def get_series(
    node: PacsNode, calling_aet: str, study_uid: str, series_uid: str, folder: Path,
    expected: int | None = None,
) -> RetrieveStats:
    """C-GET one series into ``folder`` (outbound connection only: works behind firewalls)."""
    folder.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(folder, series_uid)
    contexts = [build_context(StudyRootQueryRetrieveInformationModelGet)] + ct_retrieve_contexts()
    roles = [build_role(c, scp_role=True) for c in CT_STORAGE]
    t0 = time.perf_counter()
    with associate(
        node, calling_aet, contexts, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, receiver.handle)]
    ) as assoc:
        final = None
        for status, _ in assoc.send_c_get(
            _retrieve_identifier(study_uid, series_uid), StudyRootQueryRetrieveInformationModelGet
        ):
            if status and int(getattr(status, "Status", -1)) in PENDING:
                continue
            final = status
        _check_sub_operations(final, node, "C-GET", expected, receiver.n_files)
    seconds = time.perf_counter() - t0
    log.info("C-GET from %s: %d files, %.1f MB in %.2f s", node.name, receiver.n_files, receiver.n_bytes / 1e6, seconds)
    return RetrieveStats(folder, receiver.n_files, receiver.n_bytes, seconds, tuple(sorted(receiver.syntaxes)))


# -- C-MOVE -----------------------------------------------------------------------------------
def move_series(
    node: PacsNode, calling_aet: str, study_uid: str, series_uid: str, destination_aet: str,
    expected: int | None = None, received: Callable[[], int] | None = None,
) -> int:
    """C-MOVE one series to ``destination_aet`` (our storage SCP must already be listening and be
    registered at the PACS under that AE title). Returns the number of completed sub-operations."""
    ctx = build_context(StudyRootQueryRetrieveInformationModelMove)
    with associate(node, calling_aet, [ctx]) as assoc:
        final = None
        for status, _ in assoc.send_c_move(
            _retrieve_identifier(study_uid, series_uid), destination_aet, StudyRootQueryRetrieveInformationModelMove
        ):
            if status and int(getattr(status, "Status", -1)) in PENDING:
                continue
            final = status
        if final is not None and int(getattr(final, "Status", -1)) == 0xA801:
            raise PacsError(
                f"C-MOVE on {node.describe()}: the PACS does not know destination AE {destination_aet!r}; "
                "register our storage SCP (AE title, host, port) as a modality at the PACS",
                status=0xA801,
            )
        if final is not None and "Status" in final and int(final.Status) not in (SUCCESS, 0xB000):
            raise PacsError(
                f"C-MOVE on {node.describe()} failed with DIMSE status 0x{int(final.Status):04X}: the PACS "
                f"could not send the images to AE {destination_aet!r}; check that this AE (our storage "
                "SCP: AE title, host, port) is registered as a modality at the PACS and is listening",
                status=int(final.Status),
            )
        completed = _int(final, "NumberOfCompletedSuboperations") if final else None
        got = received() if received else (completed or 0)
        _check_sub_operations(final, node, "C-MOVE", expected, got)
    return got


# -- C-STORE ----------------------------------------------------------------------------------
_SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
_SC_PREFIX = "1.2.840.10008.5.1.4.1.1.7"

#: C-STORE status / STOW-RS failure reason "SOP class not supported" (PS3.7 C): permanent for that PACS.
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: C-STORE failure statuses (PS3.4 B.2.3, PS3.7 C) in words, by exact code or high byte.
_STORE_FAILURES = {
    SOP_CLASS_NOT_SUPPORTED: "SOP class not supported",
    0x0124: "not authorised",
    0x0210: "duplicate invocation",
    0x0211: "unrecognised operation",
    0x0212: "mistyped argument",
}
_STORE_FAILURE_CLASSES = {
    0xA7: "refused: out of resources",
    0xA9: "error: data set does not match SOP class",
    0xC0: "error: cannot understand",
}


def result_kind(sop_class_uid: str) -> str:
    """What a result object is, in the words the user knows: SEG, SR or key image."""
    uid = str(sop_class_uid)
    if uid == _SEG_CLASS:
        return "SEG"
    if uid.startswith(_SR_PREFIX):
        return "SR"
    if uid == _SC_PREFIX or uid.startswith(_SC_PREFIX + "."):
        return "key image"
    return UID(uid).name or uid


@dataclass(frozen=True)
class ResultObject:
    """One object being sent back: what it is and which instance."""

    kind: str  # "SEG", "SR", "key image" (else the SOP class name)
    sop_class_uid: str
    sop_instance_uid: str
    file_name: str

    def describe(self) -> str:
        return f"{self.kind} ({self.file_name}, SOPInstanceUID {self.sop_instance_uid})"


def _kinds(objects: Sequence[ResultObject]) -> str:
    return ", ".join(o.kind for o in objects) or "none"


class SendError(PacsError):
    """Sending result objects failed; says exactly which of them the PACS holds.

    ``stored``: confirmed stored (success or warning status). ``unconfirmed``: the connection
    ended while it was being sent, so the PACS may or may not hold it. ``not_sent``: never
    sent, or refused by the PACS. ``refused_sop_classes`` names the SOP classes the PACS does not
    accept (a permanent condition until the PACS is configured; retrying cannot help): by C-STORE
    they are refused up front, nothing is sent and ``stored`` and ``unconfirmed`` are empty; by
    STOW-RS (failure reason 0x0122) the PACS may have stored the other objects of the request.
    Result UIDs are deterministic: sending the same files again stores the missing objects and
    does not duplicate the stored ones.
    """

    def __init__(
        self, message: str, *, stored: Sequence[ResultObject] = (), unconfirmed: Sequence[ResultObject] = (),
        not_sent: Sequence[ResultObject] = (), refused_sop_classes: Sequence[str] = (), status: int | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message, status=status, http_status=http_status)
        self.refused_sop_classes = tuple(refused_sop_classes)
        self.stored = tuple(stored)
        self.unconfirmed = tuple(unconfirmed)
        self.not_sent = tuple(not_sent)

    @property
    def stored_uids(self) -> list[str]:
        """SOPInstanceUIDs the PACS confirmed (for the audit log)."""
        return [o.sop_instance_uid for o in self.stored]

    @property
    def unconfirmed_uids(self) -> list[str]:
        """SOPInstanceUIDs sent without an answer: the PACS may or may not hold them."""
        return [o.sop_instance_uid for o in self.unconfirmed]

    @property
    def partial(self) -> bool:
        """True when the PACS may hold some but not all of the objects."""
        return bool(self.stored or self.unconfirmed)


def read_result_files(paths: Sequence[Path]) -> tuple[list[Dataset], list[ResultObject]]:
    """Read result files to send (C-STORE or STOW-RS): their datasets and what each one is.

    An unreadable file is an ``ExportError`` naming it (raised before any network traffic; the
    node retries it like a disk error), never an "internal error".
    """
    datasets = []
    for p in paths:
        try:
            datasets.append(dcmread(p))
        except Exception as exc:  # noqa: BLE001 - an unreadable result file, before any network
            raise ExportError(f"cannot read result file {p} to send it: {exc}") from exc
    objects = [
        ResultObject(result_kind(str(d.SOPClassUID)), str(d.SOPClassUID), str(d.SOPInstanceUID), Path(p).name)
        for p, d in zip(paths, datasets)
    ]
    return datasets, objects


def _store_failure_words(code: int) -> str:
    return _STORE_FAILURES.get(code) or _STORE_FAILURE_CLASSES.get(code >> 8, "failure")


def _usable_context(accepted: Sequence[PresentationContext], sop_class: str, ts: str) -> bool:
    """Whether an accepted context can carry an object of ``sop_class`` encoded as ``ts``: the
    same transfer syntax, or (as pynetdicom converts them) another uncompressed one of the same
    endianness."""
    want = UID(ts)
    for cx in accepted:
        if cx.abstract_syntax != sop_class or not cx.transfer_syntax:
            continue
        have = UID(cx.transfer_syntax[0])
        if have == want:
            return True
        if not (have.is_compressed or want.is_compressed) and have.is_little_endian == want.is_little_endian:
            return True
    return False


def _refused_classes_error(
    node: PacsNode, calling_aet: str, refused: Sequence[tuple[ResultObject, str]], objects: Sequence[ResultObject]
) -> SendError:
    what = "; ".join(
        f"{o.kind} ({UID(o.sop_class_uid).name or 'SOP class'} {o.sop_class_uid}, transfer syntax "
        f"{UID(ts).name or ts})" for o, ts in refused
    )
    classes = ", ".join(sorted({f"{UID(o.sop_class_uid).name or o.sop_class_uid} ({o.sop_class_uid})"
                                for o, _ in refused}))
    return SendError(
        f"PACS {node.describe()} does not accept {what} from calling AE {calling_aet!r}: it declined that "
        f"presentation context, so nothing was sent (SEG, SR and key image are sent together or not at "
        f"all). Configure the PACS to accept storage of {classes} from AE {calling_aet!r} with explicit or "
        "implicit VR little endian (its list of accepted storage SOP classes / transfer syntaxes), or send "
        "by DICOMweb (--send-via stow) if it accepts them there",
        not_sent=objects, refused_sop_classes=sorted({o.sop_class_uid for o, _ in refused}),
    )


def _partial_error(
    node: PacsNode, stored: Sequence[ResultObject], failed: ResultObject, why: str, uncertain: bool,
    rest: Sequence[ResultObject], status: int | None,
) -> SendError:
    unconfirmed = [failed] if uncertain else []
    not_sent = list(rest) if uncertain else [failed, *rest]
    held = ("Stored in the PACS: " + ", ".join(o.describe() for o in stored)) if stored else \
        "The PACS confirmed none of them"
    maybe = (f"; the {failed.kind} may or may not have been stored (no answer)") if uncertain else ""
    partial = bool(stored or uncertain)
    tail = (
        "The PACS may now hold an incomplete result set. Fix the cause and send again: the same "
        "UIDs are used, so the missing objects are added and none is duplicated"
        if partial else "Nothing was stored; fix the cause and send again"
    )
    missing = f"; not stored: {_kinds(not_sent)}" if not_sent else ""
    return SendError(
        f"C-STORE to {node.describe()} stopped at the {failed.kind} ({failed.file_name}): {why}. {held}{maybe}{missing}. {tail}",
        stored=stored, unconfirmed=unconfirmed, not_sent=not_sent, status=status,
    )


def store_files(node: PacsNode, calling_aet: str, paths: Sequence[Path]) -> list[str]:
    """C-STORE files to ``node`` (as stored: their transfer syntax, falling back to explicit VR LE).

    Returns the SOPInstanceUIDs stored. Before sending anything, checks that the PACS accepted a
    presentation context for every object's SOP class and transfer syntax (``SendError`` naming
    the refused class otherwise, nothing sent); a failure part-way raises ``SendError`` whose
    message and ``stored``/``unconfirmed``/``not_sent`` say which objects the PACS holds.
    """
    if not paths:
        return []
    datasets, objects = read_result_files(paths)
    syntaxes_of = [str(d.file_meta.TransferSyntaxUID) for d in datasets]
    pairs = sorted(set(zip((o.sop_class_uid for o in objects), syntaxes_of)))
    contexts = []
    for sop_class, ts in pairs:
        syntaxes = [ts] + [s for s in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if s != ts]
        contexts.append(build_context(sop_class, syntaxes))
    stored: list[ResultObject] = []
    with associate(node, calling_aet, contexts) as assoc:
        refused = [(o, ts) for o, ts in zip(objects, syntaxes_of)
                   if not _usable_context(assoc.accepted_contexts, o.sop_class_uid, ts)]
        if refused:
            raise _refused_classes_error(node, calling_aet, refused, objects)
        for n, (obj, ds) in enumerate(zip(objects, datasets)):
            rest = objects[n + 1:]
            try:
                status = assoc.send_c_store(ds)
            except (ValueError, RuntimeError) as exc:  # pynetdicom refuses before sending a byte
                raise _partial_error(node, stored, obj, f"it could not be sent ({exc})", False, rest, None) from exc
            if not status or "Status" not in status:
                raise _partial_error(
                    node, stored, obj,
                    f"the PACS closed the association or did not answer within {node.timeout_s:g} s "
                    "(check the PACS log)", True, rest, None,
                )
            code = int(status.Status)
            if code not in (SUCCESS, *STORE_WARNINGS):
                comment = status.get("ErrorComment", "")
                why = f"DIMSE status 0x{code:04X} ({_store_failure_words(code)}" + (f": {comment}" if comment else "") + \
                    "); check the PACS log and its storage permissions for our AE title"
                raise _partial_error(node, stored, obj, why, False, rest, code)
            if code != SUCCESS:
                log.warning("C-STORE of the %s to %s: warning status 0x%04X (stored)", obj.kind, node.name, code)
            stored.append(obj)
    log.info("C-STORE to %s: %d instance(s)", node.name, len(stored))
    return [o.sop_instance_uid for o in stored]
