"""The SCP-ECG reader against the independent writer (tests/formats/writers_scp.py): real WFDB
records converted at 5 uV per digit come back within half a step, with names, rate, gains and
acquisition time; damaged or absurd records are refused with a 4xx-mapped error naming the
problem, the ones declaring gigabytes within the malformed-file memory bound."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from tests.api.conftest import client  # noqa: F401 - the API tests' app fixture
from tests.formats import writers_scp as S
from tests.formats import writers_xml_dicom as W
from tests.formats.test_malformed_files import PEAK_BOUND_BYTES, read_measuring_peak

from app.ecg.readers import read_any, sniff
from app.errors import InvalidInput, MalformedFile, UnsupportedSignal, UploadTooLarge

STEP_UV = 5.0


def _write(tmp: Path, record: str = W.REC_500_A, **kw: object) -> S.Written:
    rec = W.load(record)
    return S.write_scp(tmp / "ecg.scp", rec.signals, rec.fs, rec.names, step_uv=STEP_UV, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("record", [W.REC_500_A, W.REC_500_B, W.REC_500_C])
@pytest.mark.parametrize("diff", [0, 1, 2])
def test_round_trip_within_half_a_step(record: str, diff: int, tmp_path: Path) -> None:
    rec = W.load(record)
    w = _write(tmp_path, record, diff=diff)
    assert sniff(w.path) is not None and sniff(w.path).name == "scp_ecg"  # type: ignore[union-attr]
    got = read_any(w.path)
    assert got.source_format == "scp_ecg"
    assert got.lead_names == rec.names
    assert got.fs == rec.fs == 500.0
    assert got.gains == (1000 / STEP_UV,) * 12  # 200 digits per mV
    # exactly the stored digits times the step ...
    np.testing.assert_allclose(got.signals, w.digits * w.step_mv, rtol=0, atol=1e-12)
    # ... so within half a step of the original
    assert np.abs(got.signals - rec.signals).max() <= STEP_UV / 2 / 1000 + 1e-12
    assert got.acquired_at == datetime(2021, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=1)))
    assert "PID" not in json.dumps(got.metadata)
    assert got.metadata["encoding"] == ("amplitudes", "first_difference", "second_difference")[diff]


@pytest.mark.parametrize("diff", [0, 1, 2])
def test_default_huffman_table_round_trip(diff: int, tmp_path: Path) -> None:
    """Section 6 coded with the standard's default Huffman table (the writer's own encoder)."""
    w = _write(tmp_path, W.REC_500_B, diff=diff, huffman=True)
    got = read_any(w.path)
    assert got.metadata["compression"] == "huffman"
    np.testing.assert_allclose(got.signals, w.digits * w.step_mv, rtol=0, atol=1e-12)


def test_acquired_at_naive_without_time_zone_and_none_without_date(tmp_path: Path) -> None:
    naive = _write(tmp_path, tz_minutes=None)
    assert read_any(naive.path).acquired_at == S.ACQUIRED  # naive: the file's local time
    none = _write(tmp_path, acquired=None, tz_minutes=None)
    assert read_any(none.path).acquired_at is None


def test_other_formats_are_not_claimed_as_scp(tmp_path: Path) -> None:
    for name, path in W.other_format_files(tmp_path).items():
        reader = sniff(path)
        assert reader is None or reader.name != "scp_ecg", name


# --- damaged and absurd records -----------------------------------------------------------------


def _edit(tmp: Path, change: Callable[[bytearray], None], *, fix: str = "all") -> Path:
    """The written record changed by ``change``, then CRCs recomputed: "all", "record" (only
    the record's, so a section's CRC stays wrong) or "none"."""
    w = _write(tmp)
    buf = bytearray(w.path.read_bytes())
    change(buf)
    if fix == "record":
        struct.pack_into("<H", buf, 0, S.crc_ccitt(bytes(buf[2:])))
    data = S.fix_crcs(bytes(buf)) if fix == "all" else bytes(buf)
    out = tmp / "bad.scp"
    out.write_bytes(data)
    return out


def _at(section: int, offset: int, fmt: str, value: int) -> Callable[[bytearray], None]:
    """Overwrite a field ``offset`` bytes into a section's body."""
    def change(buf: bytearray) -> None:
        start, _ = S.section_offset(bytes(buf), section)
        struct.pack_into(fmt, buf, start + 16 + offset, value)
    return change


def _flip_sample(buf: bytearray) -> None:
    start, length = S.section_offset(bytes(buf), 6)
    buf[start + length - 3] ^= 0x55


