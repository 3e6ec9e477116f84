"""Raw CPSC 2018 MATLAB files: a MATLAB 5 struct ``ECG`` with fields sex, age, data (12 x N).

The China Physiological Signal Challenge 2018 distributed its recordings as MATLAB 5
``.mat`` files holding one struct ``ECG``; ``data`` is 12 x N, 500 Hz, leads in the order
I, II, III, aVR, aVL, aVF, V1-V6, values in millivolts. (The CinC 2021 WFDB re-release of
the same recordings stores them at 1000 ADC units per mV.) ``sex`` and ``age`` are patient
data and are never copied into the recording's metadata.

Only MATLAB 5 files (text header "MATLAB 5.0 MAT-file") holding a struct ``ECG`` are
claimed, so the MATLAB v4 signal files of WFDB records (no text header, variable ``val``)
stay with the WFDB reader. ``ReadHints.sampling_rate`` / ``units`` override the CPSC
defaults for files written in the same layout at another rate. ``Recording.gains`` stays
None: the struct stores millivolts and no gain.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

from app.ecg.readers._common import hinted_lead_names, hinted_mv_factor, hinted_rate
from app.ecg.readers._limits import check_decompressed, check_samples, inflated_size
from app.ecg.readers.base import FormatReader, ReadHints
from app.ecg.recording import Recording
from app.errors import MalformedFile, UploadTooLarge

CPSC_FS = 500.0
MAGIC = b"MATLAB 5.0 MAT-file"
_MI_COMPRESSED = 15


def _ecg_struct_listed(path: Path) -> bool:
    import scipy.io

    try:
        entries = scipy.io.whosmat(str(path))
    except Exception:
        return False
    return any(name == "ECG" and cls == "struct" for name, _shape, cls in entries)


class CpscMatReader:
    name = "cpsc2018_mat"
    title = "CPSC 2018 MATLAB struct (ECG.data 12 x N, 500 Hz, mV)"
    extensions = (".mat",)

    def claims(self, path: Path, head: bytes) -> bool:
        if not head.startswith(MAGIC):
            return False
        try:
            _check_inflated(Path(path))  # scipy's listing would inflate a bomb too
        except UploadTooLarge:
            return True  # a MATLAB 5 file too large to list: read() refuses it, naming the limit
        except MalformedFile:
            return False
        return _ecg_struct_listed(Path(path))

    def companions(self, path: Path) -> list[Path]:
        return []

    def read(self, path: Path, hints: ReadHints) -> Recording:
        import scipy.io

        try:
            with open(path, "rb") as fh:
                head = fh.read(len(MAGIC))
        except OSError as e:
            raise MalformedFile(f"cannot read MATLAB file: {e}") from None
        if head != MAGIC:
            raise MalformedFile("not a MATLAB 5 file: the 'MATLAB 5.0 MAT-file' text header is missing")
        _check_inflated(Path(path))
        try:
            mat = scipy.io.loadmat(str(path), squeeze_me=False, struct_as_record=True, variable_names=["ECG"])
        except Exception as e:  # scipy raises ValueError, TypeError, zlib errors ... on broken files
            raise MalformedFile(f"cannot read MATLAB file: {type(e).__name__}: {e}") from None
        ecg = mat.get("ECG")
        if ecg is None:
            raise MalformedFile("MATLAB file has no variable 'ECG' (expected the CPSC 2018 struct ECG)")
        if not isinstance(ecg, np.ndarray) or ecg.dtype.names is None:
            raise MalformedFile("MATLAB variable 'ECG' is not a struct")
        if "data" not in ecg.dtype.names:
            raise MalformedFile(f"MATLAB struct ECG has no field 'data' (fields: {', '.join(ecg.dtype.names)})")
        if ecg.size != 1:
            raise MalformedFile(f"MATLAB struct ECG is a {ecg.shape} array; expected a single struct")
        data = ecg["data"].flat[0]
        if not isinstance(data, np.ndarray) or data.dtype.kind not in "fiu":
            raise MalformedFile("ECG.data is not a numeric matrix")
        if data.ndim != 2 or 12 not in data.shape:
            raise MalformedFile(f"ECG.data has shape {data.shape}; expected 12 x N")
        signals = data if data.shape[0] == 12 else data.T
        check_samples(12, int(signals.shape[1]), "ECG.data")
        if signals.shape[1] == 0:
            raise MalformedFile("ECG.data holds no samples")

        fs = hinted_rate(hints) or CPSC_FS
        factor, unit = hinted_mv_factor(hints)
        names = hinted_lead_names(hints, "ECG.data")
        out = np.ascontiguousarray(signals, dtype=np.float64) * factor
        return Recording(
            signals=out, fs=fs, lead_names=names,
            source_format=self.name, warnings=[],
            metadata={
                "layout": "CPSC 2018 struct ECG",
                "fs_source": "hint" if hints.sampling_rate is not None else "CPSC 2018 (500 Hz)",
                "units": unit,
            },
        )


def _check_inflated(path: Path) -> None:
    """Walk the top-level data elements; compressed ones are inflated in chunks and counted
    (never kept), so a zlib bomb is refused before scipy inflates it whole."""
    total = 0
    try:
        with path.open("rb") as fh:
            fh.seek(126)
            endian = fh.read(2)
            order = "<" if endian == b"IM" else ">" if endian == b"MI" else None
            if order is None:
                raise MalformedFile("MATLAB 5 file has no valid endian indicator")
            size = path.stat().st_size
            offset = 128
            while offset + 8 <= size:
                fh.seek(offset)
                tag = np.frombuffer(fh.read(8), dtype=f"{order}u4")
                mtype, nbytes = int(tag[0]), int(tag[1])
                if mtype >> 16:  # small data element: 4 bytes of data inside the tag
                    offset += 8
                    continue
                if mtype == _MI_COMPRESSED:
                    total += inflated_size(_Bounded(fh, nbytes).read, "MATLAB compressed variable")
                    check_decompressed(total, "MATLAB file")
                else:
                    total += nbytes
                offset += 8 + nbytes + (-nbytes % 8 if mtype != _MI_COMPRESSED else 0)
    except OSError as e:
        raise MalformedFile(f"cannot read MATLAB file: {e}") from None


class _Bounded:
    """At most ``n`` bytes of a file, read from its current position."""

    def __init__(self, fh: BinaryIO, n: int) -> None:
        self._fh, self._left = fh, n

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._fh.read(size)
        self._left -= len(data)
        return data


READER: FormatReader = CpscMatReader()
