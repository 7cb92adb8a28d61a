"""Pixel decoding into a preallocated HU array, slice by slice, optionally in parallel.

Memory: the caller allocates the output once (int16 when every rescale is integral, else
float32); each frame is read, decoded, converted and written into its slot, so the peak is
the output plus a few slices per worker — not a list of datasets plus a stacked copy.

Padding: stored values equal to PixelPaddingValue (or within PixelPaddingValue…
PixelPaddingRangeLimit) become ``tissues.AIR_HU``. Scanners that omit the tag but fill the
area outside the reconstruction circle with one constant far below air (−2048, −3024 HU), and
lossy codecs that return the padding value only approximately, are handled the same way, with
a warning: pixels within a few HU of the dominant value below −1500 HU are padding, because no
real tissue or air is that low.

Damage: a decoder can return garbage without raising (a corrupt JPEG Lossless stream decodes
to noise). A frame where more than 1% of the pixels are physically impossible (below
−1500 HU) and not one padding value is reported as undecodable rather than measured.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from sarcoscope.errors import InputError
from sarcoscope.io.dicom_headers import FrameHeader, read_dataset
from sarcoscope.io.series import transfer_syntax_name
from sarcoscope.io.sources import Opener, SourceRef
from sarcoscope.tissues import AIR_HU

logger = logging.getLogger(__name__)

#: Below this HU a pixel cannot be tissue or air: air is about −1000 HU and reconstruction
#: noise around it stays above about −1450 HU (seen in a real Toshiba lung-kernel slice).
IMPOSSIBLE_HU = -1500
#: Padding that was lossy-compressed comes back within a few HU of its value (JPEG-LS
#: near-lossless CT1_JLSN: −3024 decodes to −3028…−3020).
PADDING_TOLERANCE_HU = 10
#: Fraction of impossible, non-padding pixels that marks a frame as damaged.
DAMAGED_FRACTION = 0.01

UNCOMPRESSED_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "")


def available_decoders() -> dict[str, tuple[str, ...]]:
    """Compressed transfer syntaxes CT uses → pydicom decoding plugins available for each.

    An empty tuple means files in that syntax cannot be read here (``sarcoscope info`` shows it).
    """
    from pydicom.pixels import get_decoder

    from sarcoscope.io.series import _TS_NAMES

    out: dict[str, tuple[str, ...]] = {}
    for uid, name in _TS_NAMES.items():
        if uid in UNCOMPRESSED_SYNTAXES or uid.endswith(".8.1"):
            out[name] = ("native",)
            continue
        try:
            out[name] = tuple(get_decoder(uid).available_plugins)
        except Exception:  # no decoder class at all for this syntax
            out[name] = ()
    return out


@dataclass(frozen=True)
class Placement:
    """How a stored 2-D frame lands in a display slice: transpose first, then flips."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    def apply(self, image: np.ndarray) -> np.ndarray:
        if self.transpose:
            image = image.T
        if self.flip_rows:
            image = image[::-1]
        if self.flip_cols:
            image = image[:, ::-1]
        return image


@dataclass(frozen=True)
class FrameStats:
    n_pixels: int
    n_padding: int  # declared + inferred padding pixels
    n_inferred: int  # padding pixels found without a PixelPaddingValue
    inferred_value_hu: float | None
    n_clipped: int  # HU outside the int16 range, clipped


def integral_rescale(frames: Sequence[FrameHeader]) -> bool:
    """True when every slope and intercept is an integer, so HU fit exactly in int16."""
    return all(float(f.slope).is_integer() and float(f.intercept).is_integer() for f in frames)


def clean_hu(
    hu: np.ndarray, pad: np.ndarray | None, damaged_message: str
) -> tuple[np.ndarray | None, int, float | None]:
    """Find unmarked padding and refuse damaged data in one HU slice (modified in place).

    Returns the full padding mask (declared | inferred, or None), the number of inferred
    padding pixels and the inferred padding value. ``damaged_message`` is the start of the
    ``InputError`` raised when too many pixels are impossible.
    """
    impossible = hu < IMPOSSIBLE_HU
    if pad is not None:
        impossible &= ~pad
    n_inferred = 0
    inferred_value = None
    if impossible.any():
        values, counts = np.unique(hu[impossible], return_counts=True)
        mode_value = float(values[int(np.argmax(counts))])
        near = np.abs(values - mode_value) <= PADDING_TOLERANCE_HU
        if counts[near].sum() >= 0.9 * counts.sum():
            inferred = impossible & (np.abs(hu - mode_value) <= PADDING_TOLERANCE_HU)
            n_inferred = int(inferred.sum())
            inferred_value = mode_value
            pad = inferred if pad is None else (pad | inferred)
            impossible &= ~inferred
        bad = int(impossible.sum())
        if bad > DAMAGED_FRACTION * hu.size:
            raise InputError(
                f"{damaged_message}: {100 * bad / hu.size:.0f}% of the pixels come out below "
                f"{IMPOSSIBLE_HU} HU, which is impossible in CT (air is about −1000 HU)"
            )
    return pad, n_inferred, inferred_value


