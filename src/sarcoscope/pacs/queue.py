"""A persistent on-disk job queue: one JSON file per job, moved between state folders.

``pending/`` → ``running/`` → ``done/`` or ``failed/``. Every change is a write to a temporary
file plus ``os.replace`` (atomic on POSIX and Windows), so a crash at any moment leaves each
job in exactly one state. ``recover()`` at start-up puts jobs found in ``running/`` (the process
died mid-job) back into ``pending/``: no job is lost, and re-running is safe because results
carry deterministic UIDs (a PACS keeps one copy).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from sarcoscope.pacs.config import redact_url
from sarcoscope.pacs.uids import check_uid

STATES = ("pending", "running", "done", "failed")


@dataclass(frozen=True)
class Job:
    id: str
    study_uid: str
    folder: str  # where the received images are
    created: float
    attempts: int = 0
    not_before: float = 0.0
    last_error: str = ""
    result_files: tuple[str, ...] = ()
    sent: bool = False
    history: tuple[str, ...] = field(default_factory=tuple)


class JobQueue:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for s in STATES:
            (self.root / s).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    # -- storage ------------------------------------------------------------------------------
    def _path(self, state: str, job_id: str) -> Path:
        return self.root / state / f"{job_id}.json"

    def _write(self, state: str, job: Job) -> None:
        path = self._path(state, job.id)
        tmp = path.with_name(path.name + ".tmp")
        data = asdict(job)
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _read(self, path: Path) -> Job:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["result_files"] = tuple(data.get("result_files", ()))
        data["history"] = tuple(data.get("history", ()))
        return Job(**data)

    def _move(self, job: Job, src: str, dst: str) -> Job:
        self._write(dst, job)
        self._path(src, job.id).unlink(missing_ok=True)
        return job

    def jobs(self, state: str) -> list[Job]:
        return sorted((self._read(p) for p in (self.root / state).glob("*.json")), key=lambda j: j.created)

    # -- operations ---------------------------------------------------------------------------
    @staticmethod
    def new_id() -> str:
        """A fresh job id (time-ordered, unique; safe as a file and folder name)."""
        return f"{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}"

    def known(self, job_id: str) -> bool:
        """True when a job with this id exists in any state."""
        return self.state_of(job_id) is not None

    def state_of(self, job_id: str) -> str | None:
        """The state folder holding job ``job_id`` (None when there is no such job)."""
        return next((s for s in STATES if self._path(s, job_id).exists()), None)

    def add(self, study_uid: str, folder: Path, job_id: str | None = None) -> Job:
        """Queue the images in ``folder``; a folder already pending or running is not queued twice."""
        check_uid(study_uid, "study UID")
        with self._lock:
            for job in self.jobs("pending") + self.jobs("running"):
                if job.folder == str(folder) or (job_id is not None and job.id == job_id):
                    return job
            job = Job(id=job_id or self.new_id(), study_uid=study_uid,
                      folder=str(folder), created=time.time(), history=("queued",))
            self._write("pending", job)
            return job

    def claim(self, now: float | None = None) -> Job | None:
        """Move the oldest due pending job to running and return it."""
        now = time.time() if now is None else now
        with self._lock:
            for job in self.jobs("pending"):
                if job.not_before <= now:
                    job = replace(job, attempts=job.attempts + 1, history=job.history + (f"start {job.attempts + 1}",))
                    return self._move(job, "pending", "running")
        return None

    def update_running(self, job: Job) -> Job:
        with self._lock:
            self._write("running", job)
        return job

    def note(self, state: str, job: Job, entry: str) -> Job:
        """Append ``entry`` to the history of a job resting in ``state`` (e.g. images deleted)."""
        with self._lock:
            job = replace(job, history=job.history + (redact_url(entry),))
            self._write(state, job)
            return job

    def complete(self, job: Job) -> Job:
        with self._lock:
            return self._move(replace(job, history=job.history + ("done",)), "running", "done")

    def retry_later(self, job: Job, error: str, delay_s: float) -> Job:
        error = redact_url(error)  # job files must not keep DICOMweb credentials
        with self._lock:
            job = replace(job, last_error=error, not_before=time.time() + delay_s,
                          history=job.history + (f"retry in {delay_s:.0f}s: {error[:200]}",))
            return self._move(job, "running", "pending")

    def fail(self, job: Job, error: str) -> Job:
        error = redact_url(error)
        with self._lock:
            return self._move(replace(job, last_error=error, history=job.history + (f"failed: {error[:200]}",)),
                              "running", "failed")

    def recover(self) -> list[Job]:
        """After a crash: jobs left in running/ go back to pending/ (due now)."""
        with self._lock:
            back = []
            for job in self.jobs("running"):
                job = replace(job, not_before=0.0, history=job.history + ("recovered after restart",))
                back.append(self._move(job, "running", "pending"))
            for tmp in self.root.glob("*/*.tmp"):
                tmp.unlink(missing_ok=True)
            return back
