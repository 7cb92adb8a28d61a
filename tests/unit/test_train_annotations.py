"""Reference masks: Slice-O-Matic .tag files, orientation into display order, value maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sarcoscope.errors import InputError
from sarcoscope.train.annotations import (
    DEFAULT_TAG_MAP,
    apply_value_map,
    find_pairs,
    load_reference,
    read_tag,
    stored_to_display_2d,
)
from sarcoscope.types import CTVolume, SeriesInfo, SourceGrid


def _tag_bytes(raw: np.ndarray, header: str = "") -> bytes:
    h = header or f"width: {raw.shape[1]} height: {raw.shape[0]}\n"
    return h.encode("ascii") + b"\x0c" + raw.astype(np.uint8).tobytes()


def _volume(rows: int, cols: int, flips: tuple[bool, bool, bool]) -> CTVolume:
    grid = SourceGrid(shape=(1, rows, cols), affine=np.eye(4), axes=(0, 1, 2), flips=flips)
    return CTVolume(
        hu=np.zeros((1, rows, cols), dtype=np.int16), affine=np.eye(4),
        series=SeriesInfo(source_path="x", format="dicom"), source_grid=grid,
    )


def test_read_tag_and_alberta_map(tmp_path: Path) -> None:
    raw = np.array([[0, 1, 2], [5, 7, 9]], dtype=np.uint8)
    path = tmp_path / "a.dcm.tag"
    path.write_bytes(_tag_bytes(raw))
    got = read_tag(path, (2, 3))
    assert got.tolist() == raw.tolist()
    assert apply_value_map(got, DEFAULT_TAG_MAP, "t").tolist() == [[0, 1, 2], [3, 4, 0]]


def test_tag_errors_are_specific(tmp_path: Path) -> None:
    path = tmp_path / "bad.tag"
    path.write_bytes(b"no form feed here")
    with pytest.raises(InputError, match="form-feed"):
        read_tag(path, (2, 2))
    path.write_bytes(_tag_bytes(np.zeros((2, 2)), header="x"))
    with pytest.raises(InputError, match="truncated"):
        read_tag(path, (3, 3))
    path.write_bytes(_tag_bytes(np.zeros((2, 2))))
    with pytest.raises(InputError, match="header says 2x2"):
        read_tag(path, (4, 4))


def test_stored_rows_flipped_into_display_order(tmp_path: Path) -> None:
    raw = np.arange(6, dtype=np.uint8).reshape(2, 3)
    vol = _volume(2, 3, (False, True, False))  # rows stored posterior→anterior (explicit_VR-UN.dcm)
    assert stored_to_display_2d(raw, vol).tolist() == raw[::-1].tolist()
    tag = tmp_path / "img.dcm.tag"
    tag.write_bytes(_tag_bytes(np.array([[1, 1, 1], [7, 7, 7]], dtype=np.uint8)))
    (ref,) = load_reference(tag, vol)
    assert ref.k == 0 and ref.labels.tolist() == [[4, 4, 4], [1, 1, 1]]


def test_find_pairs(tmp_path: Path) -> None:
    (tmp_path / "a.dcm").write_bytes(b"x")
    (tmp_path / "a.dcm.tag").write_bytes(b"x")
    (tmp_path / "b.dcm").write_bytes(b"x")
    (tmp_path / "b.nii.gz").write_bytes(b"x")
    (tmp_path / "c.dcm").write_bytes(b"x")  # no reference: skipped
    pairs = find_pairs(tmp_path)
    assert [(i.name, r.name) for i, r in pairs] == [("a.dcm", "a.dcm.tag"), ("b.dcm", "b.nii.gz")]
    with pytest.raises(InputError, match="not a folder"):
        find_pairs(tmp_path / "a.dcm")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image with a reference"):
        find_pairs(tmp_path / "empty")
