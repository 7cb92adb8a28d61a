"""Our storage SCP: receives instances (C-MOVE destination, ``sarcoscope node``) straight to disk.

Security at the association: the called AE title must be ours, the calling AE title must be on
the allow-list (when one is configured) and the peer address on the address allow-list (when
configured). Every UID is validated before it becomes a path; each instance is written to a
temporary name and renamed, so a half-received file never looks complete.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from sarcoscope.errors import PacsError
from sarcoscope.pacs.config import LocalNode
from sarcoscope.pacs.contexts import ALL_SYNTAXES, CT_STORAGE
from sarcoscope.pacs.uids import check_uid, uid_path

log = logging.getLogger(__name__)

#: C-STORE statuses (PS3.4 Annex B).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True)
class StoredInstance:
    path: Path
    study_uid: str
    series_uid: str
    sop_uid: str
    calling_aet: str


def write_instance_atomically(encoded: bytes, dest: Path, *, durable: bool = True) -> None:
    """Write a received instance under a temporary name, then rename into place.

    ``durable`` fsyncs first: the node needs it (a study acknowledged to the PACS must survive
    a power cut); a one-off retrieval that is analysed at once and re-fetched on failure does not.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with open(tmp, "wb") as fh:
        fh.write(encoded)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, dest)


class StorageSCP:
    """A running storage SCP writing to ``root/<study>/<series>/<sop>.dcm``.

    ``on_stored`` is called (in the association thread) after each instance lands on disk.
    Use as a context manager or call ``start()`` / ``stop()``.
    """

    def __init__(
        self,
        local: LocalNode,
        root: Path,
        on_stored: Callable[[StoredInstance], None] | None = None,
        *,
        accept_all_storage: bool = False,
        durable: bool = True,
    ) -> None:
        self.local = local
        self.root = Path(root)
        self.on_stored = on_stored
        self.durable = durable
        self._server = None
        self._lock = threading.Lock()
        #: Held while an instance is written and reported: whoever moves a study folder away
        #: (the node closing a batch) takes it, so no write is ever split by the move.
        self.store_lock = threading.Lock()
        self.n_received = 0
        self.n_refused = 0
        ae = AE(ae_title=local.ae_title)
        ae.require_called_aet = True
        if local.allowed_calling_aets:
            ae.require_calling_aet = list(local.allowed_calling_aets)
        ae.add_supported_context(Verification)
        if accept_all_storage:
            from pynetdicom import StoragePresentationContexts

            for ctx in StoragePresentationContexts:
                ae.add_supported_context(ctx.abstract_syntax, list(ALL_SYNTAXES))
        else:
            for sop_class in CT_STORAGE:
                ae.add_supported_context(sop_class, list(ALL_SYNTAXES))
        self._ae = ae

    # -- handlers -----------------------------------------------------------------------------
    def _on_requested(self, event: evt.Event) -> None:
        allowed = self.local.allowed_peers
        address = event.assoc.requestor.address
        if allowed and address not in allowed:
            log.warning("refusing association from %s: address not in allowed_peers", address)
            with self._lock:
                self.n_refused += 1
            # Rejected permanent, service user, no reason given.
            event.assoc.acse.send_reject(0x01, 0x01, 0x01)

    def _on_store(self, event: evt.Event) -> int:
        calling = event.assoc.requestor.ae_title
        try:
            ds = event.dataset
            study = check_uid(ds.get("StudyInstanceUID", ""), "received StudyInstanceUID")
            series = check_uid(ds.get("SeriesInstanceUID", ""), "received SeriesInstanceUID")
            sop = check_uid(event.request.AffectedSOPInstanceUID, "received SOPInstanceUID")
        except PacsError as exc:
            log.warning("refusing an instance from %s: %s", calling, exc)
            return STATUS_CANNOT_UNDERSTAND
        except Exception as exc:  # noqa: BLE001 - undecodable dataset from the peer
            log.warning("refusing an undecodable instance from %s: %s", calling, exc)
            return STATUS_CANNOT_UNDERSTAND
        dest = uid_path(self.root, study, series) / f"{sop}.dcm"
        encoded = event.encoded_dataset(include_meta=True)
        with self.store_lock:
            try:
                write_instance_atomically(encoded, dest, durable=self.durable)
            except OSError as exc:
                log.error("cannot write received instance to %s: %s", dest, exc)
                return STATUS_OUT_OF_RESOURCES
            if self.on_stored is not None:
                self.on_stored(StoredInstance(dest, study, series, sop, calling))
        with self._lock:
            self.n_received += 1
        return STATUS_SUCCESS

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "StorageSCP":
        ssl_context = None
        if self.local.tls is not None:
            from sarcoscope.pacs.tls import server_context

            ssl_context = server_context(self.local.tls)
        handlers = [(evt.EVT_REQUESTED, self._on_requested), (evt.EVT_C_STORE, self._on_store)]
        try:
            self._server = self._ae.start_server(
                (self.local.bind, self.local.port), block=False, ssl_context=ssl_context,
                evt_handlers=handlers,
            )
        except OSError as exc:
            raise PacsError(
                f"cannot listen on {self.local.bind}:{self.local.port} as {self.local.ae_title}: {exc}; "
                "choose another [local] port or stop the program using it"
            ) from exc
        log.info("storage SCP %s listening on %s:%d", self.local.ae_title, self.local.bind, self.port)
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            return self.local.port
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> "StorageSCP":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

