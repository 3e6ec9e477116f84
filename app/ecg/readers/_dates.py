"""When an ECG was acquired, as the file states it: the date/time spellings of the formats.

Each parser takes the file's text and returns a ``datetime`` (timezone-aware when the file
gives a zone, naive otherwise: the recorder's local time), ``None`` when the file gives no
usable time, or raises ``ValueError`` when the text is there but is no valid date/time.
Readers call them through :func:`acquisition_time`, which turns that ``ValueError`` into
``None`` and a ``SignalWarning``: a malformed date never fails a read.

An acquisition time needs at least the minute: a date alone, or a time without a date, is
no acquisition time here (``None``); seconds and fractions default to 0. Years before 1900 or
after 2100 are refused as implausible (files use ``00010101`` and the like for "unknown").

The value itself is never put into a warning or a log line: it is a date about a patient.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone, tzinfo

from app.ecg.recording import SignalWarning

WARNING_CODE = "acquisition_time_unreadable"
MIN_YEAR, MAX_YEAR = 1900, 2100

# DICOM DT / HL7 v3 TS: YYYY[MM[DD[HH[MM[SS[.F...]]]]]][+/-ZZZZ]
_COMPACT = re.compile(
    r"(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?"
    r"(?:\.(?P<f>\d{1,12}))?(?P<z>[+-]\d{4})?"
)
_DICOM_DATE = re.compile(r"(?P<y>\d{4})\.?(?P<mo>\d{2})\.?(?P<d>\d{2})")  # DA (ACR-NEMA wrote YYYY.MM.DD)
_DICOM_TIME = re.compile(r"(?P<h>\d{2}):?(?P<mi>\d{2})?:?(?P<s>\d{2})?(?:\.(?P<f>\d{1,6}))?")  # TM
_OFFSET = re.compile(r"(?P<sign>[+-])(?P<h>\d{2})(?P<m>\d{2})")
_WFDB_DATE = re.compile(r"(?P<d>\d{1,2})/(?P<mo>\d{1,2})/(?P<y>\d{4})")
_WFDB_TIME = re.compile(r"(?:(?:(?P<h>\d{1,2}):)?(?P<mi>\d{1,2}):)?(?P<s>\d{1,2})(?:\.(?P<f>\d{1,6}))?")
_ISO_DATE = re.compile(r"(?P<y>\d{4})-(?P<mo>\d{1,2})-(?P<d>\d{1,2})")
_US_DATE = re.compile(r"(?P<mo>\d{1,2})[-/](?P<d>\d{1,2})[-/](?P<y>\d{4})")
_CLOCK = re.compile(r"(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d{1,6}))?)?")


def _int(text: str | None) -> int:
    return int(text) if text else 0


def _micro(fraction: str | None) -> int:
    return int((fraction or "").ljust(6, "0")[:6])


def _checked(value: datetime) -> datetime:
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError("implausible year")
    return value


def utc_offset(text: str | None) -> tzinfo | None:
    """``+HHMM`` / ``-HHMM`` (DICOM TimezoneOffsetFromUTC, HL7 TS zone) as a tzinfo; None when
    absent. Offsets outside -12:00..+14:00 raise ValueError."""
    text = (text or "").strip()
    if not text:
        return None
    match = _OFFSET.fullmatch(text)
    if match is None or int(match["m"]) >= 60:
        raise ValueError("not a UTC offset")
    minutes = int(match["h"]) * 60 + int(match["m"])
    minutes = -minutes if match["sign"] == "-" else minutes
    if not -12 * 60 <= minutes <= 14 * 60:
        raise ValueError("UTC offset out of range")
    return timezone(timedelta(minutes=minutes))


def compact_datetime(text: str | None, zone: str | None = None) -> datetime | None:
    """A DICOM DT or HL7 v3 TS value (``YYYYMMDDHHMMSS.FFFFFF+ZZZZ``, right-truncated); its own
    zone, else ``zone`` (e.g. DICOM TimezoneOffsetFromUTC), else naive. None when empty or
    less precise than the minute."""
    text = (text or "").strip()
    if not text:
        return None
    match = _COMPACT.fullmatch(text)
    if match is None:
        raise ValueError("not a compact date/time")
    tz = utc_offset(match["z"]) if match["z"] else utc_offset(zone)
    if match["mi"] is None:  # a date, or a date and an hour: no acquisition time
        date(int(match["y"]), _int(match["mo"]) or 1, _int(match["d"]) or 1)  # still a valid date?
        return None
    return _checked(datetime(int(match["y"]), int(match["mo"]), int(match["d"]), int(match["h"]), int(match["mi"]),
                             _int(match["s"]), _micro(match["f"]), tzinfo=tz))


def dicom_date_time(da: str | None, tm: str | None, zone: str | None = None) -> datetime | None:
    """A DICOM DA + TM pair (``YYYYMMDD`` + ``HHMMSS.FFFFFF``), in ``zone`` (TimezoneOffsetFromUTC)
    when given. None when either is missing or the time has no minutes."""
    da, tm = (da or "").strip(), (tm or "").strip()
    if not da or not tm:
        return None
    day, clock = _DICOM_DATE.fullmatch(da), _DICOM_TIME.fullmatch(tm)
    if day is None or clock is None:
        raise ValueError("not a DICOM date and time")
    tz = utc_offset(zone)
    if clock["mi"] is None:
        return None
    return _checked(datetime(int(day["y"]), int(day["mo"]), int(day["d"]), int(clock["h"]), int(clock["mi"]),
                             _int(clock["s"]), _micro(clock["f"]), tzinfo=tz))


def wfdb_date_time(base_time: str | None, base_date: str | None) -> datetime | None:
    """A WFDB header's base time and date (``HH:MM:SS[.ffffff]`` and ``DD/MM/YYYY``; like wfdb, a
    time with fewer fields is read from the right: ``MM:SS``, ``SS``). Naive: WFDB has no zone.
    None without both."""
    if not base_time or not base_date:
        return None
    clock, day = _WFDB_TIME.fullmatch(base_time), _WFDB_DATE.fullmatch(base_date)
    if clock is None or day is None:
        raise ValueError("not a WFDB time and date")
    return _checked(datetime(int(day["y"]), int(day["mo"]), int(day["d"]),  # noqa: DTZ001 -- WFDB has no zone
                             _int(clock["h"]), _int(clock["mi"]), int(clock["s"]), _micro(clock["f"])))


_EDF_DATE = re.compile(r"(?P<d>\d{2})\.(?P<mo>\d{2})\.(?P<y>\d{2})")
_EDF_TIME = re.compile(r"(?P<h>\d{2})\.(?P<mi>\d{2})\.(?P<s>\d{2})")
EDF_CLIPPING_YEAR = 85  # EDF: two-digit years 85-99 are 1985-1999, 00-84 are 2000-2084


def edf_date_time(start_date: str | None, start_time: str | None) -> datetime | None:
    """An EDF/EDF+/BDF header's startdate and starttime (``dd.mm.yy``, ``hh.mm.ss``, bytes
    168-183 of the fixed header), with the EDF clipping year 1985. Naive: EDF has no zone.
    None when either field is blank."""
    start_date, start_time = (start_date or "").strip(), (start_time or "").strip()
    if not start_date or not start_time:
        return None
    day, clock = _EDF_DATE.fullmatch(start_date), _EDF_TIME.fullmatch(start_time)
    if day is None or clock is None:
        raise ValueError("not an EDF start date and time")
    yy = int(day["y"])
    year = 1900 + yy if yy >= EDF_CLIPPING_YEAR else 2000 + yy
    return _checked(datetime(year, int(day["mo"]), int(day["d"]),  # noqa: DTZ001 -- EDF has no zone
                             int(clock["h"]), int(clock["mi"]), int(clock["s"])))


def _clock(text: str) -> time:
    match = _CLOCK.fullmatch(text)
    if match is None:
        raise ValueError("not a clock time")
    return time(int(match["h"]), int(match["mi"]), _int(match["s"]), _micro(match["f"]))


def iso_date_time(day_text: str | None, clock_text: str | None) -> datetime | None:
    """``YYYY-MM-DD`` + ``HH:MM[:SS]`` (Philips Sierra ``dataacquisition`` date/time), naive."""
    day_text, clock_text = (day_text or "").strip(), (clock_text or "").strip()
    if not day_text or not clock_text:
        return None
    day = _ISO_DATE.fullmatch(day_text)
    if day is None:
        raise ValueError("not an ISO date")
    return _checked(datetime.combine(date(int(day["y"]), int(day["mo"]), int(day["d"])), _clock(clock_text)))


def us_date_time(day_text: str | None, clock_text: str | None) -> datetime | None:
    """``MM-DD-YYYY`` + ``HH:MM[:SS]`` (GE MUSE TestDemographics AcquisitionDate/Time), naive."""
    day_text, clock_text = (day_text or "").strip(), (clock_text or "").strip()
    if not day_text or not clock_text:
        return None
    day = _US_DATE.fullmatch(day_text)
    if day is None:
        raise ValueError("not an MM-DD-YYYY date")
    return _checked(datetime.combine(date(int(day["y"]), int(day["mo"]), int(day["d"])), _clock(clock_text)))


def acquisition_time(
    candidates: list[tuple[str, Callable[[], datetime | None]]], label: str
) -> tuple[datetime | None, list[SignalWarning]]:
    """The first of ``candidates`` (what the file calls it, a parser of it) that gives a time,
    or None; a warning naming the fields that held something unreadable when none gave one.
    Never raises for what the file says."""
    bad: list[str] = []
    for field, parse in candidates:
        try:
            value = parse()
        except (ValueError, OverflowError):  # a malformed or impossible date (month 13, 31 February...)
            bad.append(field)
            continue
        if value is not None:
            return value, []
    if not bad:
        return None, []
    return None, [SignalWarning(WARNING_CODE, f"{label}: {', '.join(bad)} is not a valid date/time; the "
                                              "acquisition time is unknown")]
