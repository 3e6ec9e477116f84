"""CSV / delimited text: one column per lead, a header row naming the leads.

The file says nothing about its sampling rate unless it has a time column, so the rate
comes from ``ReadHints.sampling_rate`` or from a ``time`` / ``t`` column (seconds, or
milliseconds when the header says ``time_ms`` / ``time (ms)``). Units come from a unit in the
column header (``I (uV)``, ``V1 [mV]``), else from ``ReadHints.units``, else millivolts.

Comma, semicolon and tab delimiters are sniffed from the header line; a semicolon file
whose numbers use a decimal comma (``0,125;-0,03``) is read as such.

``Recording.gains`` stays None: CSV holds physical values, not digits, and states no gain.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np

from app.ecg.leads import is_lead_name, strip_lead_prefix
from app.ecg.readers._common import hinted_mv_factor, hinted_rate, nonfinite_warning
from app.ecg.readers._limits import (
    MAX_CELL_CHARS,
    MAX_HEADER_CELL_CHARS,
    MAX_LINE_CHARS,
    check_leads,
    check_samples,
)
from app.ecg.readers.base import FormatReader, ReadHints
from app.ecg.recording import Recording
from app.ecg.units import mv_factor
from app.errors import InvalidInput, MalformedFile

_TIME_NAMES = {"time", "t", "time_s", "t_s", "time(s)", "t(s)", "seconds", "sec"}
_TIME_MS_NAMES = {"time_ms", "t_ms", "time(ms)", "t(ms)", "ms"}
_INDEX_NAMES = {"", "index", "sample", "samples", "sample_no", "sample_number", "n", "#"}
_UNIT_SUFFIX_RE = re.compile(r"^(?P<name>.*?)\s*[\(\[]\s*(?P<unit>[^\)\]]+?)\s*[\)\]]$")
_DELIMS = (",", ";", "\t")


def _decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def _sniff_delimiter(line: str) -> str | None:
    best, best_n = None, 1
    for d in _DELIMS:
        n = len(next(csv.reader([line], delimiter=d)))
        if n > best_n:
            best, best_n = d, n
    return best


def _split_unit(cell: str) -> tuple[str, str | None]:
    m = _UNIT_SUFFIX_RE.match(cell.strip())
    if m and mv_factor(m.group("unit")) is not None:
        return m.group("name").strip(), m.group("unit")
    return cell.strip(), None


def _norm(cell: str) -> str:
    return re.sub(r"\s+", "", cell.strip().lower())


class CsvReader:
    name = "csv"
    title = "CSV / delimited text (one column per lead, header row)"
    extensions = (".csv", ".tsv", ".txt")

    def claims(self, path: Path, head: bytes) -> bool:
        if not head or b"\x00" in head:
            return False
        line = _first_line(_decode(head))
        if not line:
            return False
        delim = _sniff_delimiter(line)
        if delim is None:
            return False
        cells = next(csv.reader([line], delimiter=delim))
        return sum(is_lead_name(_split_unit(c)[0]) for c in cells) >= 2

    def companions(self, path: Path) -> list[Path]:
        return []

    def read(self, path: Path, hints: ReadHints) -> Recording:
        try:
            text = _decode(Path(path).read_bytes())
        except OSError as e:
            raise MalformedFile(f"cannot read CSV file: {e}") from None
        lines = text.splitlines()
        del text
        # index of the header line (first non-blank one), for 1-based line numbers in messages
        start = next((i for i, ln in enumerate(lines) if ln.strip()), None)
        if start is None:
            raise MalformedFile("CSV file is empty")
        _check_line_lengths(lines)
        check_samples(1, len(lines) - start - 1, "CSV file")
        delim = _sniff_delimiter(lines[start])
        if delim is None:
            raise MalformedFile("CSV header row has a single column; expected one column per lead")
        rows = list(csv.reader(io.StringIO("\n".join(lines[start:])), delimiter=delim))
        header = [c.strip() for c in rows[0]]
        check_leads(len(header), "CSV header")
        long_cell = next((c for c in header if len(c) > MAX_HEADER_CELL_CHARS), None)
        if long_cell is not None:
            raise MalformedFile(
                f"CSV header cell {long_cell[:40]!r}... has {len(long_cell)} characters; at most "
                f"{MAX_HEADER_CELL_CHARS} are accepted",
                details={"limit": "max_header_cell_chars", "max": MAX_HEADER_CELL_CHARS},
            )
        body = [(start + 1 + k, r) for k, r in enumerate(rows[1:], start=1) if any(c.strip() for c in r)]
        if not body:
            raise MalformedFile("CSV file has a header row but no samples")

        time_col, time_scale = None, 1.0
        lead_cols: list[int] = []
        names: list[str] = []
        units: list[str | None] = []
        for j, cell in enumerate(header):
            key = _norm(cell)
            if key in _TIME_NAMES and time_col is None:
                time_col = j
            elif key in _TIME_MS_NAMES and time_col is None:
                time_col, time_scale = j, 1e-3
            elif key in _INDEX_NAMES:
                continue
            else:
                name, unit = _split_unit(cell)
                lead_cols.append(j)
                names.append(strip_lead_prefix(name))  # "Lead II" / "ECG II" -> "II"; else as spelt
                units.append(unit)
        if not lead_cols:
            raise MalformedFile("CSV header names no signal columns")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise MalformedFile(f"CSV header names lead(s) more than once: {', '.join(dup)}")

        width = len(header)
        for line_no, r in body:
            if len(r) != width:
                raise MalformedFile(
                    f"CSV line {line_no} has {len(r)} fields, the header has {width}",
                    details={"line": line_no},
                )
        decimal_comma = delim == ";" and any(
            "," in r[j] and "." not in r[j] for _, r in body[:50] for j in lead_cols
        )
        wanted = lead_cols + ([time_col] if time_col is not None else [])
        cells = [[r[j] for j in wanted] for _, r in body]
        table = self._to_float(cells, body, [header[j] for j in wanted], decimal_comma)

        signals = table[:, : len(lead_cols)].T.copy()
        fs = self._rate(hints, table[:, -1] * time_scale if time_col is not None else None)

        default_factor, _ = hinted_mv_factor(hints)
        for k, unit in enumerate(units):
            signals[k] *= mv_factor(unit) if unit is not None else default_factor

        lead_names = tuple(names)
        warnings = nonfinite_warning(signals, lead_names)
        return Recording(
            signals=signals, fs=fs, lead_names=lead_names,
            source_format=self.name, warnings=warnings,
            metadata={
                "delimiter": delim,
                "decimal_comma": decimal_comma,
                "fs_source": "hint" if hints.sampling_rate is not None else "time column",
                "units": [u or (hints.units or "mV") for u in units],
            },
        )

    @staticmethod
    def _to_float(
        cells: list[list[str]], body: list[tuple[int, list[str]]], col_names: list[str], decimal_comma: bool
    ) -> np.ndarray:
        def conv(s: str) -> float:
            s = s.strip()
            if s == "":
                return float("nan")
            if decimal_comma:
                s = s.replace(",", ".")
            return float(s)

        n_cols = len(col_names)
        for i, row in enumerate(cells):
            for j, s in enumerate(row):
                if len(s) > MAX_CELL_CHARS:
                    line_no = body[i][0]
                    raise MalformedFile(
                        f"CSV line {line_no}, column {col_names[j]!r}: a cell of {len(s)} characters; "
                        f"numbers take at most {MAX_CELL_CHARS}",
                        details={"line": line_no, "column": col_names[j],
                                 "limit": "max_cell_chars", "max": MAX_CELL_CHARS},
                    )
        try:
            # 8 bytes per value, whatever the cells' widths (a fixed-width string array would
            # take the widest cell's size for every cell)
            flat = np.fromiter(
                (conv(s) for row in cells for s in row), dtype=np.float64, count=len(cells) * n_cols
            )
            return flat.reshape(len(cells), n_cols)
        except ValueError:
            pass
        out = np.empty((len(cells), n_cols), dtype=np.float64)
        for i, row in enumerate(cells):
            for j, s in enumerate(row):
                try:
                    out[i, j] = conv(s)
                except ValueError:
                    line_no = body[i][0]
                    raise MalformedFile(
                        f"CSV line {line_no}, column {col_names[j]!r}: {s.strip()[:40]!r} is not a number",
                        details={"line": line_no, "column": col_names[j]},
                    ) from None
        return out

    @staticmethod
    def _rate(hints: ReadHints, t: np.ndarray | None) -> float:
        fs_hint = hinted_rate(hints)
        fs_time = None
        if t is not None:
            if t.size < 2 or not np.isfinite(t).all():
                raise MalformedFile("CSV time column needs at least two finite values")
            dt = np.diff(t)
            step = float(np.median(dt))
            if step <= 0:
                raise MalformedFile("CSV time column does not increase")
            if np.abs(dt - step).max() > 0.01 * step + 1e-9:
                raise MalformedFile("CSV time column is not evenly spaced; resample to a fixed rate")
            fs_time = 1.0 / step
        if fs_hint is not None:
            if fs_time is not None and abs(fs_time - fs_hint) > 0.01 * fs_hint:
                raise InvalidInput(
                    f"sampling_rate {fs_hint:g} Hz contradicts the CSV time column ({fs_time:.4g} Hz)"
                )
            return fs_hint
        if fs_time is None:
            raise InvalidInput(
                "CSV files do not carry a sampling rate: pass sampling_rate (Hz) "
                "or add a 'time' column in seconds"
            )
        # a rate derived from printed times: snap to the nearest 1/1000 Hz
        return float(round(fs_time, 3))


def _check_line_lengths(lines: list[str]) -> None:
    longest = max(range(len(lines)), key=lambda i: len(lines[i]))
    if len(lines[longest]) > MAX_LINE_CHARS:
        raise MalformedFile(
            f"CSV line {longest + 1} has {len(lines[longest])} characters; at most "
            f"{MAX_LINE_CHARS} are accepted",
            details={"line": longest + 1, "limit": "max_line_chars", "max": MAX_LINE_CHARS},
        )


READER: FormatReader = CsvReader()
