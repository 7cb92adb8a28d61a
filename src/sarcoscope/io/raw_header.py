"""A minimal DICOM header walker for the common case, ~20× cheaper than ``pydicom.dcmread``.

The header pass reads every file of a series; with pydicom each file costs ~2.5 ms even with
``stop_before_pixels`` (it builds a ``Dataset`` of every element, validates values, converts
the file meta), which made reading 300 headers cost as much as decoding all the pixels.
This walker reads the first bytes of a file and only records the raw values of the few tags
the reader uses (``WANTED``), skipping everything else by its length, up to the PixelData tag.

It handles only what it can do exactly — Part 10 files (preamble + ``DICM``) whose data set is
implicit or explicit VR little endian (every compressed syntax included), single-frame, with
Rows, Columns and PixelData present — and returns ``None`` for anything else (big endian,
deflate, enhanced multi-frame, no pixels, truncated or odd headers), so the caller falls back
to pydicom, which also produces the specific error messages for damaged files.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

import numpy as np

#: keyword → (tag, VR as in the data dictionary) of every value the reader uses.
WANTED: dict[str, tuple[int, str]] = {
    "SOPClassUID": (0x00080016, "UI"),
    "SOPInstanceUID": (0x00080018, "UI"),
    "ImageType": (0x00080008, "CS"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "FrameOfReferenceUID": (0x00200052, "UI"),
    "Modality": (0x00080060, "CS"),
    "Manufacturer": (0x00080070, "LO"),
    "SeriesDescription": (0x0008103E, "LO"),
    "PatientID": (0x00100020, "LO"),  # only hashed, to tell patients apart; never kept or shown
    "PatientSex": (0x00100040, "CS"),
    "PatientAge": (0x00101010, "AS"),
    "PatientSize": (0x00101020, "DS"),
    "PatientWeight": (0x00101030, "DS"),
    "BodyPartExamined": (0x00180015, "CS"),
    "SliceThickness": (0x00180050, "DS"),
    "ReconstructionDiameter": (0x00181100, "DS"),
    "ConvolutionKernel": (0x00181210, "SH"),
    "SeriesNumber": (0x00200011, "IS"),
    "InstanceNumber": (0x00200013, "IS"),
    "ImagePositionPatient": (0x00200032, "DS"),
    "ImageOrientationPatient": (0x00200037, "DS"),
    "SamplesPerPixel": (0x00280002, "US"),
    "PhotometricInterpretation": (0x00280004, "CS"),
    "NumberOfFrames": (0x00280008, "IS"),
    "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"),
    "PixelSpacing": (0x00280030, "DS"),
    "BitsAllocated": (0x00280100, "US"),
    "BitsStored": (0x00280101, "US"),
    "PixelRepresentation": (0x00280103, "US"),
    "PixelPaddingValue": (0x00280120, "US"),
    "PixelPaddingRangeLimit": (0x00280121, "US"),
    "RescaleIntercept": (0x00281052, "DS"),
    "RescaleSlope": (0x00281053, "DS"),
}
_WANTED_TAGS = {tag: key for key, (tag, _) in WANTED.items()}
#: Present at the top level → enhanced (multi-frame) geometry: leave it to pydicom.
_FUNCTIONAL_GROUPS = (0x52009229, 0x52009230)
_PIXEL_DATA = 0x7FE00010
_META_KEYS = {
    0x00020002: "MediaStorageSOPClassUID",
    0x00020003: "MediaStorageSOPInstanceUID",
    0x00020010: "TransferSyntaxUID",
}
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "SH", "TM", "UI"})
_IMPLICIT_LE = "1.2.840.10008.1.2"
#: Data sets in these syntaxes are not little-endian element streams.
_NOT_WALKABLE = frozenset({"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_TAG = struct.Struct("<HH")
#: Bytes read at first; headers with large private blocks get one bigger read.
_FIRST_READ = 16 * 1024
_MAX_READ = 512 * 1024


class _Truncated(Exception):
    """The bytes read so far end inside the header."""


class RawMeta:
    """File meta values as strings (the interface ``dicom_headers._str`` expects)."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values

    def get(self, keyword: str, default: Any = None) -> Any:
        return self._values.get(keyword, default)


class RawHeader:
    """The wanted header values of one file, decoded like ``dicom_headers.FastHeader.get``.

    Text values come back as a ``str`` (or a list of ``str`` for multi-valued elements), US/SS
    as ``int`` (or a list); absent or empty elements as ``None``.
    """

    def __init__(self, raw: dict[int, tuple[str, bytes]], meta: dict[str, str]) -> None:
        self._raw = raw
        self.file_meta = RawMeta(meta)

    def __contains__(self, keyword: str) -> bool:
        return WANTED[keyword][0] in self._raw if keyword in WANTED else False

    def get(self, keyword: str, default: Any = None) -> Any:
        spec = WANTED.get(keyword)
        if spec is None:
            return default
        tag, dict_vr = spec
        item = self._raw.get(tag)
        if item is None:
            return default
        vr, raw = item
        if not raw:
            return None
        if vr not in _TEXT_VRS and vr not in ("US", "SS"):
            vr = dict_vr
        if vr in _TEXT_VRS:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            parts = [p.strip() for p in text.rstrip(" \x00").split("\\")]
            return parts if len(parts) > 1 else parts[0]
        if len(raw) % 2:
            return None
        values = np.frombuffer(raw, dtype="<i2" if vr == "SS" else "<u2").tolist()
        return values if len(values) > 1 else values[0]


