"""``Recording.acquired_at``: the acquisition time each reader takes from its file.

Files are written by the project's independent test writers (tests/formats/writers_xml_dicom.py)
and, for WFDB, by ``wfdb.wrsamp``; never by the readers under test. A file without a time gives
None; a malformed one gives None and a warning, never a failed read.
"""

# ruff: noqa: DTZ001 -- naive datetimes are what files without a zone give
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import wfdb
from tests.formats import writers_xml_dicom as W

from app.ecg.readers._dates import WARNING_CODE, compact_datetime, dicom_date_time, utc_offset, wfdb_date_time
from app.ecg.readers.base import ReadHints
from app.ecg.readers.dicom_reader import READER as DICOM
from app.ecg.readers.ge_muse import READER as MUSE
from app.ecg.readers.hl7_aecg import READER as AECG
from app.ecg.readers.philips_sierra import READER as SIERRA
from app.ecg.readers.wfdb_reader import READER as WFDB
from app.ecg.recording import Recording

PLUS_2 = timezone(timedelta(hours=2))
MINUS_0530 = timezone(-timedelta(hours=5, minutes=30))


@pytest.fixture(scope="module")
def rec() -> W.Rec:
    full = W.load(W.REC_500_A)
    return W.Rec(full.signals[:, :1000], full.fs, full.names)


def _codes(recording: Recording) -> list[str]:
    return [w.code for w in recording.warnings]


# --- WFDB -------------------------------------------------------------------------------------


def _wfdb(tmp_path: Path, rec: W.Rec, **when: object) -> Path:
    wfdb.wrsamp("rec", fs=rec.fs, units=["mV"] * len(rec.names), sig_name=list(rec.names), p_signal=rec.signals.T,
                fmt=["16"] * len(rec.names), adc_gain=[1000.0] * len(rec.names), baseline=[0] * len(rec.names),
                write_dir=str(tmp_path), **when)  # type: ignore[arg-type]
    return tmp_path / "rec.hea"


def test_wfdb_base_date_and_time(tmp_path: Path, rec: W.Rec) -> None:
    header = _wfdb(tmp_path, rec, base_date=datetime(2020, 5, 12).date(),
                   base_time=datetime(2020, 5, 12, 12, 33, 59).time())
    assert "12:33:59 12/05/2020" in header.read_text()
    out = WFDB.read(header, ReadHints())
    assert out.acquired_at == datetime(2020, 5, 12, 12, 33, 59) and out.acquired_at.tzinfo is None  # naive
    assert WARNING_CODE not in _codes(out)


def test_wfdb_without_date_or_with_a_time_only_gives_none(tmp_path: Path, rec: W.Rec) -> None:
    assert WFDB.read(_wfdb(tmp_path, rec), ReadHints()).acquired_at is None
    timed = _wfdb(tmp_path, rec, base_time=datetime(2020, 5, 12, 12, 33, 59).time())
    assert WFDB.read(timed, ReadHints()).acquired_at is None  # a time of day is no acquisition time


@pytest.mark.parametrize("when", ["12:33:59 31/02/2020", "25:10:00 12/05/2020", "12:33:59 2020-05-12",
                                  "12-May-2020 12:33:59"])
def test_wfdb_malformed_base_date_never_fails_the_read(tmp_path: Path, rec: W.Rec, when: str) -> None:
    header = _wfdb(tmp_path, rec)
    lines = header.read_text().splitlines()
    lines[0] = f"{lines[0]} {when}"
    header.write_text("\n".join(lines) + "\n")
    out = WFDB.read(header, ReadHints())
    assert out.acquired_at is None
    np.testing.assert_allclose(out.signals, rec.signals, atol=1e-3)
    assert any("ignored" in q for q in out.metadata["header_quirks"])


def test_wfdb_implausible_year_is_a_warning(tmp_path: Path, rec: W.Rec) -> None:
    header = _wfdb(tmp_path, rec)
    lines = header.read_text().splitlines()
    lines[0] = f"{lines[0]} 00:00:00 01/01/1800"
    header.write_text("\n".join(lines) + "\n")
    out = WFDB.read(header, ReadHints())
    assert out.acquired_at is None and WARNING_CODE in _codes(out)
    assert "1800" not in repr(out.warnings)  # the value itself is never echoed


