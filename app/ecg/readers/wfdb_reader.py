"""WFDB records: a text ``.hea`` header plus the signal files (.dat, .mat, ...) it names.

The header is recognised by content (its record line: name, number of signals,
sampling frequency, number of samples, followed by a signal line naming a file and a
WFDB storage format). Signal files must sit next to the header: a header naming a file
elsewhere (``../x``, an absolute path, a sub-folder, a symbolic link) is refused with
UnsafeUpload before anything is read. Samples are read with ``wfdb.rdrecord`` and
converted to millivolts from each channel's header units; invalid samples stay NaN.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb

from app.ecg.readers.base import ReadHints
from app.ecg.recording import Recording
from app.ecg.units import check_sampling_rate, to_millivolts_factor
from app.errors import (
    MalformedFile,
    ServiceError,
    UnsafeUpload,
    UnsupportedFormat,
    UnsupportedSignal,
)

MAX_HEADER_BYTES = 1 << 20
MAX_SIGNALS = 256

# Bits each stored sample takes, per WFDB storage format (FLAC formats 5xx are compressed).
_BITS_PER_SAMPLE: dict[str, float] = {
    "8": 8, "16": 16, "24": 24, "32": 32, "61": 16, "80": 8, "160": 16,
    "212": 12, "310": 32 / 3, "311": 32 / 3,
}
_KNOWN_FORMATS = frozenset(_BITS_PER_SAMPLE) | {"0", "508", "516", "524"}

_RECORD_LINE = re.compile(
    r"^(?P<name>[^\s/]+)(?:/(?P<nseg>\d+))?\s+(?P<nsig>\d+)"
    r"(?:\s+(?P<fs>\S+))?(?:\s+(?P<nsamp>\d+))?(?:\s|$)"
)
_FS_FIELD = re.compile(
    r"^(?P<fs>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)(?:/[\d.eE+-]+)?(?:\([-\d.]+\))?$"
)
_FORMAT_FIELD = re.compile(r"^(?P<fmt>\d+)(?:x(?P<spf>\d+))?(?::\d+)?(?:\+(?P<offset>\d+))?$")


@dataclass(frozen=True)
class _SignalSpec:
    file_name: str
    fmt: str
    samples_per_frame: int
    byte_offset: int


@dataclass(frozen=True)
class _Header:
    n_segments: int | None
    fs: float | None
    n_samples: int | None
    signals: tuple[_SignalSpec, ...]


def _content_lines(text: str) -> list[str]:
    stripped = (line.strip() for line in text.splitlines())
    return [line for line in stripped if line and not line.startswith("#")]


def _parse_fs(field: str | None) -> float | None:
    if field is None:
        return None
    match = _FS_FIELD.match(field)
    return float(match["fs"]) if match else None


def _looks_like_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _parse_signal_line(line: str, source: str) -> _SignalSpec:
    tokens = line.split()
    match = _FORMAT_FIELD.match(tokens[1]) if len(tokens) >= 2 else None
    if match is None or match["fmt"] not in _KNOWN_FORMATS:
        raise MalformedFile(f"{source}: signal line {line[:80]!r} has no valid WFDB storage format")
    return _SignalSpec(
        file_name=tokens[0],
        fmt=match["fmt"],
        samples_per_frame=int(match["spf"] or 1),
        byte_offset=int(match["offset"] or 0),
    )


def _parse_header(text: str, source: str) -> _Header:
    lines = _content_lines(text)
    record = _RECORD_LINE.match(lines[0]) if lines else None
    if record is None:
        raise MalformedFile(f"{source}: the first line is not a WFDB record line")
    n_signals = int(record["nsig"])
    n_segments = int(record["nseg"]) if record["nseg"] else None
    if n_segments is None and not 1 <= n_signals <= MAX_SIGNALS:
        raise MalformedFile(
            f"{source}: header declares {n_signals} signals (1..{MAX_SIGNALS} allowed)"
        )
    signal_lines = [] if n_segments else lines[1 : 1 + n_signals]
    if n_segments is None and len(signal_lines) < n_signals:
        raise MalformedFile(
            f"{source}: header declares {n_signals} signals but has {len(signal_lines)} signal lines"
        )
    return _Header(
        n_segments=n_segments,
        fs=_parse_fs(record["fs"]),
        n_samples=int(record["nsamp"]) if record["nsamp"] else None,
        signals=tuple(_parse_signal_line(line, source) for line in signal_lines),
    )


def _read_header_text(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_HEADER_BYTES + 1)
    except OSError as exc:
        raise MalformedFile(f"{path.name}: cannot read header ({exc.strerror})") from None
    if len(raw) > MAX_HEADER_BYTES:
        raise MalformedFile(f"{path.name}: header is larger than {MAX_HEADER_BYTES} bytes")
    if b"\x00" in raw:
        raise MalformedFile(f"{path.name}: header contains binary data")
    return raw.decode("latin-1")


def _resolve_signal_file(folder: Path, name: str, header_name: str) -> Path:
    if name == "~":
        raise UnsupportedSignal(
            f"{header_name}: null signals ('~' instead of a file) are not supported"
        )
    outside = (
        "/" in name or "\\" in name or "\x00" in name or name in (".", "..") or os.path.isabs(name)
    )
    candidate = folder / name
    if not outside and candidate.is_symlink():
        outside = True
    if not outside and candidate.exists():
        outside = candidate.resolve().parent != folder.resolve()
    if outside:
        raise UnsafeUpload(
            f"{header_name} names signal file {name!r}, which is not a plain file next to the header",
            details={"header": header_name, "signal_file": name},
        )
    return candidate


def _expected_bytes(header: _Header, file_name: str) -> int | None:
    specs = [spec for spec in header.signals if spec.file_name == file_name]
    if header.n_samples is None or any(spec.fmt not in _BITS_PER_SAMPLE for spec in specs):
        return None
    bits = sum(_BITS_PER_SAMPLE[spec.fmt] * spec.samples_per_frame for spec in specs)
    return max(spec.byte_offset for spec in specs) + math.floor(bits * header.n_samples / 8)


def _check_signal_files(path: Path, header: _Header, files: list[Path]) -> None:
    for file in files:
        if not file.is_file():
            raise MalformedFile(
                f"{path.name} names signal file {file.name}, which is not in the upload",
                details={"header": path.name, "signal_file": file.name},
            )
        expected = _expected_bytes(header, file.name)
        size = file.stat().st_size
        if expected is not None and size < expected:
            raise MalformedFile(
                f"{file.name} is truncated: {size} bytes, but {path.name} implies {expected}",
                details={"signal_file": file.name, "bytes": size, "expected_bytes": expected},
            )


def _rdrecord(path: Path) -> wfdb.Record:
    try:
        return wfdb.rdrecord(str(path.with_suffix("")))
    except ServiceError:
        raise
    except Exception as exc:  # wfdb raises many kinds on broken input; name the file
        problem = f"{type(exc).__name__}: {exc}"
        raise MalformedFile(f"{path.name}: cannot read WFDB record ({problem})") from None


def _sampling_rate(header: _Header, path: Path, hints: ReadHints) -> float:
    if header.fs is not None:
        return check_sampling_rate(header.fs)
    if hints.sampling_rate is not None:
        return check_sampling_rate(hints.sampling_rate)
    raise UnsupportedSignal(
        f"{path.name} gives no sampling frequency (WFDB would assume 250 Hz); pass sampling_rate"
    )


def _millivolts(record: wfdb.Record, path: Path) -> np.ndarray:
    signal = record.p_signal
    if signal is None or signal.ndim != 2 or signal.shape[0] == 0:
        raise MalformedFile(f"{path.name}: the record has no samples")
    units = [unit or "mV" for unit in (record.units or ["mV"] * signal.shape[1])]
    factors = np.array([to_millivolts_factor(unit) for unit in units], dtype=np.float64)
    return np.ascontiguousarray((signal * factors).T, dtype=np.float64)


class WfdbReader:
    """FormatReader for WFDB single-segment records."""

    name = "wfdb"
    title = "WFDB (.hea + .dat/.mat)"
    extensions = (".hea", ".dat", ".mat")

    def claims(self, path: Path, head: bytes) -> bool:
        if b"\x00" in head:
            return False
        lines = _content_lines(head.decode("latin-1"))
        record = _RECORD_LINE.match(lines[0]) if lines else None
        if record is None or _parse_fs(record["fs"]) is None:
            return False
        if record["nseg"]:
            return True
        tokens = lines[1].split() if len(lines) > 1 else []
        if len(tokens) < 2 or _looks_like_number(tokens[0]):
            return False
        match = _FORMAT_FIELD.match(tokens[1])
        return match is not None and match["fmt"] in _KNOWN_FORMATS

    def companions(self, path: Path) -> list[Path]:
        header = _parse_header(_read_header_text(path), path.name)
        names = dict.fromkeys(spec.file_name for spec in header.signals)
        return [_resolve_signal_file(path.parent, name, path.name) for name in names]

    def read(self, path: Path, hints: ReadHints) -> Recording:
        if path.suffix != ".hea":
            raise MalformedFile(f"{path.name}: a WFDB header must be named <record>.hea")
        header = _parse_header(_read_header_text(path), path.name)
        if header.n_segments is not None:
            raise UnsupportedFormat(f"{path.name}: multi-segment WFDB records are not supported")
        _check_signal_files(path, header, self.companions(path))
        fs = _sampling_rate(header, path, hints)
        record = _rdrecord(path)
        names = tuple(name or f"signal{i + 1}" for i, name in enumerate(record.sig_name or []))
        signals = _millivolts(record, path)
        if len(names) != signals.shape[0]:
            raise MalformedFile(
                f"{path.name}: {len(names)} signal names for {signals.shape[0]} signals"
            )
        return Recording(
            signals=signals,
            fs=fs,
            lead_names=names,
            source_format=self.name,
            metadata={
                "n_signals": len(names),
                "storage_formats": sorted({spec.fmt for spec in header.signals}),
                "units_in": sorted({unit or "mV" for unit in (record.units or [])}),
            },
        )


READER = WfdbReader()
