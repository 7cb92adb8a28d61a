"""Wall time and peak memory of ``sarcoscope analyze`` on a 512×512×N phantom DICOM series.

What it measures (median of ``--repeats`` runs, each in the same warm process, after one
untimed warm-up run that pays the imports and the model load):

* whole series, L3 found automatically: read / locate / segment / measure / write (the
  stages ``pipeline.analyze`` times, plus writing result.json + overlay.png (+ spine.png)
  exactly as the CLI does);
* one given slice (``--slices K``, K = the phantom's true L3 slice): the same split;
* the same slice given as a single DICOM file (the L3 image exported alone).

Peak memory: each case once more in a fresh child process (``multiprocessing`` spawn), Linux
only: RSS after the imports, then the peak RSS (VmHWM, reset after the imports) of one
analysis including writing, beside the size of the HU array for scale.

Each case also prints how many slices were decoded (a partial read decodes only the given
slice; automatic L3 on a thin-slice series a strided subset plus the chosen slice) and the
1-minute load average at the start and end (the machine is shared).

Usage::

    .venv/bin/python benchmarks/bench_analyze.py [--slices-n 300] [--repeats 5] [--segmenter baseline]
        [--transfer-syntax explicit-le|jpeg2000|rle|jpegls|implicit-le] [--cases whole,given,single]

The phantom series is generated once into a cache folder (``--cache``; default a temp dir).
The machine is shared: numbers vary run to run; the median and the spread are printed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

STAGES = ("read", "locate", "segment", "measure", "write")


def make_series(
    cache: Path, n_slices: int, seed: int, coverage: str, syntax: str = "explicit-le"
) -> tuple[Path, int]:
    """Write (or reuse) the phantom DICOM series; return its folder and true L3 index."""
    import numpy as np

    from sarcoscope import phantom

    tag = "" if syntax == "explicit-le" else f"-{syntax}"
    folder = cache / f"phantom-512x512x{n_slices}-{coverage}-seed{seed}{tag}"
    meta = folder / "bench-meta.json"
    if meta.is_file():
        return folder / "dicom", int(json.loads(meta.read_text())["l3_index"])
    folder.mkdir(parents=True, exist_ok=True)
    params = phantom.random_params(np.random.default_rng(seed), matrix=(512, 512))
    t0 = time.perf_counter()
    ph = phantom.make_volume(params, coverage=coverage, n_slices=n_slices)
    t1 = time.perf_counter()
    phantom.write_dicom_series(ph.volume, folder / "dicom", transfer_syntax=syntax)
    t2 = time.perf_counter()
    print(f"phantom: generated in {t1 - t0:.1f} s, DICOM written in {t2 - t1:.1f} s", flush=True)
    if ph.l3_index is None:
        raise SystemExit("phantom has no L3 in range; choose another --seed")
    meta.write_text(json.dumps({"l3_index": ph.l3_index, "shape": list(ph.volume.hu.shape)}))
    return folder / "dicom", int(ph.l3_index)


def run_once(series: Path, out: Path, slices: str | None, segmenter: str | None) -> dict[str, float]:
    from sarcoscope.cli.analyze import write_outputs
    from sarcoscope.pipeline import analyze
    from sarcoscope.settings import AnalysisSettings

    t0 = time.perf_counter()
    result = analyze(series, AnalysisSettings(slices=slices, segmenter=segmenter))  # type: ignore[arg-type]
    written = write_outputs(result, out_dir=out)
    total = time.perf_counter() - t0
    timings = dict(result.timings_s)
    timings["write"] = written.write_s
    timings["total"] = total
    timings["slice"] = float(result.choice.indices[0])
    timings["decoded"] = float(result.volume.hu.shape[0] + (
        result.overview.hu.shape[0] if getattr(result, "overview", None) is not None else 0))
    return timings


def _proc_status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB → MiB
    except OSError:
        return None
    return None


def _child(series: str, out: str, slices: str | None, segmenter: str | None, queue) -> None:
    """Peak RSS of one analysis in a fresh process (Linux: VmHWM, reset after the imports)."""
    import sarcoscope.cli.analyze  # noqa: F401  (imports counted in the baseline RSS)
    import sarcoscope.pipeline  # noqa: F401
    import sarcoscope.segment.baseline  # noqa: F401

    before = _proc_status_mib("VmRSS")
    try:  # reset the high-water mark so it measures the analysis, not the imports
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    run_once(Path(series), Path(out), slices, segmenter)
    peak = _proc_status_mib("VmHWM")
    queue.put((before, peak))


def peak_memory(series: Path, out: Path, slices: str | None, segmenter: str | None):
    """(RSS after imports, peak RSS) in MiB, or None where /proc is unavailable (not Linux).

    ``ru_maxrss`` is not used: on Linux it survives exec, so a child started from this big
    parent would report the parent's peak.
    """
    if not Path("/proc/self/status").exists():
        return None
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(str(series), str(out), slices, segmenter, q))
    p.start()
    result = q.get(timeout=600)
    p.join()
    if result[0] is None or result[1] is None:
        return None
    return result


def _loadavg() -> float | None:
    try:
        import os

        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices-n", type=int, default=300, help="number of slices (default 300)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--coverage", default="abdomen", help="phantom coverage (phantom.COVERAGES)")
    ap.add_argument("--segmenter", choices=("baseline", "model"), default=None,
                    help="default: what analyze uses by default")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "sarcoscope-bench")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--transfer-syntax", default="explicit-le",
                    help="phantom.TRANSFER_SYNTAXES, e.g. jpeg2000 (default explicit-le)")
    ap.add_argument("--cases", default="whole,given,single",
                    help="comma list of whole,given,single (default all three)")
    args = ap.parse_args()

    import numpy as np

    from sarcoscope.errors import L3NotFound

    series, l3 = make_series(args.cache, args.slices_n, args.seed, args.coverage, args.transfer_syntax)
    load0 = _loadavg()
    n_files = len(list(series.glob("*")))
    hu_mb = args.slices_n * 512 * 512 * 2 / 2**20
    print(f"series: {series} ({n_files} files), true L3 slice {l3}; HU array {hu_mb:.0f} MiB int16")
    report: dict[str, object] = {"n_slices": args.slices_n, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        single = sorted(series.iterdir())[l3]  # the L3 slice exported alone, as researchers do
        cases = (
            ("whole", "whole series (auto L3)", series, None),
            ("given", f"one given slice of the series (--slices {l3})", series, str(l3)),
            ("single", f"one given slice as a single DICOM file ({single.name})", single, None),
        )
        wanted = set(args.cases.split(","))
        for key, case, source, slices in cases:
            if key not in wanted:
                continue
            try:
                run_once(source, out, slices, args.segmenter)  # warm-up: imports, model, page cache
            except L3NotFound as exc:
                print(f"\n{case}: L3 finder failed on this phantom: {exc}")
                report[case] = {"error": str(exc)}
                continue
            runs = [run_once(source, out, slices, args.segmenter) for _ in range(args.repeats)]
            med = {k: statistics.median(r[k] for r in runs) for k in (*STAGES, "total")}
            spread = (min(r["total"] for r in runs), max(r["total"] for r in runs))
            mem = peak_memory(source, out, slices, args.segmenter)
            print(f"\n{case}: analysed slice {int(runs[0]['slice'])}, "
                  f"{int(runs[0]['decoded'])} slice(s) decoded")
            print(f"  median total {med['total']:.3f} s  (min {spread[0]:.3f}, max {spread[1]:.3f}, n={len(runs)})")
            print("  " + "  ".join(f"{k} {med[k]:.3f}" for k in STAGES))
            if mem is not None:
                print(f"  peak RSS {mem[1]:.0f} MiB (after imports {mem[0]:.0f} MiB; "
                      f"+{mem[1] - mem[0]:.0f} MiB for the analysis = {(mem[1] - mem[0]) / hu_mb:.1f}× the HU array)")
            report[case] = {"median_s": med, "min_total_s": spread[0], "max_total_s": spread[1],
                            "peak_rss_mib": None if mem is None else {"after_imports": mem[0], "peak": mem[1]},
                            "slice": int(runs[0]["slice"])}
    report["numpy"] = np.__version__
    report["loadavg_start_end"] = [load0, _loadavg()]
    print(f"\nload average (1 min) at start {load0}, at end {report['loadavg_start_end'][1]} "
          "(runnable processes on this machine's cores)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
