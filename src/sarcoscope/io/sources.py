"""Where DICOM bytes live: plain files, members of a zip archive, files listed by a DICOMDIR.

A ``SourceRef`` names one file (``path``) or one zip member (``path`` + ``member``). Zip
members are read into memory with :mod:`zipfile` (no POSIX tools, works on Windows);
``Opener`` keeps each archive open for the duration of one pass so a 1000-member zip is not
re-opened per slice.
"""

from __future__ import annotations

import io
import logging
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sarcoscope.errors import InputError

logger = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


@dataclass(frozen=True, order=True)
class SourceRef:
    """One DICOM file on disk, or one member of a zip archive."""

    path: Path
    member: str | None = None

    @property
    def name(self) -> str:
        """Human-readable location for messages (``archive.zip!dir/file.dcm`` for members)."""
        return f"{self.path}!{self.member}" if self.member is not None else str(self.path)


class Opener:
    """Opens sources; keeps zip archives open until ``close`` (use as a context manager)."""

    def __init__(self) -> None:
        self._zips: dict[Path, zipfile.ZipFile] = {}

    def __enter__(self) -> Opener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for zf in self._zips.values():
            zf.close()
        self._zips.clear()

    def _zip(self, path: Path) -> zipfile.ZipFile:
        zf = self._zips.get(path)
        if zf is None:
            try:
                zf = zipfile.ZipFile(path)
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                raise InputError(
                    f"{path}: cannot open the zip archive ({exc}); it is damaged or truncated — "
                    "re-create or re-download it"
                ) from exc
            self._zips[path] = zf
        return zf

    def open(self, ref: SourceRef) -> BinaryIO:
        """A readable, seekable binary stream of the source."""
        if ref.member is None:
            return open(ref.path, "rb")
        try:
            data = self._zip(ref.path).read(ref.member)
        except (OSError, zipfile.BadZipFile, KeyError, EOFError, zlib.error) as exc:
            raise InputError(
                f"{ref.name}: cannot read this member of the zip archive ({exc}); "
                "the archive is damaged or truncated — re-create or re-download it"
            ) from exc
        return io.BytesIO(data)

    def size(self, ref: SourceRef) -> int:
        if ref.member is None:
            return ref.path.stat().st_size
        return self._zip(ref.path).getinfo(ref.member).file_size


def is_zip(path: Path) -> bool:
    return path.is_file() and zipfile.is_zipfile(path)


#: Signature of a zip local file header: every zip archive with members starts with it.
_ZIP_LOCAL_HEADER = b"PK\x03\x04"


def looks_like_broken_zip(path: Path) -> bool:
    """A file that starts like a zip archive but has no readable central directory.

    ``zipfile`` finds members through the central directory at the *end* of the archive, so
    an archive cut short (interrupted download or copy) is not recognised as a zip at all and
    would otherwise be reported as "not DICOM".
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if head[128:132] == b"DICM":  # a DICOM file whose free-form preamble happens to start "PK"
        return False
    return head[:4] == _ZIP_LOCAL_HEADER and not zipfile.is_zipfile(path)


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (links and ``..`` included; for paths that do not exist
    yet, whether they resolve alike): output paths are checked against inputs with it."""
    try:
        if a.exists() and b.exists():
            return a.samefile(b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def list_sources(path: Path) -> list[SourceRef]:
    """Every candidate file under ``path`` (folder recursively, zip members, DICOMDIR entries).

    Nothing is parsed here except a DICOMDIR; the header pass decides what is DICOM.
    """
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if not files:
            raise InputError(f"{path}: the folder is empty — point sarcoscope at a folder of DICOM files")
        return [SourceRef(p) for p in files]
    if is_zip(path):
        try:
            with zipfile.ZipFile(path) as zf:
                members = sorted(
                    i.filename for i in zf.infolist() if not i.is_dir() and i.file_size > 0
                )
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise InputError(
                f"{path}: cannot read the zip archive ({exc}); it is damaged or truncated — "
                "re-create or re-download it"
            ) from exc
        if not members:
            raise InputError(f"{path}: the zip archive holds no files")
        return [SourceRef(path, m) for m in members]
    if path.name.upper() == "DICOMDIR":
        return dicomdir_sources(path)
    if looks_like_broken_zip(path):
        raise InputError(
            f"{path}: the zip archive is damaged or truncated (it starts like a zip but its "
            "table of contents at the end is missing, e.g. after an interrupted download or copy); "
            "re-create or re-download the archive"
        )
    return [SourceRef(path)]


def dicomdir_sources(path: Path) -> list[SourceRef]:
    """The image files a DICOMDIR references (paths relative to the DICOMDIR's folder)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=True)
        records = ds.DirectoryRecordSequence
    except Exception as exc:  # pydicom raises many types on broken files
        raise InputError(f"{path}: cannot read this DICOMDIR ({exc}); point at the folder instead") from exc
    root = path.parent
    refs: list[SourceRef] = []
    for rec in records:
        file_id = rec.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        candidate = root.joinpath(*parts)
        if not candidate.exists():
            # Media written on case-insensitive systems: try a case-insensitive match.
            candidate = _case_insensitive(root, parts) or candidate
        refs.append(SourceRef(candidate))
    if not refs:
        raise InputError(f"{path}: the DICOMDIR references no image files")
    missing = [r for r in refs if not r.path.exists()]
    if missing:
        raise InputError(
            f"{path}: the DICOMDIR references {len(missing)} file(s) that do not exist, e.g. "
            f"{missing[0].path}; copy the whole medium, not only the DICOMDIR"
        )
    return sorted(set(refs))


def _case_insensitive(root: Path, parts: list[str]) -> Path | None:
    current = root
    for part in parts:
        if not current.is_dir():
            return None
        match = next((c for c in current.iterdir() if c.name.lower() == part.lower()), None)
        if match is None:
            return None
        current = match
    return current


def iter_open(refs: list[SourceRef]) -> Iterator[tuple[SourceRef, BinaryIO]]:
    """Open each source in turn (one zip handle per archive)."""
    with Opener() as opener:
        for ref in refs:
            with opener.open(ref) as fh:
                yield ref, fh


@contextmanager
def truncation_guard(what: object) -> Iterator[None]:
    """Turn an ``EOFError`` escaping a reader into an ``InputError`` naming the input.

    Decompressors (gzip, zlib, zip) raise ``EOFError`` when a file ends early; uncaught it
    would reach the CLI framework, which reports it as a user abort (exit 130) without naming
    the file. The specific readers already convert the cases they know; this is the last net.
    """
    try:
        yield
    except EOFError as exc:
        raise InputError(
            f"{what}: a file of this input ends unexpectedly ({exc}); it is truncated or damaged — "
            "re-export or re-download it"
        ) from exc
