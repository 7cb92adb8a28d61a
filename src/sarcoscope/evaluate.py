"""Agreement between predicted and reference label maps: the numbers a hospital checks before use.

Pure functions on arrays (per-class Dice, area and mean-HU error), a per-case table, a
summary with Bland–Altman bias and limits of agreement, and the plots. No model, no torch:
``sarcoscope evaluate`` and the training report both call these. Also what ``evaluate`` needs
around them: the names of the files a run writes and unique case names. (Loading references,
and checking that a NIfTI reference lies on its CT's grid, is ``train.annotations``'s job: it
is torch-free and shared by ``evaluate`` and fine-tuning.)
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePath

import numpy as np

from sarcoscope.tissues import TISSUE_INFO, Tissue

logger = logging.getLogger(__name__)

TISSUES: tuple[Tissue, ...] = tuple(Tissue)


@dataclass(frozen=True)
class ClassAgreement:
    """One tissue in one case. Areas in cm², HU means over the class's pixels (NaN when absent).

    ``reference_annotated`` is False when the reference does not annotate this tissue at all
    (e.g. a per-class mask folder without ``imat.nii.gz``): then every reference-side number,
    Dice and the errors are NaN — unknown, not zero.
    """

    dice: float
    ref_area_cm2: float
    pred_area_cm2: float
    ref_mean_hu: float
    pred_mean_hu: float
    reference_annotated: bool = True

    @property
    def area_error_cm2(self) -> float:
        return self.pred_area_cm2 - self.ref_area_cm2

    @property
    def area_error_pct(self) -> float:
        """Signed area error relative to the reference (NaN when the reference area is 0)."""
        if self.ref_area_cm2 <= 0:
            return math.nan
        return 100.0 * self.area_error_cm2 / self.ref_area_cm2

    @property
    def mean_hu_error(self) -> float:
        return self.pred_mean_hu - self.ref_mean_hu


@dataclass(frozen=True)
class CaseAgreement:
    case: str
    tissues: dict[str, ClassAgreement]  # keyed by Tissue.key


def dice(pred: np.ndarray, ref: np.ndarray, label: int) -> float:
    """Dice of one label; NaN when neither map contains it (nothing to agree on)."""
    p, r = pred == label, ref == label
    total = int(p.sum()) + int(r.sum())
    if total == 0:
        return math.nan
    return 2.0 * int(np.logical_and(p, r).sum()) / total


def _mean_hu(hu: np.ndarray, mask: np.ndarray) -> float:
    return float(hu[mask].mean()) if mask.any() else math.nan


def compare_case(
    case: str,
    hu: np.ndarray,
    pred: np.ndarray,
    ref: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    annotated: Collection[Tissue] | None = None,
) -> CaseAgreement:
    """Compare one predicted label map with its reference on the same pixels.

    ``annotated`` lists the tissues the reference annotates (default: all four); the others
    get NaN on the reference side instead of counting as "absent" (which would give Dice 0).
    """
    if pred.shape != ref.shape or hu.shape != ref.shape:
        raise ValueError(
            f"case {case}: shapes differ (image {hu.shape}, prediction {pred.shape}, reference {ref.shape})"
        )
    known = set(TISSUES if annotated is None else annotated)
    px_cm2 = pixel_spacing_mm[0] * pixel_spacing_mm[1] / 100.0
    out: dict[str, ClassAgreement] = {}
    for t in TISSUES:
        p, r = pred == int(t), ref == int(t)
        pred_area, pred_hu = float(p.sum()) * px_cm2, _mean_hu(hu, p)
        if t in known:
            out[t.key] = ClassAgreement(dice(pred, ref, int(t)), float(r.sum()) * px_cm2, pred_area,
                                        _mean_hu(hu, r), pred_hu)
        else:
            out[t.key] = ClassAgreement(math.nan, math.nan, pred_area, math.nan, pred_hu, reference_annotated=False)
    return CaseAgreement(case, out)


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return {"n": 0, "mean": math.nan, "sd": math.nan, "median": math.nan, "p05": math.nan}
    return {
        "n": int(arr.size),
        "mean": float(arr.mean()),
        "sd": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "median": float(np.median(arr)),
        "p05": float(np.percentile(arr, 5)),
    }


def summarise(cases: list[CaseAgreement]) -> dict[str, dict[str, object]]:
    """Per tissue: Dice statistics, area error (cm², %, absolute %), Bland–Altman bias and limits."""
    summary: dict[str, dict[str, object]] = {}
    for t in TISSUES:
        rows = [c.tissues[t.key] for c in cases]
        diff = [r.area_error_cm2 for r in rows if r.ref_area_cm2 > 0 or r.pred_area_cm2 > 0]
        d = _stats(diff)
        known = [r for r in rows if r.reference_annotated]
        ref_total = sum(r.ref_area_cm2 for r in known)
        pred_total = sum(r.pred_area_cm2 for r in known)
        summary[t.key] = {
            "n_not_annotated": len(rows) - len(known),
            "dice": _stats([r.dice for r in rows]),
            "area_error_cm2": d,
            "area_error_pct": _stats([r.area_error_pct for r in rows]),
            "abs_area_error_pct": _stats([abs(r.area_error_pct) for r in rows]),
            "total_area_error_pct": 100.0 * (pred_total - ref_total) / ref_total if ref_total > 0 else math.nan,
            "mean_hu_error": _stats([r.mean_hu_error for r in rows]),
            "bland_altman_cm2": {
                "bias": d["mean"],
                "loa_low": d["mean"] - 1.96 * d["sd"] if d["n"] else math.nan,
                "loa_high": d["mean"] + 1.96 * d["sd"] if d["n"] else math.nan,
            },
        }
    return summary


CSV_FIELDS = ("dice", "ref_area_cm2", "pred_area_cm2", "area_error_cm2", "area_error_pct", "ref_mean_hu",
              "pred_mean_hu", "mean_hu_error")


def write_cases_csv(cases: list[CaseAgreement], path: Path) -> Path:
    """One row per case, one column group per tissue (``muscle_dice``, ``muscle_area_error_pct`` …).

    The last column, ``reference_missing``, names the tissues the reference does not annotate
    (``;``-separated); their reference-side cells are empty.
    """
    path = Path(path)
    header = ["case"] + [f"{t.key}_{f}" for t in TISSUES for f in CSV_FIELDS] + ["reference_missing"]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for c in cases:
            row: list[object] = [c.case]
            for t in TISSUES:
                a = c.tissues[t.key]
                for f in CSV_FIELDS:
                    v = getattr(a, f)
                    row.append("" if not math.isfinite(v) else f"{v:.4f}")
            row.append(";".join(t.key for t in TISSUES if not c.tissues[t.key].reference_annotated))
            w.writerow(row)
    return path


def plot_agreement(cases: list[CaseAgreement], out_dir: Path, label: str = "") -> list[Path]:
    """Bland–Altman and scatter plots of areas (one panel per tissue); returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    paths = []
    for kind in ("bland_altman", "scatter"):
        fig, axes = plt.subplots(1, 4, figsize=(16, 4), dpi=90)
        for ax, t in zip(axes, TISSUES):
            ref = np.array([c.tissues[t.key].ref_area_cm2 for c in cases])
            pred = np.array([c.tissues[t.key].pred_area_cm2 for c in cases])
            known = np.isfinite(ref)  # tissues a reference does not annotate have no point
            ref, pred = ref[known], pred[known]
            colour = np.array(TISSUE_INFO[t].rgb) / 255
            if kind == "scatter":
                ax.scatter(ref, pred, s=6, color=colour)
                hi = float(max(ref.max(initial=1), pred.max(initial=1)))
                ax.plot([0, hi], [0, hi], "k--", lw=0.8)
                ax.set_xlabel("reference area (cm²)")
                ax.set_ylabel("predicted area (cm²)")
            else:
                mean, diff = (ref + pred) / 2, pred - ref
                ax.scatter(mean, diff, s=6, color=colour)
                if diff.size > 1:
                    bias, sd = diff.mean(), diff.std(ddof=1)
                    for y, style in ((bias, "-"), (bias - 1.96 * sd, "--"), (bias + 1.96 * sd, "--")):
                        ax.axhline(y, color="k", ls=style, lw=0.8)
                ax.set_xlabel("mean area (cm²)")
                ax.set_ylabel("predicted − reference (cm²)")
            ax.set_title(TISSUE_INFO[t].label, fontsize=9)
        fig.suptitle(f"{label} {kind.replace('_', '–')} (n={len(cases)})".strip())
        fig.tight_layout()
        path = out_dir / _report_name(kind, label, ".png")
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def _jsonable(obj: object) -> object:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _report_name(stem: str, label: str, ext: str) -> str:
    return f"{stem}_{label}{ext}" if label else f"{stem}{ext}"


