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
from sarcoscope.segment.plausibility import check_hounsfield
from sarcoscope.settings import AnalysisSettings, SliceSpec, resolve_slices
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

    Reading only what is needed (DICOM paths): with ``--slices`` only the named slices are
    decoded; automatic L3 on a thin-slice series (< ~1.5 mm) locates on every s-th slice
    (``LOCATE_SPACING_MM``) and then decodes only the chosen slice(s). ``volume`` is then a
    partial read that still counts indices along the full stack (``CTVolume.stack_indices``),
    and ``overview`` holds the strided volume for spine.png.
    """
    settings = settings or AnalysisSettings()
    timings: dict[str, float] = {}
    warnings: list[str] = []

    t0 = time.perf_counter()
    overview: CTVolume | None = None
    fast = _open_for_strided_locate(source, settings)
    if fast is not None:
        volume, overview, choice, timings = _read_and_locate_strided(*fast, settings, t0)
    else:
        volume = _read(source, settings)
        timings["read"] = time.perf_counter() - t0
        check_hounsfield(volume.hu, _where(source))
        _check_orientation(volume, _where(source))
    warnings.extend(volume.series.warnings)

    patient = settings.patient(volume.patient)
    warnings.extend(_override_notes(volume.patient, patient, settings))
    if patient != volume.patient:
        volume = dataclasses.replace(volume, patient=patient)  # shares the HU array

    if fast is None:
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
        name=str(segmenter.name), version=str(segmenter.version), sha256=segmenter.sha256,
        post_steps=tuple(str(s) for s in getattr(segmenter, "post_steps", ())),
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
        overview=overview,
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
    spec = settings.slice_spec
    if spec is not None and spec.kind != "all" and _is_dicom_input(path):
        return _read_given_slices(path, spec, settings)
    from sarcoscope.io import read_ct

    return read_ct(path, series_uid=settings.series_uid)


#: The L3 finder works on ~2 mm in z (discs, body heights, processes); thinner DICOM series
#: are located on every s-th slice so that spacing is about this, then only the chosen
#: slice(s) are decoded at full resolution.
LOCATE_SPACING_MM = 2.0
#: Definitions whose level is a z the finder reports (body centre, inferior endplate);
#: "first slice showing both transverse processes" needs every slice and keeps a full read.
_STRIDABLE_DEFINITIONS = ("mid-L3", "L3-inferior-endplate")


def locate_stride(spacing_mm: float, n_slices: int) -> int:
    """Every how many slices the L3 finder needs to see (1 = all) for a slice spacing."""
    if n_slices < 20 or not spacing_mm > 0:
        return 1
    return max(1, int(round(LOCATE_SPACING_MM / spacing_mm)))


def _open_for_strided_locate(source: Path | str | CTVolume, settings: AnalysisSettings):
    """(opened series, stride) when automatic L3 on a thin-slice DICOM series can read a
    strided subset; None when the ordinary full read applies."""
    if isinstance(source, CTVolume) or settings.slice_spec is not None:
        return None
    definition = settings.l3_definition or "mid-L3"
    if definition not in _STRIDABLE_DEFINITIONS:
        return None
    path = Path(source)
    if not path.exists() or not _is_dicom_input(path):
        return None
    from sarcoscope.io import open_dicom

    opened = open_dicom(path, settings.series_uid)
    plan = opened.plan
    spacing = float(np.linalg.norm(plan.affine[:3, 2]))
    stride = locate_stride(spacing, plan.n_slices)
    return opened, stride


def _read_and_locate_strided(opened, stride: int, settings: AnalysisSettings, t0: float):
    """Find L3 on every ``stride``-th slice, then decode only the chosen slice(s).

    Returns (partial volume with full-stack indices, the strided overview, choice counted
    along the full stack, timings). The chosen level is the z the finder reports for L3 (body
    centre or inferior endplate), placed on the nearest slice of the full stack; averaging
    bands are taken on the full stack as the finder takes them. If L3 is not found on the
    strided volume the whole series is read and located as before, so the message (and a
    borderline decision) is the full-resolution one.
    """
    timings: dict[str, float] = {}
    plan = opened.plan
    n = plan.n_slices
    if stride <= 1:
        volume = opened.load()
        timings["read"] = time.perf_counter() - t0
        check_hounsfield(volume.hu, str(opened.path))
        t1 = time.perf_counter()
        choice = choose_slices(volume, settings)
        timings["locate"] = time.perf_counter() - t1
        return volume, None, choice, timings
    from sarcoscope.errors import L3NotFound
    from sarcoscope.locate import find_l3

    first = (n - 1) % stride // 2  # centre the subset: at most stride//2 slices lost per end
    overview = opened.load(range(first, n, stride))
    check_hounsfield(overview.hu, str(opened.path))
    timings["read"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    try:
        coarse = find_l3(overview, _locate_settings(settings))
    except L3NotFound:
        log.info("L3 not found on every %d. slice: locating on the whole series", stride)
        t2 = time.perf_counter()
        volume = opened.load()
        timings["read"] += time.perf_counter() - t2
        t3 = time.perf_counter()
        choice = choose_slices(volume, settings)  # raises with the full-resolution message
        timings["locate"] = time.perf_counter() - t1 - (t3 - t2)
        return volume, None, choice, timings
    choice = _coarse_to_stack(coarse, plan, settings, first, stride)
    timings["locate"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    volume = opened.load_slices(choice.indices)
    timings["read"] += time.perf_counter() - t2
    log.info(
        "L3 located on every %d. slice (%.1f mm), slice(s) %s decoded at full resolution",
        stride, stride * float(np.linalg.norm(plan.affine[:3, 2])), list(choice.indices),
    )
    return volume, overview, choice, timings


def _coarse_to_stack(coarse: SliceChoice, plan, settings: AnalysisSettings, first: int, stride: int) -> SliceChoice:
    """Place the finder's answer on the strided volume onto the full stack."""
    n = plan.n_slices
    z_all = np.array([plan.z_mm(k) for k in range(n)])
    definition = settings.l3_definition or "mid-L3"
    l3 = next((v for v in coarse.vertebrae if v.name == "L3"), None)
    target = None
    if l3 is not None:
        target = l3.z_bottom_mm if definition == "L3-inferior-endplate" else l3.z_mm
    if target is None:  # no level reported: keep the coarse slice itself
        centre = sorted(coarse.indices)[len(coarse.indices) // 2]
        k0 = first + stride * int(centre)
    else:
        k0 = int(np.argmin(np.abs(z_all - target)))
    z0 = float(z_all[k0])
    if settings.average_mm:
        ks = [k for k in range(n) if abs(z_all[k] - z0) <= float(settings.average_mm) + 1e-6]
    else:
        ks = [k0]
    return dataclasses.replace(
        coarse, indices=tuple(int(k) for k in ks), z_mm=tuple(float(z_all[k]) for k in ks)
    )


def _is_dicom_input(path: Path) -> bool:
    from sarcoscope.io.sources import is_nifti

    return not (path.is_file() and is_nifti(path))


def _read_given_slices(path: Path, spec: SliceSpec, settings: AnalysisSettings) -> CTVolume:
    """``--slices`` on DICOM: headers of the whole series, pixels of the named slices only.

    The partial volume keeps full-stack indices, affine and source grid (``CTVolume.
    stack_indices``), so every output is the one a full read gives; the range check and its
    message are those of ``settings.resolve_slices``.
    """
    from sarcoscope.io import open_dicom

    opened = open_dicom(path, settings.series_uid)
    wanted = spec.input_indices(opened.n_slices)
    return opened.load_slices(wanted)


def choose_slices(volume: CTVolume, settings: AnalysisSettings) -> SliceChoice:
    """Manual SPEC when given; the only slice of a single-slice input; else find L3."""
    spec = settings.slice_spec
    if spec is not None:
        indices = resolve_slices(spec, volume)
        missing = [k for k in indices if volume.loaded_position(k) is None]
        if missing:
            raise InputError(
                f"--slices {spec.text}: slice {missing[0]} was not decoded in this partial read "
                f"of the series (decoded: {list(volume.stack_indices[:8])}); pass the series "
                "path or a fully read volume."
            )
        return SliceChoice(
            indices=indices,
            z_mm=tuple(volume.z_mm(k) for k in indices),
            method="manual",
            definition=f"--slices {spec.text}",
            warnings=(f"slices chosen with --slices {spec.text}: their vertebral level is not checked; the "
                      "cut-off flags assume they are at L3",),
        )
    if volume.is_partial:
        raise InputError(
            "this volume holds only some decoded slices of its series (a partial read); the "
            "L3 finder needs the whole series — give --slices or pass a fully read volume."
        )
    if volume.n_slices == 1:
        return SliceChoice(
            indices=(0,), z_mm=(volume.z_mm(0),), method="single", definition="single-slice input",
            warnings=("single-slice input: its vertebral level cannot be checked; the measurements and "
                      "the cut-off flags assume the slice is at L3",),
        )
    from sarcoscope.locate import find_l3

    return find_l3(volume, _locate_settings(settings))


def _check_orientation(volume: CTVolume, where: str) -> None:
    """Refuse a NIfTI volume stored upside down (``locate.orientation``). DICOM geometry comes
    from ImageOrientationPatient, which scanners write right; NIfTI affines are often rewritten
    by conversion tools, and a wrong one cannot be seen in the header."""
    if volume.series.format != "nifti" or volume.is_partial:
        return
    from sarcoscope.locate.orientation import upside_down

    if upside_down(volume):
        raise InputError(
            f"{where}: the image is upside down — the spine is found only with the patient's back at "
            "the top, and every stage expects the front at the top. The file's affine (orientation) is "
            "wrong: typically LPS coordinates labelled as RAS by a conversion tool. Re-create the NIfTI "
            "from the DICOM series (e.g. with dcm2niix) or give the DICOM series itself."
        )


def _where(source: Path | str | CTVolume) -> str:
    """How messages name the input: its path, never patient identifiers."""
    return "the volume given" if isinstance(source, CTVolume) else str(source)


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
