"""WFDB reader on real records: the shared sample folder, the copied records, broken files."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

from app.ecg.preprocess import preprocess
from app.ecg.readers.base import HEAD_BYTES, ReadHints
from app.ecg.readers.wfdb_reader import READER
from app.errors import MalformedFile, UnsafeUpload, UnsupportedFormat, UnsupportedSignal

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "ecg-samples"


def _index_rows() -> list[dict[str, str]]:
    index = SHARED / "index.csv"
    if not index.is_file():
        return []
    with index.open(newline="") as handle:
        return list(csv.DictReader(handle))


ROWS = _index_rows()


def _head(path: Path) -> bytes:
    return path.read_bytes()[:HEAD_BYTES]


def _copy_record(src_dir: Path, stem: str, dst: Path) -> Path:
    for file in src_dir.glob(f"{stem}.*"):
        shutil.copy(file, dst / file.name)
        os.chmod(dst / file.name, 0o644)
    return dst / f"{stem}.hea"


@pytest.mark.parametrize("row", ROWS, ids=[r["record"] for r in ROWS])
def test_every_shared_record_reads_and_preprocesses(row: dict[str, str], shared_samples_dir: Path) -> None:
    header = shared_samples_dir / f"{row['record']}.hea"
    assert READER.claims(header, _head(header))
    rec = READER.read(header, ReadHints())
    assert rec.fs == float(row["fs"])
    assert rec.n_samples == int(row["n_samples"])
    assert rec.lead_names == tuple(row["leads"].split("|"))
    assert rec.source_format == "wfdb"
    assert rec.signals.dtype == np.float64
    reference = wfdb.rdrecord(str(header.with_suffix(""))).p_signal.T
    np.testing.assert_array_equal(rec.signals, reference)
    model_input = preprocess(rec)
    expected_windows = max(1, -(-round(rec.n_samples * 100 / rec.fs) // 1000))
    assert model_input.windows.shape == (expected_windows, 12, 1000)
    assert model_input.windows.dtype == np.float32
    assert np.isfinite(model_input.windows).all()


def test_ptbdb_fifteen_lower_case_leads(shared_samples_dir: Path) -> None:
    header = shared_samples_dir / "ptbdb" / "s0010_re.hea"
    companions = READER.companions(header)
    assert [p.name for p in companions] == ["s0010_re.dat", "s0010_re.xyz"]
    rec = READER.read(header, ReadHints())
    assert rec.signals.shape == (15, 38400)
    assert rec.fs == 1000.0
    assert rec.lead_names[:3] == ("i", "ii", "iii") and rec.lead_names[-3:] == ("vx", "vy", "vz")
    model_input = preprocess(rec)
    assert model_input.windows.shape == (4, 12, 1000)
    ignored = [w for w in model_input.warnings if w.code == "ignored_leads"]
    assert ignored and ignored[0].leads == ("vx", "vy", "vz")
    assert model_input.derived_leads == []


def test_copied_records_read(ecg_data_dir: Path) -> None:
    for stem, fs, n in [("E07500", 500, 5000), ("A0001", 500, 7500), ("S0001", 1000, 38400), ("s0010_re", 1000, 38400)]:
        rec = READER.read(ecg_data_dir / f"{stem}.hea", ReadHints())
        assert (rec.fs, rec.n_samples) == (fs, n)


def test_metadata_has_no_identifiers(ecg_data_dir: Path) -> None:
    rec = READER.read(ecg_data_dir / "s0010_re.hea", ReadHints())
    text = repr(rec.metadata).lower()
    for identifying in ("s0010", "81", "female", "1990", "infarction", "comments"):
        assert identifying not in text
    assert set(rec.metadata) == {"n_signals", "storage_formats", "units_in", "decoder"}
    assert rec.metadata["decoder"] == "numpy"


def test_lower_case_mv_units_are_millivolts(ecg_data_dir: Path) -> None:
    # S0001.hea writes its gain as "1000/mv".
    assert "/mv" in (ecg_data_dir / "S0001.hea").read_text()
    rec = READER.read(ecg_data_dir / "S0001.hea", ReadHints())
    raw = wfdb.rdrecord(str(ecg_data_dir / "S0001")).p_signal.T
    np.testing.assert_array_equal(rec.signals, raw)


def test_microvolt_header_is_converted(ecg_data_dir: Path, tmp_path: Path) -> None:
    header = _copy_record(ecg_data_dir, "E07500", tmp_path)
    header.write_text(header.read_text().replace("1000.0(0)/mV", "1.0(0)/uV"))
    rec = READER.read(header, ReadHints())
    original = READER.read(ecg_data_dir / "E07500.hea", ReadHints())
    np.testing.assert_allclose(rec.signals, original.signals)  # 1 ADU/uV == 1000 ADU/mV


def test_unknown_header_unit_is_refused(ecg_data_dir: Path, tmp_path: Path) -> None:
    header = _copy_record(ecg_data_dir, "E07500", tmp_path)
    header.write_text(header.read_text().replace("/mV", "/mmHg"))
    with pytest.raises(UnsupportedSignal, match="mmHg"):
        READER.read(header, ReadHints())


def test_invalid_samples_stay_nan(ecg_data_dir: Path, tmp_path: Path) -> None:
    header = _copy_record(ecg_data_dir, "E07500", tmp_path)
    mat = tmp_path / "E07500.mat"
    data = bytearray(mat.read_bytes())
    # Sample 10 of lead I (format 16, 12 interleaved channels, 24-byte offset) := -32768.
    position = 24 + (10 * 12 + 0) * 2
    data[position : position + 2] = (-32768).to_bytes(2, "little", signed=True)
    mat.write_bytes(bytes(data))
    rec = READER.read(header, ReadHints())
    assert np.isnan(rec.signals[0, 10])
    assert np.isnan(rec.signals).sum() == 1
    model_input = preprocess(rec)
    nan = [w for w in model_input.warnings if w.code == "nan_samples"]
    assert nan and nan[0].leads == ("I",) and "1 missing" in nan[0].message


def test_claims_by_content_not_extension(ecg_data_dir: Path, tmp_path: Path) -> None:
    header = ecg_data_dir / "E07500.hea"
    assert READER.claims(tmp_path / "renamed.txt", _head(header))
    assert not READER.claims(header, _head(ecg_data_dir / "E07500.mat"))
    assert not READER.claims(header, b"I,II,III\n1,2,3\n")
    assert not READER.claims(header, b"0 1 2\n0.002 3 4\n0.004 5 6\n")
    assert not READER.claims(header, b"hello world\n")
    assert not READER.claims(header, b"")


def test_header_pointing_outside_its_folder(ecg_data_dir: Path, tmp_path: Path) -> None:
    inner = tmp_path / "upload"
    inner.mkdir()
    shutil.copy(ecg_data_dir / "E07500.mat", tmp_path / "E07500.mat")
    text = (ecg_data_dir / "E07500.hea").read_text()
    for bad in ["../E07500.mat", str(tmp_path / "E07500.mat"), "sub/E07500.mat", "..\\E07500.mat"]:
        header = inner / "E07500.hea"
        header.write_text(text.replace("E07500.mat", bad))
        with pytest.raises(UnsafeUpload, match="not a plain file next to the header"):
            READER.read(header, ReadHints())
        with pytest.raises(UnsafeUpload):
            READER.companions(header)


def test_header_naming_a_symlink_is_refused(ecg_data_dir: Path, tmp_path: Path) -> None:
    header = tmp_path / "E07500.hea"
    shutil.copy(ecg_data_dir / "E07500.hea", header)
    (tmp_path / "E07500.mat").symlink_to(ecg_data_dir / "E07500.mat")
    with pytest.raises(UnsafeUpload, match="E07500.mat"):
        READER.read(header, ReadHints())


def test_missing_signal_file(ecg_data_dir: Path, tmp_path: Path) -> None:
    shutil.copy(ecg_data_dir / "s0010_re.hea", tmp_path)
    shutil.copy(ecg_data_dir / "s0010_re.dat", tmp_path)
    with pytest.raises(MalformedFile, match=r"s0010_re\.xyz, which is not in the upload"):
        READER.read(tmp_path / "s0010_re.hea", ReadHints())


@pytest.mark.parametrize("keep_bytes", [0, 24, 50_000, 120_000])
def test_truncated_signal_file(ecg_data_dir: Path, tmp_path: Path, keep_bytes: int) -> None:
    header = _copy_record(ecg_data_dir, "E07500", tmp_path)
    mat = tmp_path / "E07500.mat"
    mat.write_bytes(mat.read_bytes()[:keep_bytes])
    with pytest.raises(MalformedFile, match=r"E07500\.mat is truncated"):
        READER.read(header, ReadHints())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("E07500 12 500 5000\n", "12 signals but has 0 signal lines"),
        ("E07500 1 500 5000\nE07500.mat zz 1000/mV 16 0 0 0 0 I\n", "no valid WFDB storage format"),
        ("this is not a header\n", "not a WFDB record line"),
        ("E07500 0 500 5000\n", "0 signals"),
    ],
)
def test_broken_headers(tmp_path: Path, text: str, message: str) -> None:
    header = tmp_path / "E07500.hea"
    header.write_text(text)
    with pytest.raises(MalformedFile, match=message):
        READER.read(header, ReadHints())


def test_binary_header_is_malformed(tmp_path: Path) -> None:
    header = tmp_path / "x.hea"
    header.write_bytes(b"x 1 500 10\n\x00\x01")
    with pytest.raises(MalformedFile, match="binary"):
        READER.read(header, ReadHints())


def test_wfdb_failure_is_wrapped(ecg_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A ValueError from wfdb (on the wfdb path) must come back as MalformedFile naming the file.
    from app.ecg.readers import wfdb_reader

    header = _copy_record(ecg_data_dir, "E07500", tmp_path)
    monkeypatch.setattr(wfdb_reader, "_simple_plan", lambda *_args: None)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise ValueError("time data '99:99:99' does not match format '%H:%M:%S'")

    monkeypatch.setattr(wfdb, "rdrecord", broken)
    with pytest.raises(MalformedFile, match=r"E07500\.hea: cannot read WFDB record \(ValueError"):
        READER.read(header, ReadHints())


def test_a_base_time_wfdb_cannot_parse_is_dropped_not_fatal(ecg_data_dir: Path, tmp_path: Path) -> None:
    # A malformed acquisition time never fails the read (issue 12): dropped, noted, acquired_at None.
    header = _copy_record(ecg_data_dir, "E07500", tmp_path)
    header.write_text(header.read_text().replace("E07500 12 500 5000", "E07500 12 500 5000 99:99:99", 1))
    rec = READER.read(header, ReadHints())
    assert rec.acquired_at is None and rec.n_samples == 5000
    assert rec.metadata["header_quirks"] == ["base time/date is not a real time or date; ignored"]


def test_multi_segment_is_refused(tmp_path: Path) -> None:
    header = tmp_path / "multi.hea"
    header.write_text("multi/2 12 500 10000\nseg1 5000\nseg2 5000\n")
    assert READER.claims(header, header.read_bytes())
    with pytest.raises(UnsupportedFormat, match="multi-segment"):
        READER.read(header, ReadHints())


def test_header_without_sampling_rate_needs_a_hint(ecg_data_dir: Path, tmp_path: Path) -> None:
    header = _copy_record(ecg_data_dir, "E07500", tmp_path)
    lines = header.read_text().splitlines()
    lines[0] = "E07500 12"
    header.write_text("\n".join(lines) + "\n")
    with pytest.raises(UnsupportedSignal, match="no sampling frequency"):
        READER.read(header, ReadHints())
    assert READER.read(header, ReadHints(sampling_rate=500)).fs == 500.0


def test_non_hea_name_is_refused(ecg_data_dir: Path, tmp_path: Path) -> None:
    shutil.copy(ecg_data_dir / "E07500.hea", tmp_path / "E07500.txt")
    with pytest.raises(MalformedFile, match=r"<record>\.hea"):
        READER.read(tmp_path / "E07500.txt", ReadHints())


# --- headers with the quirks of real archives ------------------------------------------------------

_QUIRKS = {
    # (record line or whole-header transform, whether the reader reports a header quirk)
    "record name with .mat": (lambda t: t.replace("E07500 12", "E07500.mat 12", 1), True),
    "record name with .hea": (lambda t: t.replace("E07500 12", "E07500.hea 12", 1), True),
    "record name with .dat and CRLF": (
        lambda t: t.replace("E07500 12", "E07500.dat 12", 1).replace("\n", "\r\n"), True),
    "byte-order mark": (lambda t: "\ufeff" + t, True),
    "ISO base date": (lambda t: t.replace("E07500 12 500 5000", "E07500 12 500 5000 12:30:00 2020-01-02", 1), True),
    "two-digit year": (lambda t: t.replace("E07500 12 500 5000", "E07500 12 500 5000 12:30:00 01/02/20", 1), True),
    "CRLF": (lambda t: t.replace("\n", "\r\n"), False),
    "trailing blanks": (lambda t: "\n".join(line + " \t " for line in t.splitlines()) + "\n", False),
    "tabs": (lambda t: t.replace(" ", "\t"), False),
    "blank lines and no final newline": (lambda t: "\n\n".join(t.splitlines()), False),
    "no sample count": (lambda t: t.replace("E07500 12 500 5000", "E07500 12 500", 1), False),
    "signal lines with file and format only": (
        lambda t: "\n".join([t.splitlines()[0]] + [" ".join(x.split()[:3]) for x in t.splitlines()[1:13]]) + "\n",
        False),
}


@pytest.mark.parametrize("quirk", sorted(_QUIRKS))
def test_quirky_headers_read_as_wfdb_reads_the_plain_one(quirk: str, ecg_data_dir: Path, tmp_path: Path) -> None:
    transform, reported = _QUIRKS[quirk]
    shutil.copy(ecg_data_dir / "E07500.mat", tmp_path / "E07500.mat")
    plain = (ecg_data_dir / "E07500.hea").read_text()
    header = tmp_path / "E07500.hea"
    header.write_bytes(transform(plain).encode("utf-8"))
    assert READER.claims(header, _head(header))
    rec = READER.read(header, ReadHints())
    # what wfdb reads from the unquirked header (the signal-line quirk changes gains: wfdb reads
    # that header itself)
    ref_dir = tmp_path if "format only" in quirk else ecg_data_dir
    reference = wfdb.rdrecord(str(ref_dir / "E07500"))
    np.testing.assert_array_equal(rec.signals, reference.p_signal.T)
    assert rec.fs == 500.0
    assert rec.lead_names == tuple(n or f"signal{i + 1}" for i, n in enumerate(reference.sig_name))
    assert ("header_quirks" in rec.metadata) is reported, rec.metadata


def test_record_name_with_extension_through_wfdb_itself(ecg_data_dir: Path, tmp_path: Path) -> None:
    """A non-ASCII comment keeps the record off the numpy fast path: wfdb reads the fixed
    header, written with links to the signal files in a temporary folder."""
    shutil.copy(ecg_data_dir / "E07500.mat", tmp_path / "E07500.mat")
    text = (ecg_data_dir / "E07500.hea").read_text().replace("E07500 12", "E07500.mat 12", 1)
    header = tmp_path / "E07500.hea"
    header.write_bytes((text + "# Kommentar: \u00c4rztin\n").encode("utf-8"))
    rec = READER.read(header, ReadHints())
    assert rec.metadata["decoder"] == "wfdb"
    assert rec.metadata["header_quirks"] == ["record name 'E07500.mat' read as 'E07500' (the header's file name)"]
    reference = wfdb.rdrecord(str(ecg_data_dir / "E07500")).p_signal.T
    np.testing.assert_array_equal(rec.signals, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["E07500.hea", "E07500.mat"]


def test_garbled_gain_field_gets_a_clear_422(ecg_data_dir: Path, tmp_path: Path) -> None:
    shutil.copy(ecg_data_dir / "E07500.mat", tmp_path / "E07500.mat")
    text = (ecg_data_dir / "E07500.hea").read_text().replace("1000.0(0)/mV", "lots/mV", 1)
    (tmp_path / "E07500.hea").write_text(text)
    with pytest.raises(UnsupportedSignal) as info:
        READER.read(tmp_path / "E07500.hea", ReadHints())
    assert "'lots/mV'" in info.value.message and str(tmp_path) not in info.value.message