def read_raw_header(fh: BinaryIO) -> tuple[RawHeader, int] | None:
    """(header, stream offset of the PixelData tag), or ``None`` when pydicom must read it.

    Leaves the stream position unspecified; the caller seeks back before falling back.
    """
    start = fh.tell()
    buf = fh.read(_FIRST_READ)
    while True:
        try:
            parsed = _parse(buf)
        except _Truncated:
            if len(buf) >= _MAX_READ or len(buf) < _FIRST_READ:
                return None  # the file ends inside its header: pydicom explains
            fh.seek(start)
            buf = fh.read(_MAX_READ)
            continue
        except (struct.error, ValueError, IndexError):
            return None
        if parsed is None:
            return None
        header, offset = parsed
        return header, start + offset


def _parse(buf: bytes) -> tuple[RawHeader, int] | None:
    if len(buf) < 132 or buf[128:132] != b"DICM":
        return None
    # File meta: always explicit VR little endian, group 0x0002 first.
    meta: dict[str, str] = {}
    pos = 132
    while True:
        if pos + 8 > len(buf):
            raise _Truncated
        group, _ = _TAG.unpack_from(buf, pos)
        if group != 0x0002:
            break
        tag, vr, length, hdr = _explicit_element(buf, pos)
        if length == _UNDEFINED:
            return None
        end = pos + hdr + length
        if end > len(buf):
            raise _Truncated
        key = _META_KEYS.get(tag)
        if key is not None:
            meta[key] = buf[pos + hdr : end].decode("latin-1").rstrip(" \x00").strip()
        pos = end
    syntax = meta.get("TransferSyntaxUID", "")
    if not syntax or syntax in _NOT_WALKABLE:
        return None
    explicit = syntax != _IMPLICIT_LE
    raw: dict[int, tuple[str, bytes]] = {}
    # The hot loop of the header pass (~60 elements a file): inlined, no calls per element.
    n = len(buf)
    tag_at, u16_at, u32_at = _TAG.unpack_from, _U16.unpack_from, _U32.unpack_from
    wanted, long_vrs = _WANTED_TAGS, _LONG_VRS
    while True:
        if pos + 12 > n:
            raise _Truncated
        group, elem = tag_at(buf, pos)
        tag = (group << 16) | elem
        if tag == _PIXEL_DATA:
            break
        if group == 0xFFFE or tag in _FUNCTIONAL_GROUPS:
            return None
        if explicit:
            vr_bytes = buf[pos + 4 : pos + 6]
            if vr_bytes in long_vrs:
                length, hdr = u32_at(buf, pos + 8)[0], 12
            elif vr_bytes.isalpha() and vr_bytes.isupper():
                length, hdr = u16_at(buf, pos + 6)[0], 8
            else:
                return None  # not an explicit VR where one must be: let pydicom judge
        else:
            vr_bytes, length, hdr = b"", u32_at(buf, pos + 4)[0], 8
        if length == _UNDEFINED:
            pos = _skip_undefined(buf, pos + hdr, explicit)
            continue
        end = pos + hdr + length
        key = wanted.get(tag)
        if key is not None:
            if end > n:
                raise _Truncated
            vr = vr_bytes.decode("ascii") if vr_bytes else WANTED[key][1]
            raw[tag] = (vr, buf[pos + hdr : end])
        pos = end
    pixel_offset = pos
    header = RawHeader(raw, meta)
    if not header.get("Rows") or not header.get("Columns"):
        return None  # an image without its size: pydicom reports the damage
    frames = header.get("NumberOfFrames")
    if frames not in (None, "1"):
        return None
    return header, pixel_offset


def _explicit_element(buf: bytes, pos: int) -> tuple[int, str, int, int]:
    if pos + 12 > len(buf):
        raise _Truncated
    group, elem = _TAG.unpack_from(buf, pos)
    vr = buf[pos + 4 : pos + 6]
    if vr in _LONG_VRS:
        return (group << 16) | elem, vr.decode("ascii"), _U32.unpack_from(buf, pos + 8)[0], 12
    if not (vr.isalpha() and vr.isupper()):
        raise ValueError(f"not an explicit VR: {vr!r}")
    return (group << 16) | elem, vr.decode("ascii"), _U16.unpack_from(buf, pos + 6)[0], 8


def _skip_undefined(buf: bytes, pos: int, explicit: bool) -> int:
    """Position after the sequence delimiter of an undefined-length sequence starting at ``pos``."""
    while True:
        if pos + 8 > len(buf):
            raise _Truncated
        group, elem = _TAG.unpack_from(buf, pos)
        tag = (group << 16) | elem
        length = _U32.unpack_from(buf, pos + 4)[0]
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise ValueError(f"unexpected tag {tag:08X} inside a sequence")
        if length != _UNDEFINED:
            pos += length
            continue
        pos = _skip_item(buf, pos, explicit)


def _skip_item(buf: bytes, pos: int, explicit: bool) -> int:
    """Position after the item delimiter of an undefined-length item starting at ``pos``."""
    while True:
        if pos + 8 > len(buf):
            raise _Truncated
        group, elem = _TAG.unpack_from(buf, pos)
        tag = (group << 16) | elem
        if tag == _ITEM_END:
            return pos + 8
        if explicit:
            _, _, length, hdr = _explicit_element(buf, pos)
        else:
            length, hdr = _U32.unpack_from(buf, pos + 4)[0], 8
        if length == _UNDEFINED:
            pos = _skip_undefined(buf, pos + hdr, explicit)
        else:
            pos += hdr + length
