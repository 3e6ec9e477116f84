"""WFDB records: a text ``.hea`` header plus the signal files (.dat, .mat, ...) it names.

The header is recognised by content (its record line: name, number of signals,
sampling frequency, number of samples, followed by a signal line naming a file and a
WFDB storage format). Signal files must sit next to the header: a header naming a file
elsewhere (``../x``, an absolute path, a sub-folder, a symbolic link) is refused with
UnsafeUpload before anything is read.

Samples are decoded one of two ways, with the same result (``p_signal`` of
``wfdb.rdrecord``, bit for bit):

* the numpy fast path (``_simple_plan`` + ``_decode_simple``) for the common records:
  single segment, storage formats 8, 16, 24, 32, 61, 80, 160 and 212, one sample per
  frame, no skew, byte offsets honoured, one or more signal files whose signals are
  interleaved frame by frame. The header is interpreted with wfdb's own header
  patterns and wfdb's reading rules (default gain 200 for a missing or zero gain,
  baseline from the ADC zero when missing, units "mV" when missing, each format's
  invalid-sample value becomes NaN), without wfdb's pandas-based header parser that
  costs milliseconds per record;
* ``wfdb.rdrecord`` for everything else (other formats, several samples per frame,
  skew, odd headers), and for any header the fast path has the least doubt about.

Either way the samples are converted to millivolts from each channel's header units;
invalid samples stay NaN. ``metadata["decoder"]`` says which path read the record.

``Recording.acquired_at``: the record line's base time and base date (``HH:MM:SS dd/mm/yyyy``),
naive (WFDB gives no zone); None when either is missing or was dropped as malformed.

``Recording.gains`` is each signal's ADC gain as read (adu per header unit; 200 where the
field is missing, as wfdb reads it) over the unit's millivolts: adu per mV, sign kept. A gain
the header states as 0 is refused (MalformedFile naming the signals), although wfdb reads it as
200: in WFDB a zero gain means "no amplitude calibration is available", and the model, which
does no normalisation, needs millivolts that mean millivolts; a guess of 200 adu/mV would be
scored as if it were a measurement. An infinite gain (``1e999``) is refused too (every sample
would read as 0).

Kept (issue 15), not switched to ecgdatakit 2.0.3: it agrees with ecgdatakit within 1e-9 mV,
with equal names, rates and gains, on the 51 shared WFDB records ecgdatakit reads, and
ecgdatakit refuses 70 of the 121 (a base date/time not in WFDB's form) that this reader reads
(tests/formats/test_ecgdatakit_differential.py); 0.59 ms here vs 0.98 ms. Ours checks the sizes
a file declares against the reader limits and the memory budget (app/ecg/readers/_limits.py)
before it decodes, which the library does not do.
"""

from __future__ import annotations

import datetime
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb

try:  # wfdb's header patterns are module attributes, not documented API: without them, no fast path
    from wfdb.io import header as wfdb_header

    _WFDB_PATTERNS = all(hasattr(wfdb_header, n) for n in ("rx_record", "rx_signal", "wfdb_strptime"))
except ImportError:  # pragma: no cover - depends on the installed wfdb
    wfdb_header = None
    _WFDB_PATTERNS = False

from app.ecg.readers._common import gain_per_mv, refuse_unusable_gains
from app.ecg.readers._dates import acquisition_time, wfdb_date_time
from app.ecg.readers._limits import check_samples
from app.ecg.readers.base import FormatReader, ReadHints
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
# The gain that starts a signal line's third field: "200", "1000.0(0)/mV", "1e3(-4)/uV", "-200".
_GAIN_FIELD = re.compile(r"^(?P<gain>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:[(/]|$)")


