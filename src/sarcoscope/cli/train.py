"""``sarcoscope train`` and ``sarcoscope evaluate``.

Training needs the optional ``train`` extra (torch); evaluation needs only the run-time
dependencies. Heavy imports happen inside the command functions.
"""

from __future__ import annotations

import enum
import logging
import os
from pathlib import Path

import typer

from sarcoscope.errors import ConfigError, InputError

logger = logging.getLogger(__name__)


class SegmenterChoice(str, enum.Enum):
    model = "model"
    baseline = "baseline"


def _parse_map(text: str | None) -> dict[int, int] | None:
    if not text:
        return None
    out: dict[int, int] = {}
    for part in text.split(","):
        try:
            src, dst = part.split("=")
            out[int(src)] = int(dst)
        except ValueError:
            raise ConfigError(
                f"--label-map '{text}': expected comma-separated SOURCE=TARGET pairs such as 1=1,2=2,5=3,7=4"
            ) from None
    return out


def _require_torch() -> None:
    # Idle OpenMP threads must sleep, not spin: on a small, shared CPU spinning threads wait
    # for each other's time slices (measured here: 5x more CPU per step, 3-6x slower steps).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import importlib.util

    if importlib.util.find_spec("torch") is None:  # torch itself is imported only in sarcoscope.train
        raise ConfigError(
            "training needs PyTorch, which is in the optional 'train' extra: pip install 'sarcoscope[train]'"
        )


def train_command(
    config: Path = typer.Option(..., "--config", help="Training config (TOML), e.g. configs/shipped.toml."),
    init: str = typer.Option(
        None, "--init", help="Start from a model: 'shipped' or an ONNX file from `sarcoscope train`."
    ),
    data: Path = typer.Option(
        None, "--data", help="Fine-tune on your own annotated slices: a folder of DICOM files with .tag or NIfTI masks."
    ),
    out: Path = typer.Option(None, "--out", help="ONNX file to write (default: the config's 'out')."),
    label_map: str = typer.Option(
        None, "--label-map", help="Mask value mapping for --data, e.g. '1=1,2=2,5=3,7=4' (Slice-O-Matic default)."
    ),
) -> None:
    """Train the segmentation model from a config (synthetic phantom data), or fine-tune it on yours."""
    from sarcoscope.train.config import load_config

    cfg = load_config(config)
    _require_torch()
    init_path: Path | None = None
    if init:
        if init == "shipped":
            from sarcoscope.segment.onnx_model import default_model_path

            init_path = default_model_path()
        else:
            init_path = Path(init)
        if not init_path.is_file():
            raise InputError(f"--init {init}: model file {init_path} not found")
    if data is not None:
        from sarcoscope.train.finetune import finetune

        report = finetune(cfg, data, init=init_path, out=out, value_map=_parse_map(label_map))
        typer.echo(f"fine-tuned model: {report.onnx_path} (sha256 {report.sha256[:12]}…)")
        typer.echo(f"report: {report.report_path}")
        return
    from sarcoscope.train.loop import train_from_config

    result = train_from_config(cfg, out=out, init=init_path)
    typer.echo(
        f"model: {result.onnx_path} (sha256 {result.sha256[:12]}…), {result.steps_done} steps in "
        f"{result.minutes:.1f} min; best validation Dice {result.best_val_dice}; card {result.card_path}"
    )


def evaluate_command(
    images: list[Path] = typer.Option(None, "--images", help="CT input (DICOM file/folder or NIfTI); repeat per case."),
    references: list[Path] = typer.Option(
        None,
        "--references",
        help="Reference per --images, same order: DICOM SEG file, NIfTI label map, folder of per-class NIfTI "
        "masks (muscle/imat/vat/sat.nii.gz) or Slice-O-Matic .tag. Every annotated slice is a case.",
    ),
    segmenter: list[SegmenterChoice] = typer.Option(
        None, "--segmenter", help="Segmenter(s) to evaluate: model (default) and/or baseline; repeat for both."
    ),
    model: Path = typer.Option(None, "--model", help="ONNX model file (default: the shipped model)."),
    synthetic: int = typer.Option(
        0, "--synthetic", help="Instead of --images: the first N slices of the held-out phantom test set."
    ),
    synthetic_seed: int = typer.Option(
        None, "--synthetic-seed",
        help="Phantom stream seed for --synthetic (default: the held-out test set's, as the model card reports). "
        "Make development choices on another seed, so the test set stays unseen.",
    ),
    label_map: str = typer.Option(
        None, "--label-map",
        help="Reference value (label map, .tag) or segment number (DICOM SEG) to our label (1 muscle, 2 IMAT, "
        "3 VAT, 4 SAT, 0 ignore), e.g. '1=1,2=2,5=3,7=4'.",
    ),
    out: Path = typer.Option(Path("evaluation"), "--out", help="Folder for the CSV, summary JSON and plots."),
) -> None:
    """Compare segmentations with reference masks: Dice, area and mean-HU error, Bland–Altman plots."""
    from sarcoscope.evaluate import summary_table
    from sarcoscope.train.assess import evaluate_pairs, evaluate_synthetic, make_segmenters

    choices = [s.value for s in (segmenter or [SegmenterChoice.model])]
    if synthetic:
        if images or references:
            raise ConfigError("use either --synthetic N or --images/--references, not both")
        summaries = evaluate_synthetic(make_segmenters(choices, model), synthetic, out, seed=synthetic_seed)
    else:
        if synthetic_seed is not None:
            raise ConfigError("--synthetic-seed chooses the phantom stream of --synthetic N; give --synthetic too")
        if not images or not references or len(images) != len(references):
            raise ConfigError(
                f"give one --references per --images (got {len(images or [])} images, {len(references or [])} references)"
            )
        value_map = _parse_map(label_map)
        summaries = evaluate_pairs(make_segmenters(choices, model), list(zip(images, references)), out, value_map=value_map)
    typer.echo(summary_table(summaries))
    typer.echo(f"written to {out}")


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``evaluate`` to the sarcoscope app."""
    app.command("train")(train_command)
    app.command("evaluate")(evaluate_command)