def raw_to_hu(raw: np.ndarray, fh: FrameHeader, out_dtype: np.dtype, name: str) -> tuple[np.ndarray, FrameStats]:
    """Stored values → HU with padding replaced by AIR_HU (see module docstring)."""
    raw = np.asarray(raw)
    if raw.shape != (fh.rows, fh.columns):
        raise InputError(
            f"{name}: the pixel data could not be decoded: got an array of shape {raw.shape}, "
            f"the header says {fh.rows}x{fh.columns}; the file is damaged or not a grey-scale image"
        )
    declared: np.ndarray | None = None
    if fh.padding_value is not None:
        lo = fh.padding_value
        hi = fh.padding_limit if fh.padding_limit is not None else lo
        lo, hi = min(lo, hi), max(lo, hi)
        declared = raw == lo if lo == hi else (raw >= lo) & (raw <= hi)
    if np.dtype(out_dtype) == np.int16:
        hu = raw.astype(np.int32)
        if fh.slope != 1:
            hu *= int(fh.slope)
        if fh.intercept != 0:
            hu += int(fh.intercept)
    else:
        hu = raw.astype(np.float32)
        hu *= np.float32(fh.slope)
        hu += np.float32(fh.intercept)
    n_pad = 0
    if declared is not None:
        n_pad = int(np.count_nonzero(declared))
        if n_pad:
            hu[declared] = AIR_HU
    # Cheap common case: nothing below −1500 HU left, no need for masks (one pass each).
    n_inferred, inferred_value = 0, None
    if hu.min() < IMPOSSIBLE_HU:
        try:
            inferred, n_inferred, inferred_value = clean_hu(
                hu, None, f"{name}: the pixel data could not be decoded correctly"
            )
        except InputError as exc:
            raise InputError(
                f"{exc}; the compressed stream ({transfer_syntax_name(fh.transfer_syntax)}) is damaged — "
                "re-export the image from the scanner or PACS, uncompressed if possible"
            ) from None
        if inferred is not None:
            hu[inferred] = AIR_HU
            n_pad += n_inferred
    n_clipped = 0
    if np.dtype(out_dtype) == np.int16:
        info = np.iinfo(np.int16)
        if hu.max() > info.max or hu.min() < info.min:
            n_clipped = int(np.count_nonzero((hu < info.min) | (hu > info.max)))
            np.clip(hu, info.min, info.max, out=hu)
        hu = hu.astype(np.int16)
    return hu, FrameStats(hu.size, n_pad, n_inferred, inferred_value, n_clipped)


def _decode_raw(ds, fh: FrameHeader, name: str) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        if fh.frame_index is None:
            return pixel_array(ds)
        return pixel_array(ds, index=fh.frame_index)
    except InputError:
        raise
    except Exception as exc:  # decoders raise anything from ValueError to RuntimeError
        raise InputError(
            f"{name}: the pixel data could not be decoded ({transfer_syntax_name(fh.transfer_syntax)}: "
            f"{exc}); the file is damaged or truncated, or its compression is not supported — "
            "re-export it uncompressed"
        ) from exc


_NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


def _fast_native_frames(stream, items: list[tuple[int, FrameHeader]], name: str) -> list[np.ndarray] | None:
    """Read uncompressed little-endian frames straight from the recorded PixelData offset.

    Returns None when the fast path does not apply (then pydicom decodes the file). Bits
    above BitsStored are masked (unsigned) or sign-extended (signed), as the standard says.
    """
    fh0 = items[0][1]
    if fh0.pixel_offset is None or fh0.transfer_syntax not in _NATIVE_LITTLE_ENDIAN:
        return None
    if fh0.bits_allocated not in (8, 16) or fh0.samples_per_pixel != 1:
        return None
    stream.seek(fh0.pixel_offset)
    head = stream.read(12)
    if head[:4] != _PIXEL_DATA_TAG:
        return None
    if fh0.transfer_syntax == "1.2.840.10008.1.2":  # implicit VR: tag, 4-byte length
        length, data_start = int.from_bytes(head[4:8], "little"), fh0.pixel_offset + 8
    else:  # explicit VR OB/OW: tag, VR, 2 reserved, 4-byte length
        length, data_start = int.from_bytes(head[8:12], "little"), fh0.pixel_offset + 12
    if length == 0xFFFFFFFF:  # encapsulated despite the syntax: let pydicom complain
        return None
    bytes_per = fh0.bits_allocated // 8
    frame_bytes = fh0.rows * fh0.columns * bytes_per
    dtype = np.dtype(("<i" if fh0.pixel_representation else "<u") + str(bytes_per))
    frames: list[np.ndarray] = []
    for _, fh in items:
        index = fh.frame_index or 0
        if (index + 1) * frame_bytes > length:
            raise InputError(
                f"{name}: the pixel data could not be decoded: it holds {length} bytes, frame "
                f"{index} needs {(index + 1) * frame_bytes}; the file is truncated — re-export or re-send it"
            )
        stream.seek(data_start + index * frame_bytes)
        buf = stream.read(frame_bytes)
        if len(buf) < frame_bytes:
            raise InputError(
                f"{name}: the pixel data could not be decoded: the file ends after {len(buf)} of "
                f"{frame_bytes} bytes of frame {index}; the file is truncated — re-export or re-send it"
            )
        arr = np.frombuffer(buf, dtype=dtype).reshape(fh.rows, fh.columns)
        bits = fh.bits_stored
        if bits < fh.bits_allocated:
            shift = fh.bits_allocated - bits
            if fh.pixel_representation:
                arr = (arr << shift) >> shift
            else:
                arr = arr & ((1 << bits) - 1)
        frames.append(arr)
    return frames


