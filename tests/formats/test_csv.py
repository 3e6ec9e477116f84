"""CSV reader against files written by the csv module from real WFDB records.

Quantisation bound: values are printed with ``d`` decimals in the file's unit, so a read
value is within 0.5 * 10**-d of the printed unit (converted to mV) of the original, plus
float rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.ecg.readers.base import ReadHints
from app.ecg.readers.csv_reader import READER
from app.errors import InvalidInput, MalformedFile
from tests.formats.writers_tabular import (
    RECORD_1000,
    RECORDS_500,
    assert_claims_only,
    foreign_files,
    head,
    load_wfdb,
    requires_samples,
    write_csv,
)

pytestmark = requires_samples


def _bound(decimals: int, scale: float) -> float:
    return 0.5 * 10.0**-decimals / scale * (1 + 1e-9) + 1e-12


def test_comma_file_with_rate_hint(tmp_path):
    sig, fs, names = load_wfdb(RECORDS_500[0])
    path = tmp_path / "a.csv"
    write_csv(path, sig, list(names), decimals=4)
    assert READER.claims(path, head(path))
    rec = READER.read(path, ReadHints(sampling_rate=fs))
    assert rec.source_format == "csv" and rec.fs == fs and rec.lead_names == names
    assert rec.signals.shape == sig.shape
    assert np.abs(rec.signals - sig).max() <= _bound(4, 1.0)
    assert rec.warnings == []


def test_semicolon_decimal_comma_microvolts(tmp_path):
    sig, fs, names = load_wfdb(RECORDS_500[1])
    path = tmp_path / "b.csv"
    write_csv(path, sig, list(names), delimiter=";", decimals=1, scale=1000.0, decimal_comma=True)
    rec = READER.read(path, ReadHints(sampling_rate=fs, units="uV"))
    assert rec.metadata["decimal_comma"] is True and rec.metadata["delimiter"] == ";"
    assert np.abs(rec.signals - sig).max() <= _bound(1, 1000.0)


def test_tab_file_with_time_column_at_1000_hz_and_header_units(tmp_path):
    sig, fs, names = load_wfdb(RECORD_1000)
    assert fs == 1000.0
    path = tmp_path / "c.tsv"
    write_csv(path, sig, [f"{n} (uV)" for n in names], delimiter="\t", decimals=0, scale=1000.0, time_fs=fs)
    assert READER.claims(path, head(path))
    rec = READER.read(path, ReadHints())  # rate from the time column, units from the header
    assert rec.fs == 1000.0 and rec.metadata["fs_source"] == "time column"
    assert rec.lead_names == names
    assert np.abs(rec.signals - sig).max() <= _bound(0, 1000.0)


def test_lower_case_names_and_index_column(tmp_path):
    sig, fs, names = load_wfdb(RECORDS_500[2])
    path = tmp_path / "d.csv"
    with open(path, "w") as fh:
        fh.write("index," + ",".join(n.lower() for n in names) + "\n")
        for i in range(sig.shape[1]):
            fh.write(f"{i}," + ",".join(f"{v:.3f}" for v in sig[:, i]) + "\n")
    rec = READER.read(path, ReadHints(sampling_rate=fs))
    assert rec.lead_names == tuple(n.lower() for n in names)  # spelling kept as the file has it
    assert np.abs(rec.signals - sig).max() <= _bound(3, 1.0)


def test_lead_prefixes_are_dropped_and_other_columns_kept(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('"Lead I";"ECG II";Resp\n0,1;0,2;5\n0,3;0,4;6\n')
    rec = READER.read(path, ReadHints(sampling_rate=250))
    assert rec.lead_names == ("I", "II", "Resp")
    np.testing.assert_allclose(rec.signals, [[0.1, 0.3], [0.2, 0.4], [5, 6]])


def test_missing_rate_is_invalid_input(tmp_path):
    sig, fs, names = load_wfdb(RECORDS_500[0])
    path = tmp_path / "e.csv"
    write_csv(path, sig[:, :50], list(names))
    with pytest.raises(InvalidInput, match="sampling_rate") as e:
        READER.read(path, ReadHints())
    assert not isinstance(e.value, MalformedFile)


def test_text_cell_names_line_and_column(tmp_path):
    sig, fs, names = load_wfdb(RECORDS_500[0])
    path = tmp_path / "f.csv"
    write_csv(path, sig[:, :100], list(names))
    lines = path.read_text().splitlines()
    cells = lines[41].split(",")
    cells[7] = "lead off"
    lines[41] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MalformedFile, match=r"line 42, column 'V2'.*'lead off' is not a number"):
        READER.read(path, ReadHints(sampling_rate=fs))


def test_ragged_row_and_bad_time_column(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("I,II,III\n0.1,0.2,0.3\n0.1,0.2\n")
    with pytest.raises(MalformedFile, match="line 3 has 2 fields"):
        READER.read(path, ReadHints(sampling_rate=500))
    path.write_text("time,I,II\n0.000,0.1,0.2\n0.002,0.1,0.2\n0.010,0.1,0.2\n")
    with pytest.raises(MalformedFile, match="not evenly spaced"):
        READER.read(path, ReadHints())
    path.write_text("t,I,II\n0.000,0.1,0.2\n0.002,0.1,0.2\n0.004,0.1,0.2\n")
    assert READER.read(path, ReadHints()).fs == 500.0
    with pytest.raises(InvalidInput, match="contradicts"):
        READER.read(path, ReadHints(sampling_rate=1000))
    path.write_text("I,II\n")
    with pytest.raises(MalformedFile, match="no samples"):
        READER.read(path, ReadHints(sampling_rate=500))


def test_empty_cells_become_nan_with_a_warning(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("I,II\n0.1,0.2\n,0.3\n0.2,0.4\n")
    rec = READER.read(path, ReadHints(sampling_rate=500))
    assert np.isnan(rec.signals[0, 1]) and rec.signals[1, 1] == 0.3
    assert [w.code for w in rec.warnings] == ["nan_samples"] and rec.warnings[0].leads == ("I",)


def test_bad_hints_are_invalid_input(tmp_path):
    path = tmp_path / "i.csv"
    path.write_text("I,II\n0.1,0.2\n0.1,0.3\n")
    with pytest.raises(InvalidInput, match="positive"):
        READER.read(path, ReadHints(sampling_rate=-5))
    with pytest.raises(InvalidInput, match="not a voltage"):
        READER.read(path, ReadHints(sampling_rate=500, units="mmHg"))


def test_claims_only_csv(tmp_path):
    files = foreign_files(tmp_path)
    assert_claims_only(READER, files, {"csv"})
    other = tmp_path / "plain.csv"
    other.write_text("a,b,c\n1,2,3\n")
    assert not READER.claims(other, head(other))
