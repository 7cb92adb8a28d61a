"""``analyze()``: the one orchestrator — read → choose slices → segment → measure.

Pure composition of the stages: no printing, no files written (exporters and the CLI do that),
and every stage timed so the CLI, the benchmark and ``result.json`` report where time goes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from sarcoscope.errors import InputError, ModelError
from sarcoscope.segment.base import Segmenter
from sarcoscope.settings import AnalysisSettings, resolve_slices
from sarcoscope.types import (
    AnalysisResult,
    CTVolume,
    LabelMap,
    Measurements,
    PatientInfo,
    SegmenterInfo,
    SliceChoice,
)

log = logging.getLogger(__name__)


def analyze(
    source: Path | str | CTVolume,
    settings: AnalysisSettings | None = None,
    *,
    segmenter: Segmenter | None = None,
) -> AnalysisResult:
    """Measure body composition on the chosen slice(s) of one CT series.

    Parameters
    ----------
    source
        A path ``io.read_ct`` understands (DICOM folder/file/zip/DICOMDIR, NIfTI) or an
        already-read ``CTVolume`` (PACS node, tests, benchmarks).
    settings
        What the user asked for; defaults find L3 automatically with the default segmenter.
    segmenter
        An already-built ``Segmenter`` (keeps one ONNX session alive across many studies);
        ``None`` builds the one ``settings`` names.

    Returns
    -------
    AnalysisResult
        ``volume`` carries the *effective* patient info (header overridden by settings);
        ``timings_s`` has ``read``, ``locate``, ``segment``, ``measure`` (seconds).
    """
    settings = settings or AnalysisSettings()
    timings: dict[str, float] = {}
    warnings: list[str] = []

    t0 = time.perf_counter()
    volume = _read(source, settings)
    timings["read"] = time.perf_counter() - t0
    warnings.extend(volume.series.warnings)

    patient = settings.patient(volume.patient)
    warnings.extend(_override_notes(volume.patient, patient, settings))
    if patient != volume.patient:
        volume = dataclasses.replace(volume, patient=patient)  # shares the HU array

    t0 = time.perf_counter()
    choice = choose_slices(volume, settings)
    timings["locate"] = time.perf_counter() - t0
    warnings.extend(choice.warnings)

    t0 = time.perf_counter()
    if segmenter is None:
        segmenter, seg_notes = build_segmenter(settings)
        warnings.extend(seg_notes)
    label_maps = tuple(_segment(volume, k, segmenter) for k in choice.indices)
    timings["segment"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    from sarcoscope.measure import measure_slice

    reference = settings.reference_key
    measurements: tuple[Measurements, ...] = tuple(
        measure_slice(volume.slice_hu(lm.slice_index), lm, patient, reference, z)
        for lm, z in zip(label_maps, choice.z_mm)
    )
    timings["measure"] = time.perf_counter() - t0

    info = SegmenterInfo(
        name=str(segmenter.name), version=str(segmenter.version), sha256=segmenter.sha256
    )
    for note in warnings:
        log.info("%s", note)  # also in result.warnings, which the CLI prints
    return AnalysisResult(
        volume=volume,
        choice=choice,
        label_maps=label_maps,
        measurements=measurements,
        segmenter=info,
        reference=reference,
        timings_s=timings,
        warnings=tuple(dict.fromkeys(warnings)),
    )


def _read(source: Path | str | CTVolume, settings: AnalysisSettings) -> CTVolume:
    if isinstance(source, CTVolume):
        if settings.series_uid and source.series.series_uid != settings.series_uid:
            raise InputError(
                f"--series {settings.series_uid}: the volume given is series "
                f"{source.series.series_uid or '(no UID)'}; pass the folder holding the "
                "requested series instead."
            )
        return source
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder. Check the path and try again.")
    from sarcoscope.io import read_ct

    return read_ct(path, series_uid=settings.series_uid)


def choose_slices(volume: CTVolume, settings: AnalysisSettings) -> SliceChoice:
    """Manual SPEC when given; the only slice of a single-slice input; else find L3."""
    spec = settings.slice_spec
    if spec is not None:
        indices = resolve_slices(spec, volume)
        return SliceChoice(
            indices=indices,
            z_mm=tuple(volume.z_mm(k) for k in indices),
            method="manual",
            definition=f"--slices {spec.text}",
        )
    if volume.n_slices == 1:
        return SliceChoice(
            indices=(0,), z_mm=(volume.z_mm(0),), method="single", definition="single-slice input"
        )
    from sarcoscope.locate import find_l3

    return find_l3(volume, _locate_settings(settings))


def _locate_settings(settings: AnalysisSettings):  # -> locate.LocateSettings | None
    """Build ``locate.LocateSettings`` from our options (None keeps the locator's defaults)."""
    if settings.l3_definition is None and not settings.average_mm:
        return None
    from sarcoscope.locate import LocateSettings

    kwargs: dict[str, object] = {}
    if settings.l3_definition is not None:
        kwargs["definition"] = settings.l3_definition
    if settings.average_mm:
        kwargs["average_mm"] = float(settings.average_mm)
    try:
        return LocateSettings(**kwargs)
    except ValueError as exc:  # the locator validates its own options
        raise InputError(f"L3 options: {exc}") from exc


def default_model_path() -> Path | None:
    """Where the shipped ONNX model is expected, or None when the model stage is not installed."""
    try:
        from sarcoscope.segment import onnx_model
    except ImportError:
        return None
    return Path(onnx_model.default_model_path())


def build_segmenter(settings: AnalysisSettings) -> tuple[Segmenter, list[str]]:
    """The segmenter ``settings`` asks for, and notes to surface when a default was taken.

    Never fakes a model: an explicit ``model`` request (or ``--model PATH``) that cannot be
    honoured raises ``ModelError``; only the *default* falls back to the baseline, with a note
    that ends up in ``result.json`` and on the terminal.
    """
    wanted = settings.segmenter
    if settings.model_path is not None:
        wanted = "model"
    if wanted == "baseline":
        return _baseline(), []
    if wanted == "model":
        path = settings.model_path or default_model_path()
        if path is None:
            raise ModelError(
                "--segmenter model: the trained-model segmenter (sarcoscope.segment.onnx_model) "
                "is not available in this installation; use --segmenter baseline."
            )
        if not Path(path).is_file():
            raise ModelError(
                f"{path}: model file not found. Pass --model PATH to an ONNX model exported by "
                "`sarcoscope train`, or use --segmenter baseline."
            )
        return _onnx(Path(path)), []
    # Default: the trained model when it is shipped, else the baseline — said out loud.
    path = default_model_path()
    if path is not None and path.is_file():
        return _onnx(path), []
    where = str(path) if path is not None else "sarcoscope.segment.onnx_model"
    return _baseline(), [
        f"no trained model found ({where}); segmented with the classical baseline "
        "(--segmenter baseline). Results name the segmenter used."
    ]


def _baseline() -> Segmenter:
    from sarcoscope.segment.baseline import BaselineSegmenter

    return BaselineSegmenter()


def _onnx(path: Path) -> Segmenter:
    from sarcoscope.segment.onnx_model import OnnxSegmenter

    return OnnxSegmenter(path)


def _segment(volume: CTVolume, k: int, segmenter: Segmenter) -> LabelMap:
    hu = volume.slice_hu(k)
    labels = segmenter.segment(hu, volume.pixel_spacing_mm)
    if not isinstance(labels, np.ndarray) or labels.shape != hu.shape:
        raise ModelError(
            f"segmenter {segmenter.name} {segmenter.version} returned "
            f"{getattr(labels, 'shape', type(labels).__name__)} for a {hu.shape} slice; "
            "the model file may be incompatible with this version of sarcoscope."
        )
    if labels.dtype != np.uint8:
        labels = labels.astype(np.uint8)
    return LabelMap(labels=labels, slice_index=int(k), pixel_spacing_mm=volume.pixel_spacing_mm)


def _override_notes(
    header: PatientInfo, effective: PatientInfo, settings: AnalysisSettings
) -> list[str]:
    """Say when an option replaced a value the DICOM header gave (never silently)."""
    notes = []
    if settings.sex is not None and header.sex not in (None, effective.sex):
        notes.append(f"--sex {effective.sex} overrides the header's sex {header.sex}")
    if settings.height_cm is not None and header.height_m is not None and abs(
        header.height_m - effective.height_m  # type: ignore[operator]
    ) > 0.005:
        notes.append(
            f"--height-cm {settings.height_cm:g} overrides the header's height "
            f"{header.height_m * 100:.0f} cm"
        )
    if settings.weight_kg is not None and header.weight_kg is not None and abs(
        header.weight_kg - effective.weight_kg  # type: ignore[operator]
    ) > 0.05:
        notes.append(
            f"--weight-kg {settings.weight_kg:g} overrides the header's weight "
            f"{header.weight_kg:g} kg"
        )
    return notes
