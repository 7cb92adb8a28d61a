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
    raw = np.array([[0, 1, 2], [5, 7, 0]], dtype=np.uint8)
    path = tmp_path / "a.dcm.tag"
    path.write_bytes(_tag_bytes(raw))
    got = read_tag(path, (2, 3))
    assert got.tolist() == raw.tolist()
    assert apply_value_map(got, DEFAULT_TAG_MAP, "t").tolist() == [[0, 1, 2], [3, 4, 0]]
    assert apply_value_map(got, {**DEFAULT_TAG_MAP, 7: 0}, "t").tolist() == [[0, 1, 2], [3, 0, 0]]  # 0: ignore


def test_unmapped_tag_value_is_refused(tmp_path: Path) -> None:
    """A site storing SAT as 9 once got SAT counted as background (an INFO line only)."""
    path = tmp_path / "a.dcm.tag"
    path.write_bytes(_tag_bytes(np.array([[0, 1, 9], [5, 9, 9]], dtype=np.uint8)))
    with pytest.raises(InputError, match=r"a\.dcm\.tag: mask values 9 \(3 pixels\) are not in the label map "
                       r"1=1,2=2,5=3,7=4.*--label-map") as info:
        load_reference(path, _volume(2, 3, (False, False, False)))
    assert str(path) in str(info.value)


def test_tag_map_on_a_nifti_label_map_is_refused(tmp_path: Path) -> None:
    """`evaluate --references x.nii.gz --label-map 1=1,2=2,5=3,7=4` once scored VAT and SAT against
    an empty reference (Dice 0); the values the map drops are now named."""
    import nibabel as nib

    labels = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    ref = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(labels[:, :, None], np.diag([-1.0, -1.0, 1.0, 1.0])), str(ref))
    vol = CTVolume(hu=np.zeros((1, 2, 2), dtype=np.int16), affine=np.eye(4),
                   series=SeriesInfo(source_path="x", format="dicom"))
    with pytest.raises(InputError, match=r"x\.nii\.gz: mask values 3 \(1 pixels\), 4 \(1 pixels\) are not in"):
        load_reference(ref, vol, DEFAULT_TAG_MAP)
    (got,) = load_reference(ref, vol)  # our labels need no map
    assert sorted(np.unique(got.labels).tolist()) == [1, 2, 3, 4]


def _body_tag(size: int) -> np.ndarray:
    """A tag as drawn on a CT: background rows above and below the body (SAT ring, muscle inside)."""
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    r2 = (xx / 0.42) ** 2 + (yy / 0.3) ** 2
    tag = np.where(r2 < 1.0, 7, 0).astype(np.uint8)
    tag[r2 < 0.6] = 1
    return tag


@pytest.mark.parametrize("header", ["width: 320 height: 320\n", "[SliceOmatic] version 5.0\n"])
@pytest.mark.parametrize("pad", [b"\x00", b" "])
def test_tag_padded_after_the_form_feed_is_read(tmp_path: Path, header: str, pad: bytes) -> None:
    """Writers that pad the header to a block size after the form feed: the pixels are the last
    rows x columns bytes (such files were refused outright for a while)."""
    tag = _body_tag(320)
    head = header.encode() + b"\x0c"
    path = tmp_path / "padded.tag"
    path.write_bytes(head + pad * (1024 - len(head)) + tag.tobytes())
    assert np.array_equal(read_tag(path, (320, 320)), tag)


@pytest.mark.parametrize(
    ("header", "body", "extra", "message"),
    [
        # a 512x512 tag (no size in its header) paired with a 320x320 slice
        ("[SliceOmatic] version 5.0\n", _body_tag(512).tobytes(), b"",
         r"262144 pixel bytes after the header \(that is a 512x512 image\), but the paired 320 rows x 320 columns "
         r"image needs 102400: 159744 bytes too many, and those before the last 102400 are not padding"),
        # the right size in the header, then 1000 bytes of other data after the pixels; the image's
        # first rows are background, so the bytes before the last 102400 look like padding
        ("width: 320 height: 320\n", _body_tag(320).tobytes(), bytes(range(1, 251)) * 4,
         r"103400 pixel bytes after the header, but the paired 320 rows x 320 columns image needs 102400: "
         r"1000 bytes too many, and the file ends in non-zero bytes: trailing data after the pixels"),
        ("width: 4 height: 4\n", np.ones((5, 4), np.uint8).tobytes(), b"", r"4 bytes too many, and those before"),
    ],
)
def test_tag_of_the_wrong_size_is_refused(tmp_path: Path, header: str, body: bytes, extra: bytes, message: str) -> None:
    """A larger image's tag or trailing bytes once gave a shifted mask."""
    assert not _body_tag(320)[:4].any()  # the top 1280 bytes are background: the trailing case is not
    path = tmp_path / "big.tag"           # refused merely because its start is not padding
    path.write_bytes(header.encode() + b"\x0c" + body + extra)
    rows = 4 if header.startswith("width: 4") else 320
    with pytest.raises(InputError, match=message) as info:
        read_tag(path, (rows, rows))
    assert str(info.value).startswith(str(path)) and "Export the tag again" in str(info.value)


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
    (tmp_path / "c.dcm").write_bytes(b"x")  # no reference: listed
    (tmp_path / "notes.txt").write_bytes(b"x")  # not an image: ignored
    pairs = find_pairs(tmp_path)
    assert [(i.name, r.name) for i, r in pairs] == [("a.dcm", "a.dcm.tag"), ("b.dcm", "b.nii.gz")]
    with pytest.raises(InputError, match="not a folder"):
        find_pairs(tmp_path / "a.dcm")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image with a reference"):
        find_pairs(tmp_path / "empty")


def test_unpaired_files_are_listed_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from sarcoscope.train.annotations import scan_pairs

    for name in ("a.dcm", "a.dcm.tag", "b.dcm", "b_seg.nii.gz", "sub/c.dcm", "sub/d.tag"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    with caplog.at_level("WARNING"):
        scan = scan_pairs(tmp_path)
    assert [i.name for i, _ in scan.pairs] == ["a.dcm"]
    assert scan.unpaired_text(tmp_path) == [
        "2 images without a reference mask (not used): b.dcm, sub/c.dcm",
        "2 masks without an image (not used): b_seg.nii.gz, sub/d.tag",
    ]
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "b.dcm, sub/c.dcm" in warned and "b_seg.nii.gz, sub/d.tag" in warned
