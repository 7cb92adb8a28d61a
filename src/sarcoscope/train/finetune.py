"""Fine-tuning on a hospital's own annotated slices.

``sarcoscope train --config configs/shipped.toml --init shipped --data DIR`` reads every
image/reference pair in ``DIR`` (see ``train.annotations``) and splits the slices, by a hash of
the case name, into

* **held-out** slices (``[finetune] holdout_fraction``): scored before and after, and nothing
  else — never trained on and never used to choose the exported weights, so the "after" report
  is not biased towards them;
* **validation** slices, carved from the remaining ones (the same fraction, at least one) when
  at least three remain: they pick the best checkpoint, checked every
  ``min([train] val_every, steps // 10)`` steps (at least every step) and at the last step run,
  so a run of a few hundred steps makes about ten checks whatever ``val_every`` the full
  training uses (500 in shipped.toml); a run stopped by ``max_minutes`` is checked at the step
  where it stops and exports the best of the checks made. With fewer slices nothing is carved
  and the weights of the last step are exported. The report and the card say how many checks
  were made and at which step the exported weights are;
* **training** slices: the rest.

Fine-tuning runs on the init model's grid (pixel size and HU windows from its ONNX metadata):
the exported file keeps that grid, so training on another one would mis-scale every slice. A
config whose ``[grid]`` differs is overridden with a warning; ``data.canvas`` and ``train.crop``
keep their extent in mm. BatchNorm statistics stay frozen (a few dozen slices cannot
re-estimate them, and an exported file has them folded into the convolutions).

Outputs, per output model ``M.onnx`` (``--out``, default ``<run_dir>/finetune/<name>-finetuned.onnx``):
``M.json`` (model card) and ``M-report/`` (summary.md naming the model file and its sha256,
before/after CSV, JSON and plots, metrics.jsonl). A rerun first removes the files of that list
from ``M-report/``, so no stale "before" or metrics line survives; other files are left alone.

References are read by ``train.annotations.load_reference``, which also refuses a NIfTI mask
whose header does not put it on its CT's grid (the same check as ``sarcoscope evaluate``).

Output paths are checked before any data is read: ``--out`` must end in ``.onnx``, must not be
the ``--init`` model (that would overwrite it and its card), and its folder and ``M-report``
must be writable folders; a write that fails later is an ``ExportError`` (exit 5) naming the path.

Reference tissue labels are turned into the model's compartments (muscle + IMAT → envelope,
VAT → visceral fat, SAT → subcutaneous fat); the run-time HU gating recreates the tissues.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from sarcoscope.errors import ConfigError, ExportError, InputError
from sarcoscope.evaluate import (
    CaseAgreement,
    compare_case,
    report_file_names,
    summarise,
    summary_table,
    write_report,
)
from sarcoscope.io.sources import same_file
from sarcoscope.segment.onnx_model import N_COMPARTMENTS, GridSpec, OnnxSegmenter, compartments_from_tissues
from sarcoscope.train.annotations import IDENTITY_MAP, PairScan, format_value_map, load_reference, scan_pairs
from sarcoscope.train.config import Config
from sarcoscope.train.data import CachedSet, to_canvas
from sarcoscope.train.export import export_onnx, unet_from_onnx, write_card
from sarcoscope.train.loop import FitResult, fit, grid_spec
from sarcoscope.train.model import UNet

logger = logging.getLogger(__name__)

REPORT_LABELS = ("before", "after")
#: Every file a fine-tuning run writes into its report folder (and removes there first).
REPORT_FILES: frozenset[str] = report_file_names(REPORT_LABELS) | {"summary.md", "metrics.jsonl", "best.pt", "last.pt"}


@dataclass(frozen=True)
class AnnotatedSlice:
    case: str
    hu: np.ndarray
    labels: np.ndarray
    pixel_spacing_mm: tuple[float, float]


@dataclass(frozen=True)
class FinetuneReport:
    onnx_path: Path
    sha256: str
    report_path: Path
    n_train: int
    n_holdout: int
    before: dict
    after: dict
    n_val: int = 0
    selection: str = ""
    unpaired: tuple[str, ...] = ()


def report_dir_for(onnx_path: Path) -> Path:
    """The report folder of a fine-tuned model: ``M-report`` beside ``M.onnx``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{onnx_path.stem}-report")