def iter_decoded(
    jobs: Sequence[tuple[int, FrameHeader]], out_dtype: np.dtype, placement: Placement
) -> Iterator[tuple[int, np.ndarray, FrameStats]]:
    """Decode frames into display-placed HU slices, one at a time.

    Frames are grouped by file so a multi-frame file is read once.
    """
    by_source: dict[SourceRef, list[tuple[int, FrameHeader]]] = defaultdict(list)
    for k, fh in jobs:
        by_source[fh.source].append((k, fh))
    with Opener() as opener:
        for ref, items in by_source.items():
            name = ref.name
            try:
                with opener.open(ref) as fh_stream:
                    fast = _fast_native_frames(fh_stream, items, name)
                    if fast is not None:
                        for (k, fh), raw in zip(items, fast):
                            hu, stats = raw_to_hu(raw, fh, out_dtype, name)
                            yield k, placement.apply(hu), stats
                        continue
                    fh_stream.seek(0)
                    ds = read_dataset(fh_stream, name, stop_before_pixels=False)
            except (OSError, EOFError) as exc:
                raise InputError(
                    f"{name}: cannot be read ({exc}); check the file is still there and complete"
                ) from exc
            if ds is None:
                raise InputError(f"{name}: is no longer a DICOM file (changed since the header pass?)")
            if "PixelData" not in ds and "FloatPixelData" not in ds:
                raise InputError(f"{name}: the pixel data could not be decoded: the file holds no PixelData")
            for k, fh in items:
                raw = _decode_raw(ds, fh, name)
                hu, stats = raw_to_hu(raw, fh, out_dtype, name)
                yield k, placement.apply(hu), stats
            del ds


def decode_frames(
    jobs: Sequence[tuple[int, FrameHeader]], out_dtype: np.dtype, placement: Placement
) -> list[tuple[int, np.ndarray, FrameStats]]:
    """All of ``iter_decoded`` as a list (what a worker process sends back for its chunk)."""
    return list(iter_decoded(jobs, out_dtype, placement))


def _chunks(jobs: list[tuple[int, FrameHeader]], size: int) -> list[list[tuple[int, FrameHeader]]]:
    # Keep frames of one file together so a multi-frame file is parsed once per chunk.
    out: list[list[tuple[int, FrameHeader]]] = []
    current: list[tuple[int, FrameHeader]] = []
    for job in jobs:
        if len(current) >= size and job[1].source != current[-1][1].source:
            out.append(current)
            current = []
        current.append(job)
    if current:
        out.append(current)
    return out


def auto_workers(frames: Sequence[FrameHeader]) -> int:
    """Worker processes worth starting: only compressed series big enough to repay spawning."""
    compressed = any(f.transfer_syntax not in UNCOMPRESSED_SYNTAXES for f in frames)
    # Spawning a worker and importing pydicom costs about a second; JPEG 2000 decodes at about
    # 28 ms per 512² slice, so fewer than ~100 compressed slices are faster in one process.
    if not compressed or len(frames) < 96:
        return 1
    return max(1, min(os.cpu_count() or 1, 4))


def decode_into(
    out: np.ndarray,
    jobs: Sequence[tuple[int, FrameHeader]],
    placement: Placement,
    workers: int = 1,
) -> list[FrameStats]:
    """Decode ``jobs`` (output index, frame) into ``out[k]``; parallel across processes if asked.

    Processes (spawn context, Windows-safe) rather than threads: the JPEG 2000 decoder holds
    the GIL, so threads do not speed it up.
    """
    jobs = list(jobs)
    stats: list[FrameStats] = []
    if workers <= 1 or len(jobs) < 2 * workers:
        for k, hu, st in iter_decoded(jobs, out.dtype, placement):
            out[k] = hu
            stats.append(st)
        return stats
    chunk = max(1, min(16, len(jobs) // (workers * 4) or 1))
    ctx = multiprocessing.get_context("spawn")
    done: set[int] = set()
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(decode_frames, c, out.dtype, placement) for c in _chunks(jobs, chunk)]
            try:
                for fut in futures:
                    for k, hu, st in fut.result():
                        out[k] = hu
                        stats.append(st)
                        done.add(k)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    except BrokenProcessPool as exc:
        # e.g. a script without an ``if __name__ == "__main__":`` guard under spawn: the
        # answer does not depend on the workers, so finish in this process and say so.
        logger.warning("decoder processes failed (%s); decoding the remaining slices in this process", exc)
        for k, hu, st in iter_decoded([j for j in jobs if j[0] not in done], out.dtype, placement):
            out[k] = hu
            stats.append(st)
    return stats
