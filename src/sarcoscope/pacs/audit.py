"""Append-only JSON-lines audit log: who requested what, what was retrieved, what was sent where.

One line per event, flushed and fsynced, never rewritten. Patient names and IDs are never
written; accession numbers and patient IDs used as query keys appear only as a short hash
(``uids.short_hash``) so an auditor can match a request without the log exposing them.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sarcoscope.errors import ExportError

log = logging.getLogger(__name__)

#: Keys that must never appear in an audit record (checked on every write).
FORBIDDEN_KEYS = frozenset({"patient_name", "patient_id", "PatientName", "PatientID", "accession"})


class AuditLog:
    """Thread-safe appender. ``path=None`` disables auditing (library use without a config)."""

    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        try:
            self._user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no login name in some containers/services
            self._user = f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"
        self._host = socket.gethostname()

    def record(self, event: str, **fields: Any) -> None:
        """Append one event. Raises ExportError if the log cannot be written (an audit gap is
        not allowed to pass silently)."""
        if self.path is None:
            return
        bad = FORBIDDEN_KEYS & set(fields)
        if bad:
            raise ValueError(f"audit record {event!r} carries forbidden identifying keys {sorted(bad)}")
        entry = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "event": event,
            "user": self._user,
            "host": self._host,
            "pid": os.getpid(),
            **fields,
        }
        line = json.dumps(entry, sort_keys=False, default=str) + "\n"
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise ExportError(
                    f"cannot append to audit log {self.path}: {exc}; fix permissions or set [local] audit_log"
                ) from exc


def read_audit(path: Path) -> list[dict[str, Any]]:
    """All records of an audit log (for tests and `sarcoscope` tooling)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
