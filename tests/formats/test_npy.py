"""NPY reader against arrays saved with np.save from real WFDB records.

Quantisation bound: none beyond the array's dtype (float64 exact; float32 within
|x| * 2**-24 relative).
"""

from __future__ import annotations

import numpy as np
import pytest

from app.ecg.readers.base import ReadHints
from app.ecg.readers.npy_reader import READER
from app.errors import InvalidInput, MalformedFile
from tests.formats.writers_tabular import (
    RECORD_1000,
    RECORDS_500,
    STANDARD,
    assert_claims_only,
    foreign_files,
    head,
    load_wfdb,
    requires_samples,
)

pytestmark = requires_samples


def test_leads_by_samples_float32(tmp_path):
    sig, fs, names = load_wfdb(RECORDS_500[0])
    path = tmp_path / "a.npy"
    np.save(path, sig.astype(np.float32))
    assert READER.claims(path, head(path))
    rec = READER.read(path, ReadHints(sampling_rate=fs))
    assert rec.source_format == "npy" and rec.fs == fs
    assert rec.lead_names == STANDARD == names
    assert rec.signals.dtype == np.float64 and rec.signals.shape == sig.shape
    assert np.abs(rec.signals - sig).max() <= np.abs(sig).max() * 2.0**-24 + 1e-12
    assert rec.metadata["layout"] == "leads x samples"


def test_samples_by_leads_microvolts_1000_hz(tmp_path):
    sig, fs, names = load_wfdb(RECORD_1000)
    path = tmp_path / "b.npy"
    np.save(path, (sig * 1000.0).T)  # (N, 12) in uV
    rec = READER.read(path, ReadHints(sampling_rate=1000.0, units="uV"))
    assert rec.fs == 1000.0 and rec.metadata["layout"] == "samples x leads"
    np.testing.assert_allclose(rec.signals, sig, rtol=1e-12, atol=1e-12)


def test_lead_names_hint_with_other_lead_count(tmp_path):
    sig, fs, names = load_wfdb(RECORDS_500[1])
    path = tmp_path / "c.npy"
    np.save(path, sig[[0, 1, 7]])
    with pytest.raises(InvalidInput, match="lead_names"):
        READER.read(path, ReadHints(sampling_rate=fs))
    rec = READER.read(path, ReadHints(sampling_rate=fs, lead_names=("I", "II", "V2")))
    assert rec.lead_names == ("I", "II", "V2")
    np.testing.assert_array_equal(rec.signals[2], sig[7])


def test_integer_array_warns_about_units(tmp_path):
    sig, fs, _ = load_wfdb(RECORDS_500[2])
    path = tmp_path / "d.npy"
    np.save(path, np.round(sig * 1000).astype(np.int16))
    rec = READER.read(path, ReadHints(sampling_rate=fs, units="uV"))
    assert np.abs(rec.signals - sig).max() <= 0.0005 + 1e-9
    assert rec.warnings == []
    rec = READER.read(path, ReadHints(sampling_rate=fs))
    assert [w.code for w in rec.warnings] == ["assumed_units"]


def test_missing_rate_is_invalid_input(tmp_path):
    sig, _, _ = load_wfdb(RECORDS_500[0])
    path = tmp_path / "e.npy"
    np.save(path, sig)
    with pytest.raises(InvalidInput, match="sampling_rate"):
        READER.read(path, ReadHints())


@pytest.mark.parametrize(
    "array,message",
    [
        (np.array([{"I": [1, 2]}], dtype=object), "object"),
        (np.zeros((2, 12, 100)), "shape"),
        (np.zeros(1200), "shape"),
        (np.zeros((12, 100), dtype=np.complex64), "dtype"),
        (np.array(["a", "b"] * 6).reshape(12, 1), "dtype"),
    ],
    ids=["object", "3d", "1d", "complex", "strings"],
)
def test_bad_arrays_are_malformed(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array, allow_pickle=True)
    assert READER.claims(path, head(path))
    with pytest.raises(MalformedFile, match=message):
        READER.read(path, ReadHints(sampling_rate=500))


def test_truncated_npy_is_malformed(tmp_path):
    path = tmp_path / "t.npy"
    np.save(path, np.zeros((12, 5000)))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(MalformedFile, match="cannot read NPY"):
        READER.read(path, ReadHints(sampling_rate=500))


def test_claims_only_npy(tmp_path):
    assert_claims_only(READER, foreign_files(tmp_path), {"npy"})
