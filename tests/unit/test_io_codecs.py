"""Compressed transfer syntaxes and Enhanced (multi-frame) CT, on synthetic data."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from sarcoscope.io import read_ct
from sarcoscope.tissues import AIR_HU
from tests.unit.test_io_factory import expected_display_hu, make_slice, world_hu, write_series


def _compress_all(folder: Path, syntax: str, **kwargs) -> None:
    for p in folder.glob("*.dcm"):
        ds = pydicom.dcmread(p)
        ds.compress(syntax, **kwargs)
        ds.save_as(p)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda u: u.name)
def test_lossless_codecs_give_exact_hu(tmp_path: Path, syntax) -> None:
    # 64×48: the JPEG 2000 encoder needs images larger than its default 6 resolution levels
    write_series(tmp_path, n=3, orientation=(1, 0, 0, 0, -1, 0), rows=64, cols=48)
    _compress_all(tmp_path, syntax)
    assert pydicom.dcmread(next(tmp_path.glob("*.dcm"))).file_meta.TransferSyntaxUID == syntax
    vol = read_ct(tmp_path)
    np.testing.assert_array_equal(vol.hu.astype(np.int32), expected_display_hu(vol))


def test_jpeg_ls_near_lossless_padding_still_masked(tmp_path: Path) -> None:
    # Like CT1_JLSN: padding −2000 stored, near-lossless returns it only within ±NEAR.
    def fn(x, y, z):
        hu = np.full(x.shape, 50)
        hu[:, :3] = -3024
        return hu

    write_series(tmp_path, n=1, rows=24, cols=24, hu_fn=fn, pixel_representation=1, padding_value=-2000)
    _compress_all(tmp_path, JPEGLSNearLossless, jls_error=3)
    vol = read_ct(tmp_path)
    assert vol.hu.min() == AIR_HU
    assert np.all(vol.hu[0, :, :3] == AIR_HU)
    assert np.abs(vol.hu[0, 3:, 4:].astype(int) - 50).max() <= 3
    assert vol.padding_fraction >= (24 * 3) / (24 * 24)


def test_jpeg_baseline_8bit_decodes(tmp_path: Path) -> None:
    from PIL import Image

    ds = make_slice(position=(0, 0, -10), rows=32, cols=32)
    img = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.RescaleIntercept = "-100"
    ds.PixelData = encapsulate([buf.getvalue()])
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    vol = read_ct(tmp_path / "a.dcm")
    assert np.abs(vol.hu[0].astype(int) - (img.astype(int) - 100)).max() <= 4


def test_jpeg_extended_12bit_decodes(tmp_path: Path) -> None:
    # pydicom ships one JPEG extended (process 2/4) image (an NM scan); its compressed frame is
    # moved into a CT slice so that the whole read path runs on a real encoder's output.
    from pydicom.data import get_testdata_file

    src = pydicom.dcmread(get_testdata_file("JPGExtended.dcm"))
    ds = make_slice(position=(0, 0, -10), rows=int(src.Rows), cols=int(src.Columns))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = src.PixelData
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = src.file_meta.TransferSyntaxUID
    ds.save_as(tmp_path / "ext.dcm", enforce_file_format=True)
    vol = read_ct(tmp_path / "ext.dcm")
    np.testing.assert_array_equal(vol.hu[0], src.pixel_array.astype(np.int32) - 1024)


def _jpeg_lossless_sv1(image: np.ndarray) -> bytes:
    """A minimal JPEG Lossless (process 14, selection value 1) encoder for 16-bit grey images.

    No encoder for this syntax ships with our dependencies; this one follows ITU T.81 Annex H
    (predictor 1 = left neighbour, first column predicted from above, first pixel from 2^15)
    with one Huffman table giving all 17 difference categories a 5-bit code.
    """
    rows, cols = image.shape
    img = image.astype(np.int64) & 0xFFFF
    pred = np.empty_like(img)
    pred[0, 0] = 1 << 15
    pred[0, 1:] = img[0, :-1]
    pred[1:, 0] = img[:-1, 0]
    pred[1:, 1:] = img[1:, :-1]
    diff = (img - pred) % 65536
    diff = np.where(diff >= 32768, diff - 65536, diff)  # −32768…32767
    bits: list[str] = []
    for d in diff.ravel().tolist():
        if d == -32768:  # category 16 stands for 32768 ≡ −32768 (mod 2^16), no extra bits
            bits.append(format(16, "05b"))
            continue
        s = abs(d).bit_length()
        bits.append(format(s, "05b"))
        if s:
            bits.append(format(d if d > 0 else (d - 1) & ((1 << s) - 1), f"0{s}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    data = bytearray()
    for i in range(0, len(stream), 8):
        byte = int(stream[i : i + 8], 2)
        data.append(byte)
        if byte == 0xFF:
            data.append(0x00)  # byte stuffing
    counts = [0] * 16
    counts[4] = 17  # 17 codes of length 5
    dht = bytes([0x00]) + bytes(counts) + bytes(range(17))
    sof = bytes([16]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    sos = bytes([1, 1, 0x00, 1, 0, 0])

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    return b"\xff\xd8" + segment(0xC3, sof) + segment(0xC4, dht) + segment(0xDA, sos) + bytes(data) + b"\xff\xd9"


def test_jpeg_lossless_process14_decodes_exactly(tmp_path: Path) -> None:
    from pydicom.uid import JPEGLosslessSV1

    ds = make_slice(position=(5, -3, -20), rows=24, cols=20, pixel_representation=1, intercept=0)
    stored = ds.pixel_array
    frame = _jpeg_lossless_sv1(stored)
    for syntax, name in ((JPEGLosslessSV1, "sv1.dcm"), ("1.2.840.10008.1.2.4.57", "p14.dcm")):
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(tmp_path / name, enforce_file_format=True)
        vol = read_ct(tmp_path / name)
        np.testing.assert_array_equal(vol.hu.astype(np.int32), expected_display_hu(vol))


def _enhanced_ct(n: int = 3, rows: int = 16, cols: int = 12, order=None) -> Dataset:
    """Enhanced CT: geometry and rescale only in the functional groups, frames out of order."""
    base = make_slice(position=(0, 0, 0), rows=rows, cols=cols)
    ds = Dataset()
    ds.file_meta = base.file_meta
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Modality",
               "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
               "BitsStored", "HighBit", "PixelRepresentation"):
        setattr(ds, kw, getattr(base, kw))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = n
    orientation = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # columns run towards patient right, as in eCT
    spacing = (0.5, 0.75)
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = list(spacing)
    pm.SliceThickness = 2.0
    po = Dataset()
    po.ImageOrientationPatient = orientation
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = "1", "-1024", "HU"
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.PlaneOrientationSequence = Sequence([po])
    shared.PixelValueTransformationSequence = Sequence([pvt])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    order = list(order if order is not None else range(n))[::-1]  # superior frame first
    per_frame = []
    frames = []
    for s in order:
        position = [30.0, -10.0, -60.0 + 2.0 * s]
        fg = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = position
        fg.PlanePositionSequence = Sequence([pp])
        per_frame.append(fg)
        sl = make_slice(position=position, orientation=orientation, rows=rows, cols=cols, spacing=spacing)
        frames.append(sl.pixel_array)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.stack(frames).astype(np.uint16).tobytes()
    return ds


def test_enhanced_multiframe_geometry_and_rescale_from_functional_groups(tmp_path: Path) -> None:
    ds = _enhanced_ct()
    path = tmp_path / "enh.dcm"
    ds.save_as(path, enforce_file_format=True)
    vol = read_ct(path)
    assert vol.hu.shape == (3, 16, 12)
    a = vol.affine
    assert a[0, 0] > 0 and a[1, 1] > 0 and a[2, 2] > 0
    assert vol.spacing_mm == pytest.approx((2.0, 0.5, 0.75))
    np.testing.assert_array_equal(vol.hu.astype(np.int32), expected_display_hu(vol))
    assert vol.z_mm(0) < vol.z_mm(2)


def test_enhanced_multiframe_compressed(tmp_path: Path) -> None:
    ds = _enhanced_ct(n=4)
    ds.compress(RLELossless)
    path = tmp_path / "enh_rle.dcm"
    ds.save_as(path, enforce_file_format=True)
    vol = read_ct(path)
    assert vol.n_slices == 4
    np.testing.assert_array_equal(vol.hu.astype(np.int32), expected_display_hu(vol))


def test_world_function_sanity() -> None:
    # guards the fixtures: display HU range stays well above the padding threshold
    assert int(world_hu(np.array(30.0), np.array(-10.0), np.array(-60.0))) > -1500
