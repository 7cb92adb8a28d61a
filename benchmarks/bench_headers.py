"""Header pass of a DICOM series: pydicom ``dcmread`` vs the raw walker (``io.raw_header``).

Usage::

    .venv/bin/python benchmarks/bench_headers.py [FOLDER] [--repeats 5]

Default folder: the 512×512×300 phantom series ``bench_analyze.py`` caches. Prints the median
wall time of ``scan_headers`` over all files both ways, in the same process, and checks that
both give the same frame headers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sarcoscope.io.dicom_headers import scan_headers
from sarcoscope.io.sources import list_sources

DEFAULT = Path(tempfile.gettempdir()) / "sarcoscope-bench" / "phantom-512x512x300-abdomen-seed0" / "dicom"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, nargs="?", default=DEFAULT)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    refs = list_sources(args.folder)
    scans = {}
    for use_raw in (False, True, False, True):  # interleaved: both see the same load
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            scans[use_raw] = scan_headers(refs, use_raw=use_raw)
            times.append(time.perf_counter() - t0)
        label = "raw walker" if use_raw else "pydicom   "
        print(f"{label}: median {statistics.median(times):.3f} s (min {min(times):.3f}, "
              f"max {max(times):.3f}) for {len(refs)} files")
    print("same frame headers:", scans[False] == scans[True])


if __name__ == "__main__":
    main()
