"""EDF / EDF+ reader against files written by pyedflib from real WFDB records.

Quantisation bound: pyedflib stores physical values on the 16-bit digital range
[-32768, 32767] of the physical range [-L, L] chosen per signal, truncating toward zero,
so a read value is within one step (2 L / 65535, in the file's unit) of the original.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.ecg.readers.base import ReadHints
from app.ecg.readers.edf_reader import READER
from app.errors import MalformedFile, UnsupportedSignal
from tests.formats.writers_tabular import (
    ALL_RECORDS,
    RECORD_1000,
    RECORDS_500,
    assert_claims_only,
    foreign_files,
    head,
    load_wfdb,
    requires_samples,
    write_edf,
)

pytestmark = requires_samples

# (record, unit, scale mV->unit, label style, EDF+?)
CASES = [
    (RECORDS_500[0], "uV", 1000.0, "ECG {}", True),
    (RECORDS_500[1], "mV", 1.0, "{}", False),
    (RECORDS_500[2], "uV", 1000.0, "EKG {}", True),
    (RECORD_1000, "V", 0.001, "ECG {}", True),
]


def _whole_seconds(sig: np.ndarray, fs: float) -> np.ndarray:
    return sig[:, : int(sig.shape[1] // fs * fs)]


@pytest.mark.parametrize("rel,unit,scale,style,plus", CASES, ids=[c[0].split("/")[-1] for c in CASES])
def test_round_trip_matches_wfdb_within_one_step(tmp_path, rel, unit, scale, style, plus):
    sig, fs, names = load_wfdb(rel)
    sig = _whole_seconds(sig, fs)
    path = tmp_path / "rec.edf"
    # a volt file needs a physical range that fits the 8-character header field
    steps = write_edf(
        path, sig, fs, [style.format(n) for n in names], unit=unit, scale=scale,
        phys_limit=0.01 if unit == "V" else None, plus=plus,
        annotations=[(1.0, "Recording starts")] if plus else [],
    )
    assert READER.claims(path, head(path))
    rec = READER.read(path, ReadHints())
    assert rec.source_format == "edf"
    assert rec.fs == fs
    assert rec.lead_names == names  # "ECG I" / "EKG I" / "I" all give "I"
    assert rec.signals.shape == sig.shape
    assert rec.signals.dtype == np.float64
    for k in range(len(names)):
        err = np.abs(rec.signals[k] - sig[k]).max()
        assert err <= steps[k] * (1 + 1e-6) + 1e-12, (names[k], err, steps[k])
        assert steps[k] < 0.01  # the bound itself is tight enough to mean something (< 10 uV)
    # annotations are not a lead; patient fields never reach metadata
    assert "Jane_Doe" not in repr(rec.metadata) and "MRN-0042" not in repr(rec.metadata)
    assert rec.metadata["edf_type"] == ("EDF+" if plus else "EDF")


def test_non_lead_signals_at_other_rates_are_ignored(tmp_path):
    sig, fs, names = load_wfdb(RECORDS_500[0])
    sig = _whole_seconds(sig, fs)
    resp = np.sin(np.linspace(0, 20, int(sig.shape[1] / fs * 25)))
    path = tmp_path / "with_resp.edf"
    write_edf(path, sig, fs, list(names), extra=[("Resp", "Ohm", 25.0, resp)])
    rec = READER.read(path, ReadHints())
    assert rec.lead_names == names and rec.fs == fs
    assert [w.code for w in rec.warnings] == ["ignored_signals"]
    assert "Resp" in rec.warnings[0].message


def test_mixed_lead_rates_are_rejected(tmp_path):
    sig, fs, names = load_wfdb(RECORDS_500[0])
    sig = _whole_seconds(sig, fs)
    data = [sig[k] if k != 3 else sig[k][::2] for k in range(12)]
    rates = [fs] * 12
    rates[3] = fs / 2
    path = tmp_path / "mixed.edf"
    write_edf(path, data, rates, [f"ECG {n}" for n in names])
    with pytest.raises(MalformedFile, match="different sampling rates") as e:
        READER.read(path, ReadHints())
    assert "aVR 250 Hz" in e.value.message


def test_truncated_file_is_malformed(tmp_path):
    sig, fs, names = load_wfdb(RECORDS_500[1])
    path = tmp_path / "full.edf"
    write_edf(path, _whole_seconds(sig, fs), fs, list(names))
    data = path.read_bytes()
    cut = tmp_path / "cut.edf"
    cut.write_bytes(data[: len(data) // 2])
    assert READER.claims(cut, head(cut))  # the header still looks like EDF
    with pytest.raises(MalformedFile, match="truncated"):
        READER.read(cut, ReadHints())
    # cut inside the signal headers
    cut.write_bytes(data[:600])
    with pytest.raises(MalformedFile, match="header is truncated"):
        READER.read(cut, ReadHints())


def test_non_voltage_lead_is_unsupported(tmp_path):
    sig, fs, names = load_wfdb(RECORDS_500[1])
    path = tmp_path / "mmhg.edf"
    write_edf(path, _whole_seconds(sig, fs)[:2], fs, ["I", "II"], unit="mmHg", scale=1.0)
    with pytest.raises(UnsupportedSignal, match="mmHg"):
        READER.read(path, ReadHints())


def test_garbage_with_edf_magic_is_not_claimed_and_is_malformed(tmp_path):
    path = tmp_path / "fake.edf"
    path.write_bytes(b"0       " + b"x" * 300)
    assert not READER.claims(path, head(path))
    with pytest.raises(MalformedFile):
        READER.read(path, ReadHints())


def test_claims_only_edf(tmp_path):
    assert_claims_only(READER, foreign_files(tmp_path), {"edf"})


def test_all_records_cover_a_1000_hz_source():
    assert any(load_wfdb(r)[1] == 1000.0 for r in ALL_RECORDS)