@dataclass(frozen=True)
class _SignalSpec:
    file_name: str
    fmt: str
    samples_per_frame: int
    byte_offset: int
    # the ADC gain as the header writes it, before any default (wfdb turns 0 into 200, which
    # hides the zero the reader refuses); None when the field is absent or not a plain number
    declared_gain: float | None = None


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
    gain = _GAIN_FIELD.match(tokens[2]) if len(tokens) >= 3 else None
    return _SignalSpec(
        file_name=tokens[0],
        fmt=match["fmt"],
        samples_per_frame=int(match["spf"] or 1),
        byte_offset=int(match["offset"] or 0),
        declared_gain=float(gain["gain"]) if gain else None,
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


_PLAIN_RECORD_NAME = re.compile(r"^[-\w]+$")
_WFDB_DATE = re.compile(r"^\d{1,2}/\d{1,2}/\d{4}$")
_WFDB_TIME = re.compile(r"^\d{1,2}:\d{1,2}(?::\d{1,2}(?:\.\d{1,6})?)?$")


def _normalise_header(text: str, path: Path) -> tuple[str, list[str]]:
    """The header with the quirks of real archives undone, and what was undone.

    * a byte-order mark before the record line;
    * the record line naming the record with a file extension (``JS00001.mat 12 500 5000``,
      as in a public 2020 challenge set) or other characters wfdb's record-name pattern
      refuses: the name becomes the header's own stem (which is what wfdb reads by);
    * a base date or time not in WFDB's ``dd/mm/yyyy`` / ``HH:MM:SS`` form (``2020-01-02``,
      a two-digit year, ``12-May-2020 12:33:59``), or not a real date or time (``31/02/2020``,
      ``25:00:00``): dropped (wfdb would refuse the record), so the acquisition time is unknown.

    Only the record line changes; CRLF line ends, tabs, trailing blanks, blank lines and
    missing optional fields already read as wfdb reads them.
    """
    fixes: list[str] = []
    if text.startswith("\xef\xbb\xbf"):  # a UTF-8 BOM read as latin-1
        text = text[3:]
        fixes.append("byte-order mark before the record line removed")
    lines = text.splitlines()
    index = next(
        (i for i, ln in enumerate(lines) if ln.strip() and not ln.strip().startswith("#")), None
    )
    if index is None:
        return text, fixes
    tokens = lines[index].split()
    name, _, segments = tokens[0].partition("/")
    if not _PLAIN_RECORD_NAME.match(name) and _PLAIN_RECORD_NAME.match(path.stem):
        fixes.append(f"record name {name[:40]!r} read as {path.stem!r} (the header's file name)")
        tokens[0] = path.stem + (f"/{segments}" if segments else "")
    if len(tokens) > 4:
        when = tokens[4:]
        valid = (
            len(when) <= 2
            and _WFDB_TIME.match(when[0]) is not None
            and (len(when) == 1 or _WFDB_DATE.match(when[1]) is not None)
        )
        if not valid:
            fixes.append(f"base time/date {' '.join(when)[:40]!r} not in WFDB form; ignored")
            tokens = tokens[:4]
        elif not _when_parses(when):
            fixes.append("base time/date is not a real time or date; ignored")  # the value: a date about a patient
            tokens = tokens[:4]
    if not fixes:
        return text, fixes
    lines[index] = " ".join(tokens)
    return "\n".join(lines) + "\n", fixes


def _when_parses(when: list[str]) -> bool:
    """The base time (and date) as wfdb converts them: ``wfdb_strptime`` and ``%d/%m/%Y``."""
    try:
        if wfdb_header is not None:
            wfdb_header.wfdb_strptime(when[0])
        else:  # pragma: no cover - depends on the installed wfdb
            wfdb_date_time(when[0], "01/01/2000")
        if len(when) > 1:
            datetime.datetime.strptime(when[1], "%d/%m/%Y")  # noqa: DTZ007 -- validates the format only
    except ValueError:
        return False
    return True


def _base_date_time(text: str) -> tuple[str | None, str | None]:
    """The (normalised) record line's base time and base date, where it has them."""
    lines = _content_lines(text)
    tokens = lines[0].split() if lines else []
    return (tokens[4] if len(tokens) > 4 else None), (tokens[5] if len(tokens) > 5 else None)


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


# --- The numpy fast path -------------------------------------------------------------------
#
# Formats the fast path decodes, with the value wfdb reads as "invalid sample" (NaN) in
# each (format 8 has none: it stores differences). All formats a plain np.frombuffer, or
# a few byte operations, turns into samples.
_FAST_INVALID: dict[str, int | None] = {
    "8": None, "16": -(1 << 15), "24": -(1 << 23), "32": -(1 << 31), "61": -(1 << 15),
    "80": -(1 << 7), "160": -(1 << 15), "212": -(1 << 11),
}
_FAST_DTYPES = {"8": "i1", "16": "<i2", "32": "<i4", "61": ">i2", "80": "u1", "160": "<u2"}
# Bytes one sample takes, as wfdb counts it when it infers the length from a file's size.
_FAST_BYTES_PER_SAMPLE = {
    "8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2, "212": 1.5,
}
_DEFAULT_GAIN = 200.0  # wfdb's reading default for a missing or zero ADC gain
_DEFAULT_UNITS = "mV"
_EXACT_INT = 1 << 53  # baselines beyond this would not be exact as float64
_INT32 = 1 << 31


@dataclass(frozen=True)
class _Channel:
    name: str | None
    units: str
    gain: float
    baseline: int
    init_value: int


@dataclass(frozen=True)
class _FilePlan:
    path: Path
    fmt: str
    byte_offset: int
    first: int  # index of its first signal; a file's signals are consecutive
    count: int


@dataclass(frozen=True)
class _SimplePlan:
    n_samples: int
    channels: tuple[_Channel, ...]
    files: tuple[_FilePlan, ...]


def _optional_int(text: str) -> int | None:
    return int(text) if text else None


def _record_line_ok(line: str, header: _Header) -> tuple[int, int | None] | None:
    """(n_sig, sig_len) as wfdb.rdheader reads the record line, or None if it would not."""
    match = wfdb_header.rx_record.match(line)
    if match is None or match["n_seg"]:
        return None
    # wfdb converts these fields; where that raises, wfdb.rdrecord fails too.
    if match["fs"]:
        int(float(match["fs"]))  # wfdb also rounds the rate to an int when it is whole
    for key in ("counter_freq", "base_counter"):
        if match[key]:
            float(match[key])
    if match["base_time"]:
        wfdb_header.wfdb_strptime(match["base_time"])
    if match["base_date"]:
        datetime.datetime.strptime(match["base_date"], "%d/%m/%Y")  # noqa: DTZ007 -- validates the format only
    n_sig = int(match["n_sig"])
    sig_len = _optional_int(match["sig_len"])
    if n_sig != len(header.signals) or sig_len != header.n_samples:
        return None  # the project's parser and wfdb's disagree: let wfdb decide
    return n_sig, sig_len


def _signal_line(line: str, spec: _SignalSpec) -> tuple[_Channel, str, int] | None:
    """One signal line as wfdb.rdheader reads it: (channel, format, byte offset), or None."""
    match = wfdb_header.rx_signal.match(line)
    if match is None:
        return None
    (file_name, fmt, spf, skew, offset, gain, baseline, units,
     adc_res, adc_zero, init_value, checksum, block_size, name) = match.groups()
    # wfdb converts every numeric field it finds; a ValueError here means it fails too.
    for text in (adc_res, checksum, block_size):
        _optional_int(text)
    samples_per_frame = _optional_int(spf)
    byte_offset = _optional_int(offset) or 0
    zero = _optional_int(adc_zero)
    init = _optional_int(init_value) or 0
    if (
        file_name != spec.file_name
        or fmt != spec.fmt
        or fmt not in _FAST_INVALID
        or samples_per_frame not in (None, 1)
        or spec.samples_per_frame != 1
        or _optional_int(skew)  # a skew other than 0
        or byte_offset != spec.byte_offset
        or (fmt == "8" and not -_INT32 <= init < _INT32)
    ):
        return None
    adc_gain = float(gain) if gain else _DEFAULT_GAIN
    if adc_gain == 0:
        adc_gain = _DEFAULT_GAIN
    if baseline:
        adc_baseline = int(baseline)
    else:
        adc_baseline = zero if zero is not None else 0
    if abs(adc_baseline) >= _EXACT_INT:
        return None
    channel = _Channel(
        name=name or None,
        units=units or _DEFAULT_UNITS,
        gain=adc_gain,
        baseline=adc_baseline,
        init_value=init,
    )
    return channel, fmt, byte_offset


def _inferred_length(file: _FilePlan) -> int:
    """Samples per signal as wfdb infers them from the first file's size."""
    try:
        size = file.path.stat().st_size
    except OSError:
        return 0
    return int((size - file.byte_offset) / (_FAST_BYTES_PER_SAMPLE[file.fmt] * file.count))


def _simple_plan(text: str, header: _Header, files: dict[str, Path]) -> _SimplePlan | None:
    """How the fast path decodes this record, or None if it is one for wfdb.rdrecord.

    The header is read with wfdb's own patterns and conversions, so that names, units,
    gains and baselines are those ``wfdb.rdheader`` gives. Anything unusual (other
    formats, several samples per frame, skew, a file's signals with different formats or
    offsets, or not consecutive, a field wfdb could not convert, a header the project's
    parser reads differently) returns None: wfdb then reads the record, or raises its error.
    """
    if not _WFDB_PATTERNS or header.n_segments is not None or not text.isascii():
        return None
    lines = _content_lines(text)
    channels: list[_Channel] = []
    plans: list[_FilePlan] = []
    try:
        record = _record_line_ok(lines[0], header)
        if record is None or len(lines) != record[0] + 1:
            return None
        for index, (line, spec) in enumerate(zip(lines[1:], header.signals, strict=True)):
            signal = _signal_line(line, spec)
            if signal is None:
                return None
            channel, fmt, byte_offset = signal
            channels.append(channel)
            last = plans[-1] if plans else None
            if last is not None and last.path.name == spec.file_name:
                if (fmt, byte_offset) != (last.fmt, last.byte_offset):
                    return None  # wfdb would read the whole file in its first format
                plans[-1] = _FilePlan(last.path, fmt, byte_offset, last.first, last.count + 1)
            elif any(plan.path.name == spec.file_name for plan in plans):
                return None  # the file's signals are not consecutive
            else:
                plans.append(_FilePlan(files[spec.file_name], fmt, byte_offset, index, 1))
    except (ValueError, OverflowError):  # a field wfdb could not convert either
        return None
    n_samples = record[1] if record[1] is not None else _inferred_length(plans[0])
    if n_samples <= 0:
        return None
    return _SimplePlan(n_samples=n_samples, channels=tuple(channels), files=tuple(plans))


def _stored_bytes(fmt: str, n_values: int) -> int:
    if fmt == "212":
        return (3 * n_values + 1) // 2
    return n_values * int(_FAST_BYTES_PER_SAMPLE[fmt])


def _read_samples(file: _FilePlan, n_bytes: int, source: str) -> bytes:
    """The ``n_bytes`` after the file's byte offset; MalformedFile if the file is shorter."""
    try:
        with file.path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(file.byte_offset)
            data = handle.read(n_bytes)
    except OSError as exc:
        raise MalformedFile(f"{file.path.name}: cannot read signal file ({exc.strerror})") from None
    if len(data) < n_bytes:
        expected = file.byte_offset + n_bytes
        raise MalformedFile(
            f"{file.path.name} is truncated: {size} bytes, but {source} implies {expected}",
            details={"signal_file": file.path.name, "bytes": size, "expected_bytes": expected},
        )
    return data


def _unpack(fmt: str, data: bytes, n_values: int) -> np.ndarray:
    """The ``n_values`` stored samples in ``data`` (exactly their bytes) as integers."""
    if fmt in _FAST_DTYPES:
        values = np.frombuffer(data, dtype=_FAST_DTYPES[fmt])
        if fmt == "80":  # offset binary
            return values.astype(np.int16) - 128
        if fmt == "160":
            return values.astype(np.int32) - 32768
        return values
    raw = np.frombuffer(data, dtype=np.uint8)
    if fmt == "24":  # little-endian, two's complement
        triples = raw.reshape(-1, 3).astype(np.int32)
        high = triples[:, 2] - ((triples[:, 2] & 0x80) << 1)
        return triples[:, 0] | (triples[:, 1] << 8) | (high << 16)
    # 212: two 12-bit samples in three bytes; the middle byte holds both high nibbles.
    # An odd count ends in two bytes (the last sample's low byte and high nibble).
    if len(raw) % 3:
        raw = np.concatenate((raw, np.zeros(3 - len(raw) % 3, dtype=np.uint8)))
    triples = raw.reshape(-1, 3).astype(np.int16)
    values = np.empty((len(triples), 2), dtype=np.int16)
    values[:, 0] = triples[:, 0] | ((triples[:, 1] & 0x0F) << 8)
    values[:, 1] = triples[:, 2] | ((triples[:, 1] & 0xF0) << 4)
    values = values.reshape(-1)[:n_values]
    values[values > 2047] -= 4096
    return values


def _decode_simple(
    plan: _SimplePlan, source: str
) -> tuple[np.ndarray, tuple[str | None, ...], tuple[str, ...]]:
    """Physical signals (n_signals, n_samples) float64, signal names and units, as wfdb reads them.

    ``p = (d - baseline) / gain`` in float64, and NaN where ``d`` is the format's invalid
    value; a signal file too short for the header's sample count is a MalformedFile.
    """
    n = plan.n_samples
    signals = np.empty((len(plan.channels), n), dtype=np.float64)
    for file in plan.files:
        n_values = n * file.count
        data = _read_samples(file, _stored_bytes(file.fmt, n_values), source)
        frames = _unpack(file.fmt, data, n_values).reshape(n, file.count)
        rows = slice(file.first, file.first + file.count)
        channels = plan.channels[rows]
        if file.fmt == "8":  # first differences, starting from each signal's initial value
            frames = np.cumsum(frames, axis=0, dtype=np.int32)
            frames += np.array([c.init_value for c in channels], dtype=np.int32)
        digital = frames.T
        out = signals[rows]
        baselines = np.array([[c.baseline] for c in channels], dtype=np.float64)
        gains = np.array([[c.gain] for c in channels], dtype=np.float64)
        np.subtract(digital, baselines, out=out)  # float64, in wfdb's order of operations
        np.divide(out, gains, out=out)
        invalid = _FAST_INVALID[file.fmt]
        if invalid is not None:
            out[digital == invalid] = np.nan
    names = tuple(c.name for c in plan.channels)
    units = tuple(c.units for c in plan.channels)
    return signals, names, units


# --- The wfdb path ---------------------------------------------------------------------------


def _rdrecord(path: Path, fixed_text: str | None = None, files: dict[str, Path] | None = None) -> wfdb.Record:
    """``wfdb.rdrecord``; with ``fixed_text``, of that header next to links to the signal files."""
    if fixed_text is not None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="ecgfm-wfdb-") as tmp:
            folder = Path(tmp)
            (folder / path.name).write_text(fixed_text, encoding="latin-1")
            for name, file in (files or {}).items():
                (folder / name).symlink_to(file.resolve())
            return _rdrecord(folder / path.name)
    try:
        return wfdb.rdrecord(str(path.with_suffix("")))
    except ServiceError:
        raise
    except Exception as exc:  # wfdb raises many kinds on broken input; name the file
        problem = f"{type(exc).__name__}: {exc}"
        raise MalformedFile(f"{path.name}: cannot read WFDB record ({problem})") from None