#: Files ``write_report`` writes per label (segmenter), and those one ``sarcoscope evaluate`` run
#: writes once (``train.assess``). A rerun into the same folder removes exactly these names of
#: the segmenters it does not score again, so the folder never mixes two runs.
REPORT_STEMS: tuple[tuple[str, str], ...] = (
    ("cases", ".csv"), ("summary", ".json"), ("bland_altman", ".png"), ("scatter", ".png"))
RUN_FILE_NAMES: tuple[str, ...] = ("summary.md", "by_level.json")


def report_file_names(labels: Collection[str]) -> frozenset[str]:
    """The files ``write_report`` writes for each of ``labels``."""
    return frozenset(_report_name(stem, label, ext) for label in labels for stem, ext in REPORT_STEMS)


def output_file_names(labels: Collection[str]) -> frozenset[str]:
    """Every file name an evaluation run over segmenters ``labels`` may write in its folder."""
    return report_file_names(labels) | frozenset(RUN_FILE_NAMES)


def write_report(cases: list[CaseAgreement], out_dir: Path, label: str = "") -> dict[str, Path]:
    """Write cases CSV, summary JSON and the plots for one segmenter under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not cases:
        raise ValueError("no cases to report")
    csv_path = write_cases_csv(cases, out_dir / _report_name("cases", label, ".csv"))
    summary = summarise(cases)
    json_path = out_dir / _report_name("summary", label, ".json")
    json_path.write_text(json.dumps(_jsonable({"n_cases": len(cases), "tissues": summary}), indent=2) + "\n")
    pngs = plot_agreement(cases, out_dir, label)
    return {"csv": csv_path, "summary": json_path, "bland_altman": pngs[0], "scatter": pngs[1]}


def summary_table(summaries: dict[str, dict[str, dict[str, object]]]) -> str:
    """Markdown table: segmenter × tissue mean Dice (median) and mean |area error| %."""
    lines = ["| segmenter | tissue | Dice mean | Dice median | Dice p05 | mean abs area error % | "
             "total area error % | BA bias cm² (LoA) | mean-HU error |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, summary in summaries.items():
        for t in TISSUES:
            s = summary[t.key]
            dc, ae, ba, hu = s["dice"], s["abs_area_error_pct"], s["bland_altman_cm2"], s["mean_hu_error"]
            lines.append(
                f"| {name} | {t.key} | {dc['mean']:.4f} | {dc['median']:.4f} | {dc['p05']:.4f} | {ae['mean']:.2f} | "
                f"{s['total_area_error_pct']:+.2f} | {ba['bias']:+.2f} ({ba['loa_low']:+.1f}, {ba['loa_high']:+.1f}) | "
                f"{hu['mean']:+.2f} |"
            )
    return "\n".join(lines)


def case_to_dict(case: CaseAgreement) -> dict[str, object]:
    return {"case": case.case, "tissues": {k: asdict(v) for k, v in case.tissues.items()}}


# ----------------------------------------------------------------------------- case names


def _distinguishing_tails(paths: Sequence[Path]) -> list[str]:
    """Per path, its shortest tail of components that no other (different) path shares."""
    parts = [Path(os.path.normpath(Path(p).absolute())).parts for p in paths]
    distinct = set(parts)
    out = []
    for ps in parts:
        others = [q for q in distinct if q != ps]
        n = 1
        while n < len(ps) and any(q[-n:] == ps[-n:] for q in others):
            n += 1
        out.append(PurePath(*ps[-n:]).as_posix())
    return out


def case_names(images: Sequence[Path], references: Sequence[Path]) -> list[str]:
    """A unique, recognisable name per (image, reference) pair, for the case column.

    The shortest tail of the image path that tells the images apart: ``A/ct.dcm`` and
    ``B/ct.dcm`` (not ``ct.dcm`` twice, which would merge two patients' rows), just ``ct1``
    when the names already differ. An image given with several references (two readers'
    masks) adds the reference's distinguishing tail: ``ct.dcm[reader1/ct.nii.gz]``; a pair
    given twice is numbered.
    """
    if len(images) != len(references):
        raise ValueError(f"{len(images)} images for {len(references)} references")
    names = _distinguishing_tails(images)
    for name in {n for n in names if names.count(n) > 1}:
        idx = [i for i, n in enumerate(names) if n == name]
        for i, ref in zip(idx, _distinguishing_tails([references[i] for i in idx])):
            names[i] = f"{name}[{ref}]"
    given = list(names)
    counts: dict[str, int] = {}
    for i, name in enumerate(given):
        if given.count(name) > 1:
            counts[name] = counts.get(name, 0) + 1
            names[i] = f"{name}({counts[name]})"
    return names
