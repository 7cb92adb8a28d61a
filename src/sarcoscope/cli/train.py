"""``sarcoscope train`` and ``sarcoscope evaluate``.

Training needs the optional ``train`` extra (torch); evaluation needs only the run-time
dependencies. Heavy imports happen inside the command functions.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Callable
from pathlib import Path

import typer

from sarcoscope.errors import ConfigError, ExportError, InputError

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
    out: Path = typer.Option(
        None, "--out",
        help="ONNX file to write. Default: the config's 'out' when training; with --data "
        "<run_dir>/finetune/<name>-finetuned.onnx, its report in the folder <out stem>-report beside it.",
    ),
    label_map: str = typer.Option(
        None, "--label-map",
        help="With --data: Slice-O-Matic .tag value to our label (1 muscle, 2 IMAT, 3 VAT, 4 SAT, 0 ignore), "
        "replacing the config's [finetune] tag_map (default '1=1,2=2,5=3,7=4'). NIfTI masks must hold 1-4.",
    ),
) -> None:
    """Train the segmentation model from a config (synthetic phantom data), or fine-tune it on yours."""
    from sarcoscope.train.config import load_config, parse_value_map

    cfg = load_config(config)
    tag_map = _parse_map(label_map)
    if tag_map is not None:
        if data is None:
            raise ConfigError("--label-map maps the .tag values of --data; give --data DIR too, or leave it out")
        tag_map = parse_value_map(tag_map, "--label-map")
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

        report = finetune(cfg, data, init=init_path, out=out, value_map=tag_map)
        typer.echo(f"fine-tuned model: {report.onnx_path} (sha256 {report.sha256})")
        typer.echo(f"report: {report.report_path} ({report.n_holdout} held-out slices; weights chosen by "
                   f"{report.selection})")
        return
    from sarcoscope.train.loop import train_from_config

    target = Path(out) if out is not None else Path(cfg.out)
    from sarcoscope.io.sources import same_file

    if init_path is not None and same_file(target, init_path):
        raise ExportError(
            f"the trained model would be written to {target}, the model it starts from (--init {init}); "
            "give --out another file, so the starting model stays as it is"
        )
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
    model: Path = typer.Option(
        None, "--model",
        help="ONNX model file scored as the 'model' segmenter (default: the shipped model); implies "
        "--segmenter model. Add --segmenter model --segmenter baseline to see it beside the baseline.",
    ),
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
    out: Path = typer.Option(
        Path("evaluation"), "--out",
        help="Folder for the CSV, summary JSON and plots. A rerun replaces the earlier evaluation's files there "
        "(only those); other files are kept.",
    ),
) -> None:
    """Compare segmentations with reference masks: Dice, area and mean-HU error, Bland–Altman plots."""
    from sarcoscope.cli.analyze import check_output_paths
    from sarcoscope.evaluate import summary_table
    from sarcoscope.train.assess import evaluate_pairs, evaluate_synthetic, make_segmenters

    choices = list(dict.fromkeys(s.value for s in (segmenter or [SegmenterChoice.model])))
    if model is not None and "model" not in choices:
        raise ConfigError(
            f"--model {model} was given with --segmenter {' --segmenter '.join(choices)} only, so the model "
            "would not be scored. To score it, add --segmenter model (with --segmenter baseline for a "
            "side-by-side), or drop --model."
        )
    if synthetic:
        if images or references:
            raise ConfigError("use either --synthetic N or --images/--references, not both")
    else:
        if synthetic_seed is not None:
            raise ConfigError("--synthetic-seed chooses the phantom stream of --synthetic N; give --synthetic too")
        if not images or not references or len(images) != len(references):
            raise ConfigError(
                f"give one --references per --images (got {len(images or [])} images, {len(references or [])} references)"
            )
    value_map = _parse_map(label_map)
    check_output_paths(out_dir=out, labels_path=None, csv_path=None)
    segmenters = make_segmenters(choices, model)
    if synthetic:
        summaries = _staged_evaluation(
            out, lambda folder: evaluate_synthetic(segmenters, synthetic, folder, seed=synthetic_seed))
    else:
        pairs = list(zip(images, references))
        summaries = _staged_evaluation(
            out, lambda folder: evaluate_pairs(segmenters, pairs, folder, value_map=value_map))
    typer.echo(summary_table(summaries))
    for name, seg in segmenters.items():
        if getattr(seg, "path", None) is not None:
            typer.echo(f"{name}: {seg.path} (sha256 {(seg.sha256 or '')[:12]}…)")  # type: ignore[attr-defined]
    typer.echo(f"written to {out}")


def _staged_evaluation(out: Path, run: Callable[[Path], dict[str, dict]]) -> dict[str, dict]:
    """Run an evaluation into a staging folder inside ``out``, then publish it all at once.

    Publishing replaces the files of an earlier evaluation in ``out`` — exactly the names this
    command writes (``evaluate.output_file_names``), those of segmenters not scored this time
    too — so the folder never mixes two runs; any other file is left alone. A failed run leaves
    the earlier results as they were.
    """
    from sarcoscope.cli.analyze import Staging
    from sarcoscope.errors import ExportError
    from sarcoscope.evaluate import output_file_names

    def write_error(exc: OSError) -> ExportError:
        return ExportError(
            f"--out {out}: cannot write the evaluation ({exc.strerror or exc}: {exc.filename or ''}); check "
            "the folder is writable and the disk is not full, or choose another --out."
        )

    stage = Staging()
    try:
        try:
            staged = stage.stage_dir(Path(out))
        except OSError as exc:
            raise write_error(exc) from exc
        summaries = run(staged)
        new = sorted(p for p in staged.iterdir() if p.is_file())
        stage.moves.extend((p, Path(out) / p.name) for p in new)
        ours = output_file_names([c.value for c in SegmenterChoice])
        stage.stale.extend(Path(out) / n for n in sorted(ours - {p.name for p in new}) if (Path(out) / n).is_file())
        try:
            stage.commit()
        except OSError as exc:
            raise write_error(exc) from exc
    except BaseException:
        stage.cleanup()
        raise
    return summaries


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``evaluate`` to the sarcoscope app."""
    app.command("train")(train_command)
    app.command("evaluate")(evaluate_command)
