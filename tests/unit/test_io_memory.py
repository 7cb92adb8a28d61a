"""Peak memory of reading a DICOM series, measured with tracemalloc (numpy reports to it).

Scaling argument: ``read_ct`` preallocates the output and decodes one slice at a time, so the
peak is ``output + c_slice + n_files × header_record``. The marginal cost of one more slice
must be about one output slice (the header record is a few hundred bytes), so for a
512×512×1000 series the peak stays close to 1× its HU array — well inside the 3× budget. The
test measures the ratio on a small series and the marginal slope between two sizes.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

from sarcoscope.io import read_ct
from tests.unit.test_io_factory import write_series


def _peak_bytes(folder: Path) -> tuple[int, int]:
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        vol = read_ct(folder, workers=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, vol.hu.nbytes


def test_peak_memory_stays_within_three_times_the_hu_array(tmp_path: Path) -> None:
    write_series(tmp_path / "a", n=16, rows=128, cols=128, dz=1.0)
    write_series(tmp_path / "b", n=48, rows=128, cols=128, dz=1.0)
    read_ct(tmp_path / "a")  # warm up: lazy imports of decoders must not count as reading cost
    peak_a, size_a = _peak_bytes(tmp_path / "a")
    peak_b, size_b = _peak_bytes(tmp_path / "b")
    ratio_b = peak_b / size_b
    slope = (peak_b - peak_a) / (size_b - size_a)
    print(f"peak/HU array: {peak_a / size_a:.2f} (16 slices), {ratio_b:.2f} (48 slices); marginal {slope:.2f}")
    assert ratio_b < 3.0
    # one more slice costs about one output slice, not a dataset + a stacked copy
    assert slope < 1.5
