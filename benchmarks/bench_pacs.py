"""Time from "analyze this accession" to results stored back in Orthanc, split into steps.

Starts a private Orthanc (tests/integration/orthanc.py: 127.0.0.1, temporary storage, free
ports), loads a synthetic 300-slice abdominal phantom study (``phantom.make_volume``,
coverage "abdomen", written by ``phantom.write_dicom_series``) with dcmtk's storescu, then repeats
``sarcoscope pacs analyze NODE --accession N --send-back`` (in-process: ``run_pacs_analysis``)
and reports the median of each step: query (C-FIND study + series), retrieve (C-GET of the
chosen series, or WADO-RS), analyse (pipeline + overlay + SEG/SR/SC writing), send (C-STORE).
Baseline in the same run: the same analysis on a local copy of the series (no PACS), so the
PACS overhead is shown as a ratio.

    .venv/bin/python benchmarks/bench_pacs.py --slices 300 --repeats 5
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300, help="slices in the phantom study")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--via", default="get", choices=["get", "move", "wado"])
    ap.add_argument("--syntax", default="explicit-le", help="phantom transfer syntax (explicit-le, rle, jpegls, jpeg2000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from tests.integration.orthanc import (OUR_AET, OrthancServer, ensure_peers, free_port, storescu,
                                           write_phantom_study)

    from sarcoscope.errors import L3NotFound

    from sarcoscope.cli.pacs import analyse_folder, run_pacs_analysis
    from sarcoscope.pacs.config import LocalNode, PacsNode
    from sarcoscope.settings import AnalysisSettings

    ensure_peers()
    tmp = Path(tempfile.mkdtemp(prefix="bench-pacs-"))
    server = OrthancServer(tmp / "orthanc", receiver_port=free_port()).start()
    try:
        ph = write_phantom_study(tmp / "phantom", seed=args.seed, n_slices=args.slices, coverage="abdomen",
                                 transfer_syntax=args.syntax, accession="BENCH300")
        files, study = ph["files"], ph["study"]
        t0 = time.perf_counter()
        storescu(server, files)
        load_s = time.perf_counter() - t0
        node = PacsNode("orthanc", server.aet, "127.0.0.1", server.dicom_port, dicomweb_url=server.dicomweb_url,
                        timeout_s=60)
        local = LocalNode(ae_title=OUR_AET, port=server.receiver_port, work_dir=tmp / "work")
        settings = AnalysisSettings(segmenter="baseline")  # automatic L3
        try:
            analyse_folder(tmp / "phantom", settings, tmp / "probe")
            how = f"automatic L3 (true L3 index {ph['l3_index']})"
        except L3NotFound as exc:
            settings = AnalysisSettings(slices=str(ph["l3_index"]), segmenter="baseline")
            how = f"--slices {ph['l3_index']} (true L3; the locator did not find L3: {exc})"
        steps: dict[str, list[float]] = {k: [] for k in ("query", "retrieve", "analyse", "send", "total")}
        base: list[float] = []
        for i in range(args.repeats):
            for s in server.series_in_study(study):  # each repeat really stores its results
                if s["manufacturer"] == "sarcoscope":
                    server.delete(f"/series/{server.post('/tools/lookup', s['uid'].encode())[0]['ID']}")
            t0 = time.perf_counter()
            run = run_pacs_analysis(node, local, settings, accession="BENCH300", via=args.via, send_back=True,
                                    out_dir=tmp / f"out{i}")
            total = time.perf_counter() - t0
            for k in ("query", "retrieve", "analyse", "send"):
                steps[k].append(run.timings_s[k])
            steps["total"].append(total)
            assert len(run.stored_uids) == 3 and run.n_retrieved == args.slices
            chosen = run.result.choice.indices
            # baseline: the same analysis from a local folder (no PACS)
            local_copy = tmp / "local"
            if not local_copy.exists():
                shutil.copytree(tmp / "phantom", local_copy)
            t0 = time.perf_counter()
            analyse_folder(local_copy, settings, tmp / f"base{i}")
            base.append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in steps.items()}
        print(f"phantom study: {args.slices} slices, {args.syntax}, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB;"
              f" loaded into Orthanc with storescu in {load_s:.2f} s")
        print(f"via {args.via}, send-back C-STORE, segmenter baseline, {how}; median of {args.repeats}")
        print(f"  analysed slice(s) {chosen} ({run.result.choice.method})")
        for k in ("query", "retrieve", "analyse", "send", "total"):
            print(f"  {k:9s} {med[k]:7.2f} s   (runs: {', '.join(f'{v:.2f}' for v in steps[k])})")
        other = [t - sum(steps[k][i] for k in ("query", "retrieve", "analyse", "send")) for i, t in enumerate(steps["total"])]
        print(f"  (other: audit log, clean-up of retrieved images: median {statistics.median(other):.2f} s)")
        b = statistics.median(base)
        print(f"  baseline: same analysis from a local folder {b:.2f} s; PACS total / local = {med['total'] / b:.2f}x")
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