def _pointer_length(buf: bytearray) -> None:
    # Section 6's pointer (the 7th) declares 1 MB: past the end of the file
    struct.pack_into("<I", buf, 22 + 6 * 10 + 2, 1 << 20)


def _last_lead_end(value: int) -> Callable[[bytearray], None]:
    def change(buf: bytearray) -> None:
        start, _ = S.section_offset(bytes(buf), 3)
        for i in range(12):
            struct.pack_into("<I", buf, start + 16 + 2 + 9 * i + 4, value)
    return change


def _cut(fraction: float) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        w = _write(tmp)
        data = w.path.read_bytes()
        out = tmp / "cut.scp"
        out.write_bytes(data[: int(len(data) * fraction)])
        return out
    return build


CASES: dict[str, tuple[Callable[[Path], Path], type[InvalidInput], int, str]] = {
    "truncated_half": (_cut(0.5), MalformedFile, 422, "truncated"),
    "truncated_in_section0": (_cut(0.0008), MalformedFile, 422, "truncated"),
    "record_crc_wrong": (lambda d: _edit(d, lambda b: b.__setitem__(0, b[0] ^ 0xFF), fix="none"),
                         MalformedFile, 422, "CRC"),
    "section6_crc_wrong": (lambda d: _edit(d, _flip_sample, fix="record"), MalformedFile, 422,
                           "Section 6 fails its CRC"),
    "section_beyond_file": (lambda d: _edit(d, _pointer_length), MalformedFile, 422, "beyond the end"),
    "zero_leads": (lambda d: _edit(d, _at(3, 0, "<B", 0)), MalformedFile, 422, "0 leads"),
    "255_leads": (lambda d: _edit(d, _at(3, 0, "<B", 255)), UploadTooLarge, 413, "at most 64"),
    "4e9_samples": (lambda d: _edit(d, _last_lead_end(4_000_000_000)), UploadTooLarge, 413, "samples per signal"),
    "more_samples_than_bytes": (lambda d: _edit(d, _last_lead_end(20_000)), MalformedFile, 422, "too few"),
    "avm_zero": (lambda d: _edit(d, _at(6, 0, "<H", 0)), MalformedFile, 422, "amplitude value multiplier"),
    "interval_zero": (lambda d: _edit(d, _at(6, 2, "<H", 0)), MalformedFile, 422, "sample interval of 0"),
    "unknown_encoding": (lambda d: _edit(d, _at(6, 4, "<B", 7)), MalformedFile, 422, "difference encoding"),
    "lead_bytes_past_section": (lambda d: _edit(d, _at(6, 6, "<H", 0xFFFF)), MalformedFile, 422, "past the end"),
    "not_simultaneous": (lambda d: _edit(d, _at(3, 2, "<I", 2)), UnsupportedSignal, 422, "simultaneously"),
    "bimodal": (lambda d: _edit(d, _at(6, 5, "<B", 1)), UnsupportedSignal, 422, "bimodal"),
}
BOMBS = ("255_leads", "4e9_samples")


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_record_refused_naming_the_problem(name: str, tmp_path: Path) -> None:
    build, error, _status, phrase = CASES[name]
    path = build(tmp_path)
    with pytest.raises(error) as info:
        read_any(path)
    assert type(info.value) is error
    assert phrase in info.value.message, info.value.message
    assert "/tmp" not in info.value.message


@pytest.mark.parametrize("name", BOMBS)
def test_declared_gigabytes_refused_within_memory_bound(name: str, tmp_path: Path) -> None:
    path = CASES[name][0](tmp_path)
    result = read_measuring_peak(path)
    assert result["outcome"] == "UploadTooLarge", result
    assert result["peak_kib"] * 1024 < PEAK_BOUND_BYTES, result


_CODES = {UploadTooLarge: "upload_too_large", MalformedFile: "malformed_file",
          UnsupportedSignal: "unsupported_signal"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_diagnose_answers_4xx(name: str, client, tmp_path: Path) -> None:  # noqa: F811
    build, error, status, phrase = CASES[name]
    path = build(tmp_path)
    resp = client.post("/diagnose", files=[("files", ("ecg.scp", path.read_bytes(), "application/octet-stream"))],
                       params={"top_k": 1})
    assert resp.status_code == status, resp.text[:500]
    body = resp.json()["error"]
    assert body["code"] == _CODES[error], body
    assert phrase in body["message"], body
    assert "/tmp/" not in resp.text