def _map_hint(is_tag: bool, tag_map: dict[int, int]) -> str:
    if is_tag:
        return (
            "map them in the config's [finetune] tag_map or with --label-map (which replaces it for .tag files), "
            f"e.g. --label-map {format_value_map(tag_map)},9=4 if 9 is SAT (targets 1 muscle, 2 IMAT, 3 VAT, "
            "4 SAT; 0 ignores a value on purpose)"
        )
    return (
        "a NIfTI label map in --data must use sarcoscope's labels 1 muscle, 2 IMAT, 3 VAT, 4 SAT "
        "(--label-map and [finetune] tag_map apply to .tag files only); relabel the file, or set "
        "values to ignore to 0"
    )


def _load_pairs(folder: Path, pairs: tuple[tuple[Path, Path], ...], tag_map: dict[int, int]) -> list[AnnotatedSlice]:
    from sarcoscope.io import read_ct

    out = []
    for image, ref in pairs:
        volume = read_ct(image)
        is_tag = ref.name.lower().endswith(".tag")
        vmap = tag_map if is_tag else IDENTITY_MAP
        for rs in load_reference(ref, volume, vmap, image_file=image, map_hint=_map_hint(is_tag, tag_map)):
            out.append(AnnotatedSlice(f"{image.relative_to(folder).as_posix()}#{rs.k}", volume.slice_hu(rs.k),
                                      rs.labels, volume.pixel_spacing_mm))
    return out


def load_annotated(folder: Path, value_map: dict[int, int] | None, tag_map: dict[int, int]) -> list[AnnotatedSlice]:
    """Every annotated slice in ``folder`` with its HU and reference labels (display-oriented).

    ``.tag`` values are mapped by ``value_map`` (``--label-map``) if given, else by ``tag_map``
    (``[finetune] tag_map``); NIfTI label maps must hold our labels 1..4. Applying a tag map to
    a label map turned its VAT (3) and SAT (4) into background; an unmapped value is refused.
    """
    folder = Path(folder)
    return _load_pairs(folder, scan_pairs(folder).pairs, value_map or tag_map)


def _hash_order(items: list[AnnotatedSlice], salt: str) -> list[AnnotatedSlice]:
    return sorted(items, key=lambda it: hashlib.sha256((salt + it.case).encode()).hexdigest())


def split_holdout(items: list[AnnotatedSlice], fraction: float) -> tuple[list[AnnotatedSlice], list[AnnotatedSlice]]:
    """Deterministic split by a hash of the case name (stable when cases are added)."""
    if len(items) < 2:
        raise InputError(f"fine-tuning needs at least 2 annotated slices (one to hold out), found {len(items)}")
    scored = _hash_order(items, "")
    n_hold = min(len(items) - 1, max(1, int(round(fraction * len(items)))))
    return scored[n_hold:], scored[:n_hold]


def split_validation(
    items: list[AnnotatedSlice], fraction: float
) -> tuple[list[AnnotatedSlice], list[AnnotatedSlice]]:
    """(training, validation) from the non-held-out slices; no validation below 3 slices.

    Another hash salt than ``split_holdout``'s, so the two splits are independent.
    """
    if len(items) < 3:
        return list(items), []
    scored = _hash_order(items, "validation:")
    n_val = min(len(items) - 2, max(1, int(round(fraction * len(items)))))
    return scored[n_val:], scored[:n_val]


def _grid_text(spec: GridSpec) -> str:
    return f"{spec.spacing_mm:g} mm, HU windows " + ", ".join(f"{lo:g}..{hi:g}" for lo, hi in spec.windows)


