"""The ISHNE Holter reader against the independent writer (tests/formats/writers_ishne.py): real
WFDB records converted at 2.5 uV per digit come back within half a step, with names, rate, gains
and acquisition time, equal to what ecgdatakit's ISHNE parser reads from the same file; damaged
or absurd files are refused with a 4xx-mapped error naming the problem, the ones declaring
gigabytes within the malformed-file memory bound."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from tests.api.conftest import client  # noqa: F401 - the API tests' app fixture
from tests.formats import writers_ishne as I
from tests.formats import writers_xml_dicom as W
from tests.formats.test_ecgdatakit_differential import assert_agree, theirs
from tests.formats.test_malformed_files import PEAK_BOUND_BYTES, read_measuring_peak

from app.ecg.readers import read_any, sniff
from app.errors import InvalidInput, MalformedFile, UploadTooLarge

STEP_NV = 2500


def _write(tmp: Path, record: str = W.REC_500_A, **kw: object) -> I.Written:
    rec = W.load(record)
    return I.write_ishne(tmp / "ecg.ecg", rec.signals, rec.fs, rec.names, res_nv=STEP_NV, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("record", [W.REC_500_A, W.REC_500_B, W.REC_1000])
def test_round_trip_within_half_a_step(record: str, tmp_path: Path) -> None:
    rec = W.load(record)
    w = _write(tmp_path, record)
    assert sniff(w.path) is not None and sniff(w.path).name == "ishne"  # type: ignore[union-attr]
    got = read_any(w.path)
    assert got.source_format == "ishne"
    assert got.lead_names == rec.names
    assert got.fs == rec.fs
    assert got.gains == (1e6 / STEP_NV,) * 12  # 400 digits per mV
    np.testing.assert_allclose(got.signals, w.digits * w.steps_mv[:, None], rtol=0, atol=1e-12)
    assert np.abs(got.signals - rec.signals).max() <= STEP_NV / 2 * 1e-6 + 1e-12
    assert got.acquired_at == I.ACQUIRED
    text = json.dumps(got.metadata)
    assert "SECRET" not in text and "PID" not in text
    assert got.warnings == []


@pytest.mark.parametrize("record", [W.REC_500_A, W.REC_1000])
def test_agrees_with_ecgdatakit(record: str, tmp_path: Path) -> None:
    w = _write(tmp_path, record)
    assert_agree(read_any(w.path), theirs(w.path))


def test_per_lead_resolution_and_unknown_lead_codes(tmp_path: Path) -> None:
    rec = W.load(W.REC_500_A)
    res = [1000, 2500, 5000] + [2500] * 9
    names = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "NOPE")
    w = I.write_ishne(tmp_path / "a.ecg", rec.signals, rec.fs, names, res_nv=res)
    got = read_any(w.path)
    assert got.lead_names[-1] == "lead 12 (ISHNE code 0)"
    assert got.gains[:3] == (1000.0, 400.0, 200.0)  # type: ignore[index]
    np.testing.assert_allclose(got.signals, w.digits * w.steps_mv[:, None], rtol=0, atol=1e-12)
    lib = theirs(w.path)
    np.testing.assert_allclose(got.gains, lib.gains, rtol=1e-9)  # type: ignore[arg-type]


def test_lead_fault_value_is_missing_and_time_optional(tmp_path: Path) -> None:
    w = _write(tmp_path, acquired=None)
    data = bytearray(w.path.read_bytes())
    start = I.FIXED_END + struct.unpack_from("<i", data, I.OFF_VAR_SIZE)[0]
    struct.pack_into("<h", data, start + 2 * 12 * 10 + 2, -32768)  # lead II, sample 11
    w.path.write_bytes(bytes(data))
    got = read_any(w.path)
    assert np.isnan(got.signals[1, 10]) and np.isfinite(np.delete(got.signals[1], 10)).all()
    assert [x.code for x in got.warnings] == ["nan_samples"]
    assert got.acquired_at is None


def test_inconsistent_ecg_offset_and_trailing_bytes_are_quirks(tmp_path: Path) -> None:
    w = _write(tmp_path)
    data = I.rewrite(w.path.read_bytes(), {I.OFF_ECG_OFFSET: ("<i", 1024)}) + b"\x00\x01\x02"
    w.path.write_bytes(data)
    got = read_any(w.path)
    np.testing.assert_allclose(got.signals, w.digits * w.steps_mv[:, None], rtol=0, atol=1e-12)
    assert len(got.metadata["header_quirks"]) == 2


def test_other_formats_are_not_claimed_as_ishne(tmp_path: Path) -> None:
    for name, path in W.other_format_files(tmp_path).items():
        reader = sniff(path)
        assert reader is None or reader.name != "ishne", name


# --- damaged and absurd files --------------------------------------------------------------------


def _edit(changes: dict[int, tuple[str, int]], *, fix_crc: bool = True) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        w = _write(tmp)
        out = tmp / "bad.ecg"
        out.write_bytes(I.rewrite(w.path.read_bytes(), changes, fix_crc=fix_crc))
        return out
    return build


def _cut(n_bytes: int | None = None, fraction: float = 0.6) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        data = _write(tmp).path.read_bytes()
        out = tmp / "cut.ecg"
        out.write_bytes(data[: n_bytes if n_bytes is not None else int(len(data) * fraction)])
        return out
    return build


def _flip_header_byte(tmp: Path) -> Path:
    w = _write(tmp)
    data = bytearray(w.path.read_bytes())
    data[300] ^= 0x55  # inside the proprietary text: only the checksum notices
    out = tmp / "bad.ecg"
    out.write_bytes(bytes(data))
    return out


CASES: dict[str, tuple[Callable[[Path], Path], type[InvalidInput], int, str]] = {
    "truncated_samples": (_cut(), MalformedFile, 422, "truncated"),
    "truncated_header": (_cut(300), MalformedFile, 422, "truncated"),
    "crc_wrong": (_flip_header_byte, MalformedFile, 422, "CRC"),
    "zero_leads": (_edit({I.OFF_NLEADS: ("<h", 0)}), MalformedFile, 422, "0 leads"),
    "13_leads": (_edit({I.OFF_NLEADS: ("<h", 13)}), MalformedFile, 422, "at most 12"),
    "10000_leads": (_edit({I.OFF_NLEADS: ("<h", 10_000)}), UploadTooLarge, 413, "at most 64"),
    "2e9_samples": (_edit({I.OFF_ECG_SIZE: ("<i", 2_000_000_000)}), UploadTooLarge, 413, "samples per signal"),
    "negative_samples": (_edit({I.OFF_ECG_SIZE: ("<i", -5)}), MalformedFile, 422, "-5 samples"),
    "more_samples_than_bytes": (_edit({I.OFF_ECG_SIZE: ("<i", 5001)}), MalformedFile, 422, "truncated"),
    "resolution_zero": (_edit({I.OFF_RESOLUTION + 2: ("<h", 0)}), MalformedFile, 422, "amplitude resolution"),
    "resolution_negative": (_edit({I.OFF_RESOLUTION: ("<h", -2500)}), MalformedFile, 422, "negative"),
    "rate_zero": (_edit({I.OFF_RATE: ("<h", 0)}), MalformedFile, 422, "sampling rate of 0"),
    "variable_block_past_end": (_edit({I.OFF_VAR_SIZE: ("<i", 1 << 30)}, fix_crc=False), MalformedFile, 422,
                                "past the end"),
    "variable_block_negative": (_edit({I.OFF_VAR_SIZE: ("<i", -1)}, fix_crc=False), MalformedFile, 422,
                                "-1 bytes"),
    "lead_named_twice": (_edit({I.OFF_LEAD_SPEC + 2: ("<h", 5)}), MalformedFile, 422, "twice"),
}
BOMBS = ("10000_leads", "2e9_samples")


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_file_refused_naming_the_problem(name: str, tmp_path: Path) -> None:
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


_CODES = {UploadTooLarge: "upload_too_large", MalformedFile: "malformed_file"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_diagnose_answers_4xx(name: str, client, tmp_path: Path) -> None:  # noqa: F811
    build, error, status, phrase = CASES[name]
    path = build(tmp_path)
    resp = client.post("/diagnose", files=[("files", ("ecg.ecg", path.read_bytes(), "application/octet-stream"))],
                       params={"top_k": 1})
    assert resp.status_code == status, resp.text[:500]
    body = resp.json()["error"]
    assert body["code"] == _CODES[error], body
    assert phrase in body["message"], body
    assert "/tmp/" not in resp.text


def test_acquired_at_is_naive_local_time(tmp_path: Path) -> None:
    w = _write(tmp_path, acquired=datetime(1999, 12, 31, 23, 59, 58))  # noqa: DTZ001
    assert read_any(w.path).acquired_at == datetime(1999, 12, 31, 23, 59, 58)  # noqa: DTZ001
