"""Append-only JSON-lines audit log: who requested what, what was retrieved, what was sent where.

One line per event, flushed and fsynced, never rewritten. Patient names and IDs are never
written; accession numbers and patient IDs used as query keys appear only as a keyed digest
(HMAC-SHA256 under a per-site secret, ``AuditLog.digest``): stable on one site, so hospital IT
can match events of the same accession, but not reversible without the site's key (an unkeyed
hash of a 7-digit patient ID is reversed by brute force in seconds).

The key is 32 random bytes (``os.urandom``) written once, owner-only where the OS allows, to
``audit.key`` in the work directory (``AuditLog.for_local``) or to an explicitly given file. A
lost key only means new digests stop matching old ones; nothing else depends on it.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from sarcoscope.errors import ExportError
from sarcoscope.pacs.config import redact_url

if TYPE_CHECKING:
    from sarcoscope.pacs.config import LocalNode

log = logging.getLogger(__name__)

#: Keys that must never appear in an audit record (checked on every write).
FORBIDDEN_KEYS = frozenset({"patient_name", "patient_id", "PatientName", "PatientID", "accession"})

#: File name of the per-site digest key inside the work directory.
KEY_FILE_NAME = "audit.key"
KEY_BYTES = 32
#: Hex digits of a digest kept in the log (64 bits: no accidental collisions among a hospital's IDs).
DIGEST_HEX = 16


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


def load_or_create_key(path: Path) -> bytes:
    """The site's digest key from ``path`` (hex text), created once with ``os.urandom`` if absent.

    Created with ``O_EXCL`` and mode 0600 (owner only on POSIX; on Windows the folder's ACLs
    apply), so two processes starting together agree on one key.
    """
    path = Path(path)
    if not path.exists():
        text = os.urandom(KEY_BYTES).hex() + "\n"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        except FileExistsError:
            pass  # another process created it first: use theirs
        except OSError as exc:
            raise ExportError(f"cannot create the audit key {path}: {exc}; fix permissions of that folder") from exc
        else:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            log.info("created a new audit digest key %s (back it up with the work directory)", path)
    try:
        raw = path.read_text(encoding="ascii").strip()
        for _ in range(40):  # another process may have created the file and not yet written it
            if raw:
                break
            time.sleep(0.05)
            raw = path.read_text(encoding="ascii").strip()
        key = bytes.fromhex(raw)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ExportError(
            f"audit key {path} is unreadable or not hex ({exc}); restore it from backup, or delete it to "
            "start a new key (digests in the log then stop matching older ones)"
        ) from exc
    if len(key) < 16:
        raise ExportError(f"audit key {path} holds {len(key)} bytes, need at least 16; restore or delete it")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("audit key %s is readable by other users; chmod 600 it", path)
    return key


class AuditLog:
    """Thread-safe appender. ``path=None`` disables auditing (library use without a config).

    ``key_file``: the per-site digest key (default ``audit.key`` beside the log; use
    ``AuditLog.for_local`` to keep it in the work directory). ``key``: the key itself (tests,
    or a site that manages it elsewhere).
    """

    def __init__(self, path: Path | None, key_file: Path | None = None, *, key: bytes | None = None) -> None:
        self.path = Path(path) if path is not None else None
        if key_file is None and self.path is not None:
            key_file = self.path.with_name(KEY_FILE_NAME)
        self.key_file = Path(key_file) if key_file is not None else None
        self._key = key
        self._lock = threading.Lock()
        try:
            self._user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no login name in some containers/services
            self._user = f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"
        self._host = socket.gethostname()

    @classmethod
    def for_local(cls, local: "LocalNode") -> "AuditLog":
        """The site's audit log (``[local] audit_log``) with its key in ``work_dir/audit.key``."""
        return cls(local.audit_path, Path(local.work_dir) / KEY_FILE_NAME)

    def __repr__(self) -> str:  # never show the key
        return f"AuditLog({self.path!s}, key_file={self.key_file!s})"

    # -- digests ------------------------------------------------------------------------------
    def _site_key(self) -> bytes:
        with self._lock:
            if self._key is None:
                if self.key_file is None:
                    raise ExportError("no audit key configured: give AuditLog a key_file or a log path")
                self._key = load_or_create_key(self.key_file)
            return self._key

    def digest(self, value: str) -> str:
        """Keyed digest of an identifier (accession number, patient ID); "" for an empty value:
        HMAC-SHA256 of its UTF-8 bytes under the site key, 16 hex digits."""
        if not value:
            return ""
        return hmac.new(self._site_key(), value.encode("utf-8"), hashlib.sha256).hexdigest()[:DIGEST_HEX]

    # -- records ------------------------------------------------------------------------------
    def record(self, event: str, **fields: Any) -> None:
        """Append one event. Raises ExportError if the log cannot be written (an audit gap is
        not allowed to pass silently). URLs lose any ``user:password@`` part."""
        if self.path is None:
            return
        bad = FORBIDDEN_KEYS & set(fields)
        if bad:
            raise ValueError(f"audit record {event!r} carries forbidden identifying keys {sorted(bad)}")
        fields = _scrub(fields)
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

    @contextmanager
    def request(self, **fields: Any) -> Iterator["AuditRequest"]:
        """Record a ``request`` and guarantee it one outcome event.

        The body calls ``req.outcome("sent", ...)`` (or ``"analysed"``, ``"not-found"`` …); if it
        raises first, a ``failed`` event with the reason is written and the error propagates; if
        it ends without naming an outcome, ``completed`` is written.
        """
        self.record("request", **fields)
        req = AuditRequest(self, {k: fields[k] for k in ("node", "study_uid") if k in fields})
        try:
            yield req
        except BaseException as exc:
            if not req.done:
                req.outcome("failed", reason=failure_reason(exc), error_type=type(exc).__name__)
            raise
        if not req.done:
            req.outcome("completed")


class AuditRequest:
    """Handle of one audited request (see ``AuditLog.request``)."""

    def __init__(self, audit: AuditLog, context: dict[str, Any]) -> None:
        self._audit = audit
        self.context = dict(context)
        self.done = False

    def outcome(self, event: str, **fields: Any) -> None:
        """Write the request's outcome event (once)."""
        if self.done:
            raise RuntimeError(f"audit request already has its outcome; refusing a second one ({event!r})")
        self._audit.record(event, **{**self.context, **fields})
        self.done = True


def failure_reason(exc: BaseException, limit: int = 500) -> str:
    """One line for the log: the error's message (its type when it has none), cut to ``limit``."""
    text = " ".join(str(exc).split()) or "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return redact_url(text)[:limit]


def read_audit(path: Path) -> list[dict[str, Any]]:
    """All records of an audit log (for tests and `sarcoscope` tooling)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