# --- DICOM ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dates", "expected"), [
    ({"AcquisitionDateTime": "20200512123359.250000+0200"}, datetime(2020, 5, 12, 12, 33, 59, 250000, tzinfo=PLUS_2)),
    ({"AcquisitionDateTime": "20200512123359", "TimezoneOffsetFromUTC": "-0530"},
     datetime(2020, 5, 12, 12, 33, 59, tzinfo=MINUS_0530)),
    ({"AcquisitionDateTime": "202005121233"}, datetime(2020, 5, 12, 12, 33)),  # naive, to the minute
    ({"AcquisitionDate": "20200512", "AcquisitionTime": "123359.5"}, datetime(2020, 5, 12, 12, 33, 59, 500000)),
    ({"AcquisitionDate": "20200512", "AcquisitionTime": "123359", "TimezoneOffsetFromUTC": "+0200"},
     datetime(2020, 5, 12, 12, 33, 59, tzinfo=PLUS_2)),
    ({"ContentDate": "20200513", "ContentTime": "080000"}, datetime(2020, 5, 13, 8, 0)),
    # the first usable one wins: a broken AcquisitionDateTime falls back to the date + time
    ({"AcquisitionDateTime": "2020-05-12", "AcquisitionDate": "20200512", "AcquisitionTime": "1233"},
     datetime(2020, 5, 12, 12, 33)),
])
def test_dicom_acquisition_time(tmp_path: Path, rec: W.Rec, dates: dict[str, str], expected: datetime) -> None:
    out = DICOM.read(W.write_dicom(tmp_path / "a.dcm", rec, dates=dates), ReadHints())
    assert out.acquired_at == expected
    assert (out.acquired_at.utcoffset() if out.acquired_at else None) == expected.utcoffset()
    assert WARNING_CODE not in _codes(out)
    W.assert_no_identifiers(out.metadata)


def test_dicom_without_a_time_gives_none(tmp_path: Path, rec: W.Rec) -> None:
    assert DICOM.read(W.write_dicom(tmp_path / "a.dcm", rec), ReadHints()).acquired_at is None
    date_only = DICOM.read(W.write_dicom(tmp_path / "b.dcm", rec, dates={"AcquisitionDate": "20200512"}), ReadHints())
    assert date_only.acquired_at is None and WARNING_CODE not in _codes(date_only)


@pytest.mark.parametrize("dates", [
    {"AcquisitionDateTime": "20201312123359"},  # month 13
    {"AcquisitionDate": "20200230", "AcquisitionTime": "120000"},  # 30 February
    {"ContentDate": "20200512", "ContentTime": "256100"},
    {"AcquisitionDateTime": "00010101000000"},  # "unknown", spelt as a date
])
def test_dicom_malformed_time_is_none_with_a_warning(tmp_path: Path, rec: W.Rec, dates: dict[str, str]) -> None:
    out = DICOM.read(W.write_dicom(tmp_path / "a.dcm", rec, dates=dates), ReadHints())
    assert out.acquired_at is None and WARNING_CODE in _codes(out)
    assert out.signals.shape == rec.signals.shape


def test_dicom_malformed_zone_leaves_the_time_naive(tmp_path: Path, rec: W.Rec) -> None:
    dates = {"AcquisitionDateTime": "20200512123359", "TimezoneOffsetFromUTC": "+2500"}
    out = DICOM.read(W.write_dicom(tmp_path / "a.dcm", rec, dates=dates), ReadHints())
    assert out.acquired_at == datetime(2020, 5, 12, 12, 33, 59) and WARNING_CODE in _codes(out)


# --- HL7 aECG ---------------------------------------------------------------------------------


def test_aecg_effective_time(tmp_path: Path, rec: W.Rec) -> None:
    out = AECG.read(W.write_aecg(tmp_path / "a.xml", rec, effective_time="20200512123359.123-0530"), ReadHints())
    assert out.acquired_at == datetime(2020, 5, 12, 12, 33, 59, 123000, tzinfo=MINUS_0530)
    naive = AECG.read(W.write_aecg(tmp_path / "b.xml", rec, effective_time="20200512123359"), ReadHints())
    assert naive.acquired_at == datetime(2020, 5, 12, 12, 33, 59) and naive.acquired_at.tzinfo is None
    # the rhythm series' own time is preferred over the document's
    both = AECG.read(W.write_aecg(tmp_path / "c.xml", rec, effective_time="20200512120000",
                                  series_effective_time="20200512123000+0200"), ReadHints())
    assert both.acquired_at == datetime(2020, 5, 12, 12, 30, tzinfo=PLUS_2)


def test_aecg_without_or_with_a_malformed_time(tmp_path: Path, rec: W.Rec) -> None:
    assert AECG.read(W.write_aecg(tmp_path / "a.xml", rec), ReadHints()).acquired_at is None
    bad = AECG.read(W.write_aecg(tmp_path / "b.xml", rec, effective_time="2020-05-12T12:33"), ReadHints())
    assert bad.acquired_at is None and WARNING_CODE in _codes(bad)
    assert bad.signals.shape == rec.signals.shape


