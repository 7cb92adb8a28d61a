"""Read-time and peak-memory benchmark for sarcoscope.io against a naive pydicom reader.

Usage: .venv/bin/python benchmarks/bench_io.py [n_slices]   (median of 3 repeats; baseline in the same run)
"""
import gc, statistics, sys, tempfile, time, tracemalloc
from pathlib import Path
import numpy as np
import pydicom
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.unit.test_io_factory
from sarcoscope.io import discover_series, load_series, read_ct
from tests.unit.test_io_factory import write_series


def med(fn, repeats=3):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def naive(folder):
    """What a first reader often does: read every file whole, stack, rescale in float."""
    dss = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    return np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss]).astype(np.float32)


def peak(fn):
    gc.collect(); tracemalloc.start(); tracemalloc.reset_peak()
    out = fn(); p = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
    return p, out


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "s"
        write_series(folder, n=n, rows=512, cols=512, dz=1.0, z0=-50)
        read_ct(folder); naive(folder)  # warm imports and page cache
        t_disc = med(lambda: discover_series(folder))
        t_full = med(lambda: read_ct(folder, workers=1))
        t_naive = med(lambda: naive(folder))
        (c,) = discover_series(folder)
        t_one = med(lambda: load_series(c, range(n // 2, n // 2 + 1), workers=1))
        p_ours, vol = peak(lambda: read_ct(folder, workers=1))
        p_naive, arr = peak(lambda: naive(folder))
        print(f"uncompressed 512x512x{n}: discover {t_disc*1e3/n:.2f} ms/file; read_ct {t_full*1e3/n:.2f} ms/slice "
              f"({t_full:.2f} s) vs naive pydicom {t_naive*1e3/n:.2f} ms/slice ({t_naive:.2f} s); "
              f"load_series 1 slice (decode only) {t_one*1e3:.1f} ms")
        print(f"peak memory / int16 HU array ({vol.hu.nbytes/2**20:.0f} MiB): read_ct {p_ours/vol.hu.nbytes:.2f}x, "
              f"naive {p_naive/vol.hu.nbytes:.2f}x")
    j2k = Path("/work/shared/data/real-ct/ts-liver-dome-j2k")
    read_ct(j2k)
    t = med(lambda: read_ct(j2k, workers=1))
    (c,) = discover_series(j2k)
    t_h = med(lambda: discover_series(j2k))
    t_one = med(lambda: load_series(c, range(10, 11), workers=1))
    print(f"JPEG2000 512x512x20 (real): discover {t_h*1e3/20:.2f} ms/file; read_ct {t*1e3/20:.1f} ms/slice ({t:.2f} s); "
          f"1 slice {t_one*1e3:.1f} ms")


if __name__ == "__main__":
    main()
