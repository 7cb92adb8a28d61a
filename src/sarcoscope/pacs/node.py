"""``sarcoscope node``: a DICOM receiver that analyses what a PACS routes to it and sends the
results back.

Received instances land in ``work_dir/incoming/<study>/<series>/`` (validated UIDs, atomic
writes). A study is complete when nothing new arrived for ``quiet_period_s``: its folder is then
moved (one rename, while no instance is being written) to ``work_dir/staged/<job>/<study>/`` and
becomes a job in the persistent queue (``work_dir/queue``). The job covers exactly the instances
received before that quiet period; anything arriving later starts a new batch in ``incoming/``
and becomes its own job, so a running job never sees, nor deletes, images it did not analyse. A worker thread analyses it (``process``,
injected by the CLI: pipeline + DICOM writers), sends the results (``send``) and retries with
exponential back-off when the PACS is unreachable. Studies whose analysis cannot succeed
(L3 not found, not CT, a PACS refusing our SEG/SR SOP class) fail at once with the reason
recorded; a failed job keeps only its record: its staged images and results are deleted. On start-up, jobs interrupted
by a crash are resumed and received-but-unqueued studies are picked up again: nothing is lost.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from sarcoscope.errors import ConfigError, ExportError, L3NotFound, ModelError, PacsError, SarcoscopeError
from sarcoscope.pacs.audit import AuditLog, failure_reason
from sarcoscope.pacs.config import LocalNode
from sarcoscope.pacs.dimse import SOP_CLASS_NOT_SUPPORTED, SendError
from sarcoscope.pacs.queue import Job, JobQueue
from sarcoscope.pacs.scp import StorageSCP, StoredInstance
from sarcoscope.pacs.uids import is_valid_uid

log = logging.getLogger(__name__)

#: Errors worth retrying (network, PACS, disk); anything else about the study fails the job at once.
RETRYABLE = (PacsError, ExportError, OSError)
#: Failures of the node's own set-up (a missing secret, an unreadable certificate, a damaged
#: model file), not of the study: retried like a PACS outage, and when attempts run out the
#: study's images are kept, so it can be run again once the set-up is fixed.
SITE_PROBLEMS = (ConfigError, ModelError)
#: History entry of a failed job whose images stay (start-up cleanup leaves them too).
IMAGES_KEPT = "images kept"

ProcessFn = Callable[[Path, Path], Sequence[Path]]  # (images folder, results folder) -> files to send
#: Sends the files; returns the SOPInstanceUIDs stored (None: the node reads them from the files).
SendFn = Callable[[Sequence[Path]], "Sequence[str] | None"]


#: The locator's advice to give --slices, which the node cannot take per study.
_SLICES_ADVICE = re.compile(
    r"[.;,]?\s*(?:or\s+)?give the slice(?: to analyse)? with --slices(?: if you know it)?\.?", re.IGNORECASE
)


def refuses_sop_class(exc: BaseException) -> bool:
    """True when ``exc`` says the PACS does not accept one of the SOP classes we send
    (a permanent condition: retrying cannot help until its configuration changes): judged by
    what the sender knows (``dimse.SendError.refused_sop_classes``, status 0x0122), never by the
    wording of a message."""
    if isinstance(exc, SendError) and exc.refused_sop_classes:
        return True
    return isinstance(exc, PacsError) and exc.status == SOP_CLASS_NOT_SUPPORTED


def stored_before_failure(exc: BaseException) -> tuple[list[str], list[str]]:
    """(stored, unconfirmed) SOPInstanceUIDs of a send that failed part-way, when the error says
    so (``dimse.SendError``): confirmed by the PACS / sent without an answer."""
    if not isinstance(exc, SendError):
        return [], []
    return exc.stored_uids, exc.unconfirmed_uids


def sop_instance_uids(files: Sequence[Path]) -> list[str]:
    """SOPInstanceUIDs of DICOM result files (non-DICOM files, e.g. a PNG, are skipped)."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    uids = []
    for path in files:
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        except (InvalidDicomError, OSError) as exc:
            log.warning("cannot read the SOPInstanceUID of sent file %s: %s", Path(path).name, exc)
            continue
        if "SOPInstanceUID" in ds:
            uids.append(str(ds.SOPInstanceUID))
    return uids


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Delay before retry number ``attempt`` (1-based): base, 2×base, 4×base … capped."""
    return float(min(max_s, base_s * (2 ** max(0, attempt - 1))))


class Node:
    """Receiver + queue + worker. ``start()`` returns at once; ``stop()`` ends the threads."""

    def __init__(self, local: LocalNode, process: ProcessFn, send: SendFn, audit: AuditLog | None = None,
                 poll_s: float = 0.2, *, send_via: str | None = None) -> None:
        self.local = local
        self.process = process
        self.send = send
        self.send_via = send_via  # "store" / "stow": the protocol written in `sent` records
        self.audit = audit or AuditLog(None)
        self.poll_s = poll_s
        self.incoming = Path(local.work_dir) / "incoming"
        self.results = Path(local.work_dir) / "results"
        self.staged = Path(local.work_dir) / "staged"
        self.queue = JobQueue(Path(local.work_dir) / "queue")
        self._last_seen: dict[str, float] = {}
        self._received: dict[str, int] = {}
        self._senders: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.scp = StorageSCP(local, self.incoming, on_stored=self._on_stored)

    # -- receiving ----------------------------------------------------------------------------
    def _on_stored(self, inst: StoredInstance) -> None:
        with self._lock:
            self._last_seen[inst.study_uid] = time.monotonic()
            self._received[inst.study_uid] = self._received.get(inst.study_uid, 0) + 1
            self._senders.setdefault(inst.study_uid, set()).add(inst.calling_aet)

    def _check_quiet(self) -> None:
        """Close the batch of every study quiet for ``quiet_period_s`` and queue it as a job."""
        now = time.monotonic()
        batches: list[tuple[str, str, Path, int, list[str]]] = []
        with self.scp.store_lock, self._lock:  # no instance is half-written while folders move
            quiet = [s for s, t in self._last_seen.items() if now - t >= self.local.quiet_period_s]
            for study in quiet:
                del self._last_seen[study]
                count = self._received.pop(study, 0)
                senders = sorted(self._senders.pop(study, set()))
                src = self.incoming / study
                if not src.is_dir():
                    continue
                job_id = self.queue.new_id()
                dest = self.staged / job_id / study
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)  # same file system: atomic; new arrivals start a fresh batch
                batches.append((study, job_id, dest, count, senders))
        for study, job_id, dest, count, senders in batches:
            job = self.queue.add(study, dest, job_id=job_id)
            log.info("study complete (quiet for %.1f s): queued job %s", self.local.quiet_period_s, job.id)
            self.audit.record("received", study_uid=study, n_instances=count, job=job.id, calling_aets=senders)

    def _resume_unqueued(self) -> None:
        """After a crash: batches moved to ``staged/`` but not yet queued are queued; studies
        still in ``incoming/`` (crash while receiving) get a fresh quiet period."""
        if self.staged.is_dir():
            kept = {j.id for j in self.queue.jobs("failed") if any(h.startswith(IMAGES_KEPT) for h in j.history)}
            for job_dir in sorted(self.staged.iterdir()):
                state = self.queue.state_of(job_dir.name) if job_dir.is_dir() else None
                if state in ("done", "failed") and job_dir.name not in kept:  # retention rule
                    shutil.rmtree(job_dir, ignore_errors=True)
                    log.info("deleted the staged images of settled job %s", job_dir.name)
                if not job_dir.is_dir() or state is not None:
                    continue
                for study_dir in job_dir.iterdir():
                    if study_dir.is_dir() and is_valid_uid(study_dir.name):
                        job = self.queue.add(study_dir.name, study_dir, job_id=job_dir.name)
                        log.warning("queued job %s received before a restart", job.id)
        if not self.incoming.is_dir():
            return
        for d in self.incoming.iterdir():
            if d.is_dir() and is_valid_uid(d.name):
                with self._lock:
                    self._last_seen.setdefault(d.name, time.monotonic())

    def _inside_work_dir(self, path: Path) -> bool:
        try:
            Path(path).resolve().relative_to(Path(self.local.work_dir).resolve())
        except ValueError:
            return False
        return True

    def _remove_images(self, job: Job) -> None:
        folder = Path(job.folder)
        if not self._inside_work_dir(folder):  # a job file edited by hand must not delete elsewhere
            log.warning("job %s: not deleting images outside the work directory", job.id)
            return
        shutil.rmtree(folder, ignore_errors=True)
        if folder.parent.parent == self.staged:  # staged/<job>/<study>: drop the empty job folder
            try:
                folder.parent.rmdir()
            except OSError:
                pass

    def _discard_failed(self, job: Job) -> None:
        """Retention: a permanently failed job keeps only its record (reason, history); its
        staged images and any results are deleted (the PACS still has the study)."""
        self._remove_images(job)
        shutil.rmtree(self.results / job.id, ignore_errors=True)
        self.queue.note("failed", job, "staged images and results deleted")

    def _node_reason(self, job: Job, exc: BaseException) -> str:
        """The failure reason with advice that fits the node (it cannot take --slices per study)."""
        reason = failure_reason(exc, 1000)
        if isinstance(exc, L3NotFound):
            target = self.local.send_back_to or "PACS"
            reason = (f"{_SLICES_ADVICE.sub('', reason).rstrip(' .;,')}. The node analyses every study with the "
                      f"same options: analyse this one by hand with `sarcoscope pacs analyze {target} "
                      f"--study {job.study_uid} --slices K --send-back`")
        elif refuses_sop_class(exc):
            if "does not accept" not in reason:
                pacs = f"PACS {self.local.send_back_to}" if self.local.send_back_to else "the PACS"
                reason = (f"{pacs} does not accept one of the result object types (SEG, SR, key image): {reason}; "
                          "ask its administrators to accept these SOP classes from our AE title")
            reason += " (not retried: re-route the study once the PACS accepts them)"
        return reason

    # -- working ------------------------------------------------------------------------------
    def run_job(self, job: Job) -> None:
        """Analyse (unless already done in an earlier attempt), send, and settle the job.

        Every job ends in exactly one outcome record: ``sent`` or ``failed`` (``retry`` in
        between). A send that stopped part-way names what it had stored.
        """
        try:
            files = [Path(p) for p in job.result_files]
            if not files or not all(p.is_file() for p in files):
                out = self.results / job.id
                files = list(self.process(Path(job.folder), out))
                job = self.queue.update_running(replace(job, result_files=tuple(map(str, files))))
                self.audit.record("analysed", study_uid=job.study_uid, job=job.id, n_results=len(files))
            stored = self.send(files)
            uids = [str(u) for u in stored] if stored is not None else sop_instance_uids(files)
            self.audit.record("sent", study_uid=job.study_uid, job=job.id, node=self.local.send_back_to,
                              via=self.send_via, sop_instance_uids=uids, files=[p.name for p in files])
            self.queue.complete(replace(job, sent=True))
            self._remove_images(job)
            if not self.local.keep_results:  # the PACS holds them now; no second copy of patient data
                shutil.rmtree(self.results / job.id, ignore_errors=True)
            log.info("job %s done: %d result object(s) sent", job.id, len(files))
        except Exception as exc:  # noqa: BLE001 - every failure settles the job; a bug must not kill the node
            self._settle_failure(job, exc)

    def _settle_failure(self, job: Job, exc: Exception) -> None:
        stored, unconfirmed = stored_before_failure(exc)
        sent: dict[str, object] = {}
        if stored or unconfirmed:  # objects left the machine: say which, and where
            sent = {"node": self.local.send_back_to, "via": self.send_via, "sent_sop_instance_uids": stored,
                    "unconfirmed_sop_instance_uids": unconfirmed}
            log.warning("job %s: the send stopped part-way (%d result object(s) stored, %d unconfirmed)",
                        job.id, len(stored), len(unconfirmed))
        reason = self._node_reason(job, exc)
        site = isinstance(exc, SITE_PROBLEMS)
        retryable = isinstance(exc, RETRYABLE + SITE_PROBLEMS) and not refuses_sop_class(exc)
        if retryable and job.attempts < self.local.max_attempts:
            delay = backoff_s(job.attempts, self.local.retry_base_s, self.local.retry_max_s)
            self.queue.retry_later(job, reason, delay)
            self.audit.record("retry", study_uid=job.study_uid, job=job.id, attempt=job.attempts,
                              delay_s=delay, reason=reason, **sent)
            log.warning("job %s attempt %d failed (%s); retrying in %.0f s", job.id, job.attempts, reason, delay)
            return
        known = isinstance(exc, SarcoscopeError)
        if not known:
            reason = f"internal error: {type(exc).__name__}: {reason}"
        job = self.queue.fail(job, reason)
        self.audit.record("failed", study_uid=job.study_uid, job=job.id, attempts=job.attempts, reason=reason,
                          error_type=type(exc).__name__, **sent)
        if site:
            self.queue.note("failed", job, f"{IMAGES_KEPT}: the node's set-up failed, not the study; fix the "
                            f"set-up, then analyse the study by hand from {self.staged / job.id} or re-send it")
        else:
            self._discard_failed(job)
        if not known:
            log.error("job %s: internal error", job.id, exc_info=exc)  # a bug: keep the traceback
        elif retryable:
            log.error("job %s failed after %d attempts: %s", job.id, job.attempts, reason)
        else:
            log.error("job %s failed: %s", job.id, reason)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._check_quiet()
                job = self.queue.claim()
                if job is not None:
                    self.run_job(job)
                    continue
            except Exception:  # noqa: BLE001 - keep the node alive, say why
                log.exception("node loop error")
            self._stop.wait(self.poll_s)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "Node":
        for job in self.queue.recover():
            log.warning("resuming job %s interrupted by a restart", job.id)
            self.audit.record("resumed", study_uid=job.study_uid, job=job.id)
        self._resume_unqueued()
        self.scp.start()
        self.audit.record("node-start", ae_title=self.local.ae_title, port=self.scp.port)
        t = threading.Thread(target=self._loop, name="sarcoscope-node", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.scp.stop()
        for t in self._threads:
            t.join(timeout=30)
        self._threads.clear()

    def wait_idle(self, timeout_s: float) -> bool:
        """True once nothing is receiving, pending or running (tests, `--exit-when-idle`)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                receiving = bool(self._last_seen)
            if not receiving and not self.queue.jobs("pending") and not self.queue.jobs("running"):
                return True
            time.sleep(0.1)
        return False