# --- GE MUSE and Philips Sierra -----------------------------------------------------------------


def test_muse_acquisition_date_and_time(tmp_path: Path, rec: W.Rec) -> None:
    out = MUSE.read(W.write_muse(tmp_path / "m.xml", rec, acquired=("05-12-2020", "12:33:59")), ReadHints())
    assert out.acquired_at == datetime(2020, 5, 12, 12, 33, 59)  # MM-DD-YYYY, naive
    assert MUSE.read(W.write_muse(tmp_path / "n.xml", rec), ReadHints()).acquired_at is None
    bad = MUSE.read(W.write_muse(tmp_path / "b.xml", rec, acquired=("13-45-2020", "12:33:59")), ReadHints())
    assert bad.acquired_at is None and WARNING_CODE in _codes(bad)


def test_sierra_dataacquisition_date_and_time(tmp_path: Path, rec: W.Rec) -> None:
    out = SIERRA.read(W.write_sierra(tmp_path / "s.xml", rec, acquired=("2020-05-12", "12:33:59")), ReadHints())
    assert out.acquired_at == datetime(2020, 5, 12, 12, 33, 59)
    assert SIERRA.read(W.write_sierra(tmp_path / "n.xml", rec), ReadHints()).acquired_at is None
    bad = SIERRA.read(W.write_sierra(tmp_path / "b.xml", rec, acquired=("2020-05-12", "noon")), ReadHints())
    assert bad.acquired_at is None and WARNING_CODE in _codes(bad)


# --- the parsers themselves -----------------------------------------------------------------------


def test_parsers() -> None:
    assert compact_datetime("2020") is None and compact_datetime("2020051212") is None  # less than the minute
    assert compact_datetime("20200512123359Z".rstrip("Z")) == datetime(2020, 5, 12, 12, 33, 59)
    assert compact_datetime("20200512123359.1234567") == datetime(2020, 5, 12, 12, 33, 59, 123456)
    with pytest.raises(ValueError):
        compact_datetime("20200230")  # a date that does not exist, even without a time
    assert dicom_date_time("2020.05.12", "12:33:59") == datetime(2020, 5, 12, 12, 33, 59)  # ACR-NEMA spelling
    assert dicom_date_time("20200512", "12") is None  # an hour alone
    assert utc_offset("+1400") == timezone(timedelta(hours=14)) and utc_offset("") is None
    for bad in ("+1500", "0100", "+01:00", "+0160"):
        with pytest.raises(ValueError):
            utc_offset(bad)
    assert wfdb_date_time("33:59", "12/05/2020") == datetime(2020, 5, 12, 0, 33, 59)  # read from the right, as wfdb
    assert wfdb_date_time(None, "12/05/2020") is None


# --- EDF --------------------------------------------------------------------------------------


def _edf_dated(tmp_path: Path, rec: W.Rec, fields: bytes) -> Path:
    from tests.formats.writers_tabular import write_edf

    path = tmp_path / "rec.edf"
    write_edf(path, rec.signals, rec.fs, list(rec.names), plus=False)
    raw = bytearray(path.read_bytes())
    raw[168:184] = fields  # the fixed header's startdate (dd.mm.yy) and starttime (hh.mm.ss)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize(("fields", "expected"), [
    (b"12.05.2014.33.59", datetime(2020, 5, 12, 14, 33, 59)),  # noqa: DTZ001 -- EDF has no zone
    (b"01.01.8500.00.00", datetime(1985, 1, 1, 0, 0, 0)),  # noqa: DTZ001 -- the clipping year: 85 is 1985
    (b"31.12.8423.59.59", datetime(2084, 12, 31, 23, 59, 59)),  # noqa: DTZ001 -- and 84 is 2084
])
def test_edf_start_date_and_time(tmp_path: Path, rec: W.Rec, fields: bytes, expected: datetime) -> None:
    from app.ecg.readers.edf_reader import READER as EDF

    recording = EDF.read(_edf_dated(tmp_path, rec, fields), ReadHints())
    assert recording.acquired_at == expected and recording.acquired_at.tzinfo is None
    assert WARNING_CODE not in _codes(recording)


def test_edf_impossible_start_date_is_none_with_a_warning(tmp_path: Path, rec: W.Rec) -> None:
    from app.ecg.readers.edf_reader import READER as EDF

    path = _edf_dated(tmp_path, rec, b"31.02.2014.33.59")  # 31 February
    recording = EDF.read(path, ReadHints())
    assert recording.acquired_at is None and WARNING_CODE in _codes(recording)
    assert "31.02" not in str([w.message for w in recording.warnings])  # the value is never repeated