def on_model_grid(cfg: Config, spec: GridSpec) -> tuple[Config, str | None]:
    """``cfg`` set to train on the init model's grid ``spec``; a note when the config said otherwise.

    ``data.canvas`` and ``train.crop`` keep their size in mm and are rounded up to the model's
    divisor (2 ** poolings).
    """
    mine = (float(cfg.grid.spacing_mm), tuple(tuple(float(v) for v in w) for w in cfg.grid.windows))
    note = None
    if mine != (float(spec.spacing_mm), tuple(spec.windows)):
        note = (f"the config's grid ({_grid_text(grid_spec(cfg))}) differs from the init model's "
                f"({_grid_text(spec)}); fine-tuning uses the model's grid, which the exported file keeps")
    scale = cfg.grid.spacing_mm / spec.spacing_mm
    div = spec.divisor
    canvas = max(div, math.ceil(cfg.data.canvas * scale / div) * div)
    crop = min(canvas, max(div, math.ceil(cfg.train.crop * scale / div) * div))
    new = replace(cfg, grid=replace(cfg.grid, spacing_mm=spec.spacing_mm, windows=spec.windows),
                  data=replace(cfg.data, canvas=canvas), train=replace(cfg.train, crop=crop))
    return new, note


def _score(seg: OnnxSegmenter, items: list[AnnotatedSlice]) -> list[CaseAgreement]:
    return [compare_case(it.case, it.hu, seg.segment(it.hu, it.pixel_spacing_mm), it.labels, it.pixel_spacing_mm)
            for it in items]


def _as_set(items: list[AnnotatedSlice], cfg: Config, spec: GridSpec, path: Path) -> CachedSet:
    canv = [to_canvas(it.hu, compartments_from_tissues(it.labels), it.pixel_spacing_mm, spec, cfg.data.canvas)
            for it in items]
    return CachedSet(np.stack([c[0] for c in canv]), np.stack([c[1] for c in canv]), ("user",) * len(items), path)


def _clean_report_dir(report_dir: Path) -> None:
    """Remove the files an earlier run wrote here (``REPORT_FILES``); nothing else."""
    report_dir.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        (report_dir / name).unlink(missing_ok=True)


def _write_error(out_path: Path, exc: OSError) -> ExportError:
    where = exc.filename or out_path
    return ExportError(
        f"{out_path}: cannot write the fine-tuned model or its report ({exc.strerror or exc}: {where}); "
        "check that the folder is writable and the disk is not full, or choose another --out"
    )