def _decode_wfdb(
    path: Path, fixed_text: str | None = None, files: dict[str, Path] | None = None
) -> tuple[np.ndarray, tuple[str | None, ...], tuple[str, ...], tuple[float, ...]]:
    """Physical signals (n_signals, n_samples), names, units and ADC gains (adu per unit, as
    wfdb applied them), read by wfdb.rdrecord."""
    record = _rdrecord(path, fixed_text, files)
    signal = record.p_signal
    if signal is None or signal.ndim != 2 or signal.shape[0] == 0:
        raise MalformedFile(f"{path.name}: the record has no samples")
    units = tuple(unit or _DEFAULT_UNITS for unit in (record.units or [None] * signal.shape[1]))
    gains = tuple(float(g) for g in (record.adc_gain or []))
    return signal.T, tuple(record.sig_name or []), units, gains


# --- Reading ---------------------------------------------------------------------------------


def _sampling_rate(header: _Header, path: Path, hints: ReadHints) -> float:
    if header.fs is not None:
        return check_sampling_rate(header.fs)
    if hints.sampling_rate is not None:
        return check_sampling_rate(hints.sampling_rate)
    raise UnsupportedSignal(
        f"{path.name} gives no sampling frequency (WFDB would assume 250 Hz); pass sampling_rate"
    )


