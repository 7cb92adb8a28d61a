"""Fine-tuning on a hospital's own annotated slices (first version).

``sarcoscope train --config configs/shipped.toml --init shipped --data DIR`` reads every
image/reference pair in ``DIR`` (see ``train.annotations``), keeps a deterministic held-out
split, scores the starting model on it, fine-tunes (BatchNorm statistics frozen: a few
dozen slices cannot re-estimate them), exports the new ONNX file and scores it again on
the same held-out slices. The before/after report lands in ``<run_dir>/finetune``.

Reference tissue labels are turned into the model's compartments (muscle + IMAT → envelope,
VAT → visceral fat, SAT → subcutaneous fat); the run-time HU gating recreates the tissues.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sarcoscope.errors import InputError
from sarcoscope.evaluate import CaseAgreement, compare_case, summarise, summary_table, write_report
from sarcoscope.segment.onnx_model import N_COMPARTMENTS, OnnxSegmenter, compartments_from_tissues
from sarcoscope.train.annotations import find_pairs, load_reference
from sarcoscope.train.config import Config
from sarcoscope.train.data import CachedSet, to_canvas
from sarcoscope.train.export import export_onnx, unet_from_onnx, write_card
from sarcoscope.train.loop import fit, grid_spec
from sarcoscope.train.model import UNet

logger = logging.getLogger(__name__)


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


def load_annotated(folder: Path, value_map: dict[int, int] | None, tag_map: dict[int, int]) -> list[AnnotatedSlice]:
    """Every annotated slice in ``folder`` with its HU and reference labels (display-oriented)."""
    from sarcoscope.io import read_ct

    out = []
    for image, ref in find_pairs(folder):
        volume = read_ct(image)
        vmap = value_map or (tag_map if ref.name.lower().endswith(".tag") else None)
        for rs in load_reference(ref, volume, vmap, image_file=image):
            out.append(AnnotatedSlice(f"{image.relative_to(folder)}#{rs.k}", volume.slice_hu(rs.k), rs.labels,
                                      volume.pixel_spacing_mm))
    return out


def split_holdout(items: list[AnnotatedSlice], fraction: float) -> tuple[list[AnnotatedSlice], list[AnnotatedSlice]]:
    """Deterministic split by a hash of the case name (stable when cases are added)."""
    if len(items) < 2:
        raise InputError(f"fine-tuning needs at least 2 annotated slices (one to hold out), found {len(items)}")
    scored = sorted(items, key=lambda it: hashlib.sha256(it.case.encode()).hexdigest())
    n_hold = min(len(items) - 1, max(1, int(round(fraction * len(items)))))
    return scored[n_hold:], scored[:n_hold]


def _score(seg: OnnxSegmenter, items: list[AnnotatedSlice]) -> list[CaseAgreement]:
    return [compare_case(it.case, it.hu, seg.segment(it.hu, it.pixel_spacing_mm), it.labels, it.pixel_spacing_mm)
            for it in items]


def _as_set(items: list[AnnotatedSlice], cfg: Config, path: Path) -> CachedSet:
    spec = grid_spec(cfg)
    canv = [to_canvas(it.hu, compartments_from_tissues(it.labels), it.pixel_spacing_mm, spec, cfg.data.canvas)
            for it in items]
    return CachedSet(np.stack([c[0] for c in canv]), np.stack([c[1] for c in canv]), ("user",) * len(items), path)


def finetune(
    cfg: Config, data_dir: Path, *, init: Path | None, out: Path | None, value_map: dict[int, int] | None = None
) -> FinetuneReport:
    """Fine-tune ``init`` (or a fresh network) on the annotated slices in ``data_dir``; report before/after."""
    torch.set_num_threads(max(1, cfg.train.threads))
    items = load_annotated(Path(data_dir), value_map, cfg.finetune.tag_map)
    train_items, hold_items = split_holdout(items, cfg.finetune.holdout_fraction)
    run_dir = Path(cfg.run_dir) / "finetune"
    report_dir = run_dir / "report"
    before: list[CaseAgreement] = []
    if init is not None:
        before = _score(OnnxSegmenter(init), hold_items)
        model, spec = unet_from_onnx(init)
    else:
        logger.warning("no --init: training a fresh network on %d slices only", len(train_items))
        spec = grid_spec(cfg)
        torch.manual_seed(cfg.seed)
        model = UNet(len(spec.windows), N_COMPARTMENTS, cfg.model.channels)
    train_set = _as_set(train_items, cfg, run_dir)
    val_set = _as_set(hold_items, cfg, run_dir)
    model, best, steps, minutes = fit(
        model, train_set, val_set, cfg, spec, run_dir, steps=cfg.finetune.steps, lr=cfg.finetune.lr,
        freeze_bn=init is not None,
    )
    out_path = Path(out) if out is not None else run_dir / f"{cfg.name}-finetuned.onnx"
    sha = export_onnx(model, spec, out_path, name=f"{cfg.name}-finetuned", version=f"{cfg.version}+ft",
                      extra={"finetuned_from": str(init) if init else ""})
    after = _score(OnnxSegmenter(out_path), hold_items)
    summaries = {}
    if before:
        write_report(before, report_dir, "before")
        summaries["before"] = summarise(before)
    write_report(after, report_dir, "after")
    summaries["after"] = summarise(after)
    report_path = report_dir / "summary.md"
    report_path.write_text(
        f"# Fine-tuning report\n\ntrain slices: {len(train_items)}, held-out slices: {len(hold_items)} "
        f"({', '.join(it.case for it in hold_items)})\nsteps: {steps}, minutes: {minutes:.1f}\n\n"
        + summary_table(summaries) + "\n", encoding="utf-8")
    write_card(out_path, {
        "name": f"{cfg.name}-finetuned", "version": f"{cfg.version}+ft", "file": out_path.name, "sha256": sha,
        "finetuned_from": str(init) if init else None, "n_train": len(train_items), "n_holdout": len(hold_items),
        "steps": steps, "minutes": round(minutes, 2), "holdout_cases": [it.case for it in hold_items],
    })
    return FinetuneReport(out_path, sha, report_path, len(train_items), len(hold_items),
                          json.loads(json.dumps(summaries.get("before", {}), default=str)),
                          json.loads(json.dumps(summaries["after"], default=str)))