def _probe_folder(folder: Path, out_path: Path) -> None:
    """Refuse a folder (or its nearest existing parent, where it would be created) that is not a
    writable folder."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise ExportError(
            f"{out_path}: {existing} is a file, not a folder, so {folder} cannot be created; "
            "choose another --out"
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise _write_error(out_path, exc) from exc


def check_outputs(out_path: Path, init: Path | None) -> Path:
    """Refuse, before any data is read, outputs that cannot be written or would replace ``init``;
    returns the report folder.

    The run writes ``M.onnx``, ``M.json`` (its card) and the folder ``M-report``; a file of that
    folder's name, a folder in the model's place or an unwritable location failed only after
    the data were read and the model trained, as an internal error.
    """
    if out_path.suffix.lower() != ".onnx":
        raise ConfigError(f"--out {out_path}: the fine-tuned model is an ONNX file; give a name ending in .onnx")
    card = out_path.with_suffix(".json")
    if init is not None and (same_file(out_path, Path(init)) or same_file(card, Path(init).with_suffix(".json"))):
        raise ExportError(
            f"--out {out_path} is the --init model {init}: fine-tuning would overwrite it and its card "
            f"{card.name}; choose another --out (the default is <run_dir>/finetune/<name>-finetuned.onnx)"
        )
    report_dir = report_dir_for(out_path)
    for path, what in ((out_path, "the fine-tuned model"), (card, "its model card")):
        if path.is_dir():
            raise ExportError(f"{out_path}: {path} is a folder, but {what} is written there; choose another --out")
        if path.exists() and not os.access(path, os.W_OK):
            raise ExportError(f"{out_path}: {path} exists and is read-only ({what}); choose another --out")
    if report_dir.exists() and not report_dir.is_dir():
        raise ExportError(
            f"{out_path}: {report_dir} is a file, but the fine-tuning report is written into a folder of "
            "that name beside the model; move or rename that file, or choose another --out"
        )
    _probe_folder(out_path.parent, out_path)
    _probe_folder(report_dir, out_path)
    return report_dir


def selection_text(
    fitted: FitResult, val_items: list[AnnotatedSlice], n_rest: int, val_every: int, steps: int, max_minutes: float
) -> str:
    """What the exported weights are, in words: the validation set, the checks made, the step kept."""
    if val_items and fitted.best_step:
        checks = ("1 check, at the last step run: the exported weights are the last ones" if fitted.n_checks == 1
                  else f"{fitted.n_checks} checks (every {val_every} steps and at the last step run); the exported "
                  f"weights are those of step {fitted.best_step} of {fitted.steps_done}")
        text = (f"the best mean Dice on {len(val_items)} validation slice(s) carved from the training slices "
                f"({', '.join(it.case for it in val_items)}) over {checks}")
    elif val_items:
        text = f"the last step (none of the {fitted.n_checks} validation checks gave a Dice score)"
    else:
        text = (f"the last step (only {n_rest} non-held-out slices: too few to carve a validation part; "
                "metrics.jsonl's val_dice is measured on the training slices)")
    if fitted.stopped_by_time:
        text += (f"; the run stopped at step {fitted.steps_done} of {steps} (max_minutes {max_minutes:g}) and was "
                 "checked there")
    return text


def finetune(
    cfg: Config, data_dir: Path, *, init: Path | None, out: Path | None, value_map: dict[int, int] | None = None
) -> FinetuneReport:
    """Fine-tune ``init`` (or a fresh network) on the annotated slices in ``data_dir``; report before/after.

    ``value_map`` (``--label-map``) replaces ``[finetune] tag_map`` for ``.tag`` files.
    """
    torch.set_num_threads(max(1, cfg.train.threads))
    data_dir = Path(data_dir)
    out_path = Path(out) if out is not None else Path(cfg.run_dir) / "finetune" / f"{cfg.name}-finetuned.onnx"
    report_dir = check_outputs(out_path, init)
    scan = scan_pairs(data_dir)
    tag_map = value_map or cfg.finetune.tag_map
    if value_map and not any(r.name.lower().endswith(".tag") for _, r in scan.pairs):
        logger.warning("--label-map applies to .tag files only and %s holds none; it is not used", data_dir)
    items = _load_pairs(data_dir, scan.pairs, tag_map)
    rest, hold_items = split_holdout(items, cfg.finetune.holdout_fraction)
    train_items, val_items = split_validation(rest, cfg.finetune.holdout_fraction)

    init_sha: str | None = None
    notes: list[str] = []
    before: list[CaseAgreement] = []
    if init is not None:
        start = OnnxSegmenter(init)
        init_sha = start.sha256
        before = _score(start, hold_items)
        model, spec = unet_from_onnx(init)
        cfg, grid_note = on_model_grid(cfg, spec)
        if grid_note:
            logger.warning("%s", grid_note)
            notes.append(grid_note)
    else:
        logger.warning("no --init: training a fresh network on %d slices only", len(train_items))
        spec = grid_spec(cfg)
        torch.manual_seed(cfg.seed)
        model = UNet(len(spec.windows), N_COMPARTMENTS, cfg.model.channels)

    steps = cfg.finetune.steps
    if val_items:
        # [train] val_every suits full training (500 of 12000 steps); a fine-tuning run of a few
        # hundred steps would otherwise be checked once, at its end, and choose nothing
        val_every = min(cfg.train.val_every, max(1, steps // 10))
        select_set = val_items
    else:
        val_every = steps  # one check, at the end: the last step
        select_set = train_items
    cfg = replace(cfg, train=replace(cfg.train, val_every=val_every))

    try:
        _clean_report_dir(report_dir)
        fitted = fit(
            model, _as_set(train_items, cfg, spec, report_dir), _as_set(select_set, cfg, spec, report_dir), cfg,
            spec, report_dir, steps=steps, lr=cfg.finetune.lr, freeze_bn=init is not None,
        )
        for name in ("best.pt", "last.pt"):  # the exported file holds these weights
            (report_dir / name).unlink(missing_ok=True)
        selection = selection_text(fitted, val_items, len(rest), val_every, steps, cfg.train.max_minutes)
        if fitted.stopped_by_time:
            logger.warning("fine-tuning stopped by max_minutes; exported weights: %s", selection)
        return _export_and_report(cfg, fitted, spec, out_path, report_dir, init, init_sha, data_dir, scan, tag_map,
                                  items, (train_items, val_items, hold_items), before, selection, notes)
    except OSError as exc:
        raise _write_error(out_path, exc) from exc


def _export_and_report(
    cfg: Config, fitted: FitResult, spec: GridSpec, out_path: Path, report_dir: Path, init: Path | None,
    init_sha: str | None, data_dir: Path, scan: PairScan, tag_map: dict[int, int], items: list[AnnotatedSlice],
    splits: tuple[list[AnnotatedSlice], list[AnnotatedSlice], list[AnnotatedSlice]], before: list[CaseAgreement],
    selection: str, notes: list[str],
) -> FinetuneReport:
    train_items, val_items, hold_items = splits
    sha = export_onnx(fitted.model, spec, out_path, name=f"{cfg.name}-finetuned", version=f"{cfg.version}+ft",
                      extra={"finetuned_from": str(init) if init else ""})
    unpaired = tuple(scan.unpaired_text(data_dir))
    # the card first: scoring loads the file, which checks the card beside it
    write_card(out_path, {
        "name": f"{cfg.name}-finetuned", "version": f"{cfg.version}+ft", "file": out_path.name, "sha256": sha,
        "finetuned_from": str(init) if init else None, "finetuned_from_sha256": init_sha,
        "grid": json.loads(spec.to_json()), "n_train": len(train_items), "n_validation": len(val_items),
        "n_holdout": len(hold_items), "checkpoint": selection, "validation_checks": fitted.n_checks,
        "checkpoint_step": fitted.best_step or fitted.steps_done, "steps": fitted.steps_done,
        "minutes": round(fitted.minutes, 2), "holdout_cases": [it.case for it in hold_items],
        "report": report_dir.name,
    })
    after = _score(OnnxSegmenter(out_path), hold_items)

    summaries = {}
    if before:
        write_report(before, report_dir, "before")
        summaries["before"] = summarise(before)
    write_report(after, report_dir, "after")
    summaries["after"] = summarise(after)
    init_text = f"`{init}` (sha256 {init_sha})" if init is not None else "a fresh network (no --init)"
    lines = [
        "# Fine-tuning report", "",
        f"- model: `{out_path.name}` (sha256 {sha}), in {out_path.parent}",
        f"- started from: {init_text}",
        f"- data: `{data_dir}`: {len(items)} annotated slices: {len(train_items)} training, "
        f"{len(val_items)} validation, {len(hold_items)} held-out; .tag values mapped by "
        f"{format_value_map(tag_map)}, NIfTI label maps read as labels 1-4",
        f"- held-out slices (scored below; never trained on, never used to choose the weights): "
        f"{', '.join(it.case for it in hold_items)}",
        f"- exported weights: {selection}",
        f"- grid: {_grid_text(spec)}",
        f"- steps: {fitted.steps_done}, minutes: {fitted.minutes:.1f}",
    ]
    lines += [f"- note: {n}" for n in notes]
    lines += [f"- unpaired files in `{data_dir}`: {u}" for u in unpaired]
    report_path = report_dir / "summary.md"
    report_path.write_text("\n".join(lines) + "\n\n" + summary_table(summaries) + "\n", encoding="utf-8")
    return FinetuneReport(out_path, sha, report_path, len(train_items), len(hold_items),
                          json.loads(json.dumps(summaries.get("before", {}), default=str)),
                          json.loads(json.dumps(summaries["after"], default=str)),
                          len(val_items), selection, unpaired)