def _millivolts(physical: np.ndarray, units: tuple[str, ...], path: Path) -> np.ndarray:
    """(n_signals, n_samples) physical values in their header units -> millivolts."""
    if physical.ndim != 2 or physical.shape[1] == 0:
        raise MalformedFile(f"{path.name}: the record has no samples")
    if len(units) != physical.shape[0]:
        raise MalformedFile(
            f"{path.name}: {len(units)} signal units for {physical.shape[0]} signals"
        )
    factors = np.array([to_millivolts_factor(unit) for unit in units], dtype=np.float64)
    if (factors == 1.0).all() and physical.dtype == np.float64 and physical.flags.c_contiguous:
        return physical  # already millivolts: x * 1.0 == x, so skip the copy
    return np.ascontiguousarray(physical * factors[:, None], dtype=np.float64)


def _check_declared_size(path: Path, header: _Header, files: dict[str, Path]) -> None:
    """UploadTooLarge for more signals or samples than a recording may have; without a
    declared length, the length the signal files' sizes imply is checked."""
    what = f"{path.name}"
    n_samples = header.n_samples
    if n_samples is None:
        implied = []
        for name, file in files.items():
            specs = [spec for spec in header.signals if spec.file_name == name]
            if any(spec.fmt not in _BITS_PER_SAMPLE for spec in specs):
                continue
            bits = sum(_BITS_PER_SAMPLE[spec.fmt] * spec.samples_per_frame for spec in specs)
            implied.append(int(file.stat().st_size * 8 / bits))
        n_samples = max(implied, default=0)
        what = f"{path.name} (its signal files' sizes)"
    check_samples(len(header.signals), n_samples, what)


