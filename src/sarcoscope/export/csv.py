"""One CSV row per analysed slice, appended to a file (researchers batch-process many scans).

The header is fixed for a schema version; appending to a file whose header differs raises
``ExportError`` instead of silently mixing columns. Unknown values are empty cells, never 0.
No patient names or IDs: the ``input`` column holds the path the user passed, plus UIDs.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sarcoscope import __version__
from sarcoscope.errors import ExportError
from sarcoscope.tissues import TISSUE_KEYS
from sarcoscope.types import AnalysisResult

COLUMNS: tuple[str, ...] = (
    "input",
    "study_instance_uid",
    "series_instance_uid",
    "slice_index",
    "z_mm",
    "selection_method",
    "selection_definition",
    "l3_confidence",
    *(f"{key}_{what}" for key in TISSUE_KEYS for what in ("area_cm2", "mean_hu")),
    "muscle_low_attenuation_cm2",
    "muscle_normal_attenuation_cm2",
    "smi_cm2_m2",
    "vat_sat_ratio",
    "sex",
    "height_m",
    "weight_kg",
    "bmi_kg_m2",
    "reference",
    "sarcopenia",
    "myosteatosis",
    "low_muscle_area",
    "segmenter",
    "segmenter_version",
    "sarcoscope_version",
    "warnings",
)


def _cell(value: object, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{round(value, digits):g}"
    return str(value)


def result_rows(result: AnalysisResult, input_label: str) -> list[dict[str, str]]:
    """The CSV rows of one result, as ordered dicts of strings."""
    volume, choice = result.volume, result.choice
    patient = volume.patient
    rows = []
    for m in result.measurements:
        flags = {f.name: f.positive for f in m.flags}
        row: dict[str, object] = {
            "input": input_label,
            "study_instance_uid": volume.series.study_uid,
            "series_instance_uid": volume.series.series_uid,
            "slice_index": m.slice_index,
            "z_mm": m.z_mm,
            "selection_method": choice.method,
            "selection_definition": choice.definition,
            "l3_confidence": choice.confidence,
            "muscle_low_attenuation_cm2": m.muscle_low_attenuation_cm2,
            "muscle_normal_attenuation_cm2": m.muscle_normal_attenuation_cm2,
            "smi_cm2_m2": m.smi_cm2_m2,
            "vat_sat_ratio": m.vat_sat_ratio,
            "sex": patient.sex,
            "height_m": patient.height_m,
            "weight_kg": patient.weight_kg,
            "bmi_kg_m2": patient.bmi,
            "reference": result.reference,
            "sarcopenia": flags.get("sarcopenia"),
            "myosteatosis": flags.get("myosteatosis"),
            "low_muscle_area": flags.get("low_muscle_area"),
            "segmenter": result.segmenter.name,
            "segmenter_version": result.segmenter.version,
            "sarcoscope_version": __version__,
            "warnings": " | ".join((*result.warnings, *m.warnings)),
        }
        for key in TISSUE_KEYS:
            t = m.tissues.get(key)
            row[f"{key}_area_cm2"] = t.area_cm2 if t else None
            row[f"{key}_mean_hu"] = t.mean_hu if t else None
        rows.append({c: _cell(row[c]) for c in COLUMNS})
    return rows


#: A lock file older than this is left by a run that died while writing: taken over.
STALE_LOCK_S = 300.0


@contextmanager
def csv_lock(path: Path, timeout_s: float = 120.0) -> Iterator[None]:
    """Hold ``<name>.lock`` beside the CSV while a run copies, appends to and replaces it.

    A batch run with several workers appending to one CSV would otherwise have each worker
    replace the file with its own copy, and the rows of the others would be lost without a
    word. An exclusively created file is the lock (no extra dependency, works on Windows).
    """
    lock = Path(path).with_name(Path(path).name + ".lock")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            break
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
                    lock.unlink(missing_ok=True)
                    continue
            except FileNotFoundError:
                continue
            if time.monotonic() > deadline:
                raise ExportError(
                    f"--csv {path}: another sarcoscope run has been writing it for over {timeout_s:.0f} s "
                    f"({lock.name} exists); if no run is writing, delete {lock}"
                ) from None
            time.sleep(0.05)
        except OSError as exc:
            raise ExportError(f"--csv {path}: cannot create {lock.name} ({exc.strerror or exc}).") from exc
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def check_existing_csv(path: Path) -> bool:
    """True when ``path`` holds rows to append to (our header); False when new or empty.

    A byte-order mark (a CSV re-saved by Excel as "CSV UTF-8") is accepted; any other header
    or a file that is not UTF-8 text raises ``ExportError`` naming ``path``.
    """
    path = Path(path)
    try:
        if not (path.is_file() and path.stat().st_size > 0):
            return False
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except UnicodeDecodeError as exc:
        raise ExportError(
            f"--csv {path}: the file is not UTF-8 text (byte {exc.start} cannot be decoded), so it was "
            "not written by sarcoscope's --csv (a spreadsheet saved in another encoding, or not a CSV). "
            "Write to a new file."
        ) from exc
    except OSError as exc:
        raise ExportError(f"--csv {path}: cannot read the existing CSV ({exc.strerror or exc}).") from exc
    if tuple(header) != COLUMNS:
        first = next((i for i, (a, b) in enumerate(zip(header, COLUMNS)) if a != b), min(len(header), len(COLUMNS)))
        found = repr(header[first]) if first < len(header) else "nothing"
        wanted = repr(COLUMNS[first]) if first < len(COLUMNS) else "no further column"
        raise ExportError(
            f"--csv {path}: the existing CSV has other columns (column {first + 1} is {found}, "
            f"expected {wanted}); it was not written by this version of sarcoscope's --csv. "
            "Write to a new file."
        )
    return True


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) in (b"\n", b"\r")


def append_csv(result: AnalysisResult, path: Path, input_label: str) -> Path:
    """Append one row per analysed slice; write the header first if the file is new/empty."""
    path = Path(path)
    exists = check_existing_csv(path)
    try:
        buf = io.StringIO()
        if exists and not _ends_with_newline(path):
            buf.write("\n")  # a spreadsheet saved the last row without one: never glue rows together
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        if not exists:
            writer.writeheader()
        writer.writerows(result_rows(result, input_label))
        with path.open("a", newline="", encoding="utf-8") as fh:
            fh.write(buf.getvalue())  # one write: a batch never leaves half a row
    except OSError as exc:
        raise ExportError(f"{path}: cannot write the CSV ({exc.strerror or exc}).") from exc
    return path