def _signal_files(path: Path, header: _Header) -> dict[str, Path]:
    names = dict.fromkeys(spec.file_name for spec in header.signals)
    return {name: _resolve_signal_file(path.parent, name, path.name) for name in names}


def _gains_per_mv(
    header: _Header, names: tuple[str, ...], units: tuple[str, ...], adc_gains: tuple[float, ...], path: Path
) -> tuple[float, ...] | None:
    """Each signal's gain in adu per mV, after refusing a gain the header states as 0 or that is
    not finite. None if the decoder's gains do not line up with the signals: the warning is then
    not given, rather than given for the wrong lead."""
    declared = [spec.declared_gain for spec in header.signals]
    if len(declared) == len(names):
        stated = [(name, gain) for name, gain in zip(names, declared, strict=True) if gain is not None]
        refuse_unusable_gains([g for _, g in stated], [n for n, _ in stated], label=path.name, field="ADC gain")
    if len(adc_gains) != len(names):
        return None
    refuse_unusable_gains(adc_gains, names, label=path.name, field="ADC gain")
    return tuple(
        gain_per_mv(gain, to_millivolts_factor(unit)) for gain, unit in zip(adc_gains, units, strict=True)
    )


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
        return list(_signal_files(path, header).values())

    def read(self, path: Path, hints: ReadHints) -> Recording:
        if path.suffix != ".hea":
            raise MalformedFile(f"{path.name}: a WFDB header must be named <record>.hea")
        text, fixes = _normalise_header(_read_header_text(path), path)
        header = _parse_header(text, path.name)
        if header.n_segments is not None:
            raise UnsupportedFormat(f"{path.name}: multi-segment WFDB records are not supported")
        files = _signal_files(path, header)
        _check_signal_files(path, header, list(files.values()))
        _check_declared_size(path, header, files)
        fs = _sampling_rate(header, path, hints)
        plan = _simple_plan(text, header, files)
        if plan is not None:
            physical, sig_names, units = _decode_simple(plan, path.name)
            adc_gains = tuple(channel.gain for channel in plan.channels)
            decoder = "numpy"
        else:
            physical, sig_names, units, adc_gains = _decode_wfdb(path, text if fixes else None, files)
            decoder = "wfdb"
        signals = _millivolts(physical, units, path)
        base_time, base_date = _base_date_time(text)
        acquired_at, warnings = acquisition_time(
            [("base time/date", lambda: wfdb_date_time(base_time, base_date))], path.name)
        names = tuple(name or f"signal{i + 1}" for i, name in enumerate(sig_names))
        if len(names) != signals.shape[0]:
            raise MalformedFile(
                f"{path.name}: {len(names)} signal names for {signals.shape[0]} signals"
            )
        return Recording(
            signals=signals,
            fs=fs,
            lead_names=names,
            source_format=self.name,
            gains=_gains_per_mv(header, names, units, adc_gains, path),
            warnings=warnings,
            acquired_at=acquired_at,
            metadata={
                "n_signals": len(names),
                "storage_formats": sorted({spec.fmt for spec in header.signals}),
                "units_in": sorted(set(units)),
                "decoder": decoder,
                **({"header_quirks": fixes} if fixes else {}),
            },
        )


READER: FormatReader = WfdbReader()
