"""Raw CPSC 2018 MATLAB struct reader: real cpsc2018-raw files and files written by savemat.

Quantisation bound: none (savemat stores float64; the reader returns it unchanged).

Units: no raw CPSC 2018 file in the samples overlaps a CinC 2021 CPSC WFDB record (raw
A1980-A1989 vs WFDB A0001-A0010), so mV is the CPSC 2018 documentation's statement; the
test below checks it against the WFDB records of the same source statistically: the median
lead amplitude of the raw files must agree with the WFDB records (in mV) within a factor 2,
where a uV or V misreading would be off by 1000.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from app.ecg.readers.base import ReadHints
from app.ecg.readers.cpsc_mat import READER
from app.errors import MalformedFile
from tests.formats.writers_tabular import (
    RECORD_1000,
    RECORDS_500,
    SAMPLES,
    STANDARD,
    assert_claims_only,
    foreign_files,
    head,
    load_wfdb,
    requires_samples,
    write_cpsc,
)

pytestmark = requires_samples
RAW = sorted((SAMPLES / "cpsc2018-raw").glob("A*.mat"))


def _amplitude(sig: np.ndarray) -> float:
    """Median over leads of the 1st-99th percentile range (mV for an ECG)."""
    return float(np.median(np.percentile(sig, 99, axis=1) - np.percentile(sig, 1, axis=1)))


def test_real_cpsc2018_files_read_with_plausible_amplitudes():
    assert len(RAW) == 10
    amps = []
    for path in RAW:
        assert READER.claims(path, head(path)), path.name
        rec = READER.read(path, ReadHints())
        assert rec.source_format == "cpsc2018_mat"
        assert rec.fs == 500.0 and rec.lead_names == STANDARD
        assert rec.signals.shape[0] == 12 and 10.0 <= rec.duration_s <= 60.0
        assert np.isfinite(rec.signals).all()
        # raw values are what the file holds (mV), untouched
        raw = scipy.io.loadmat(str(path))["ECG"]["data"][0, 0]
        np.testing.assert_array_equal(rec.signals, raw)
        # no patient data (sex, age) in metadata
        text = repr(rec.metadata).lower()
        assert "age" not in text and "male" not in text and "sex" not in text
        amps.append(_amplitude(rec.signals))
        assert 0.2 < amps[-1] < 5.0, (path.name, amps[-1])
    wfdb_amps = [
        _amplitude(load_wfdb(str(p.relative_to(SAMPLES))[:-4])[0])
        for p in sorted((SAMPLES / "cinc2021-b" / "CPSC_CPSC-Extra").glob("A*.hea"))
    ]
    ratio = np.median(amps) / np.median(wfdb_amps)
    assert 0.5 < ratio < 2.0, ratio


@pytest.mark.parametrize("rel", list(RECORDS_500) + [RECORD_1000], ids=lambda r: r.split("/")[-1])
def test_savemat_struct_round_trip(tmp_path, rel):
    sig, fs, names = load_wfdb(rel)
    path = tmp_path / "A9999.mat"
    write_cpsc(path, sig)
    assert READER.claims(path, head(path))
    hints = ReadHints(sampling_rate=fs) if fs != 500.0 else ReadHints()
    rec = READER.read(path, hints)
    assert rec.fs == fs and rec.lead_names == names
    np.testing.assert_array_equal(rec.signals, sig)


def test_samples_by_leads_orientation_is_accepted(tmp_path):
    sig, _, _ = load_wfdb(RECORDS_500[0])
    path = tmp_path / "t.mat"
    write_cpsc(path, sig.T)
    np.testing.assert_array_equal(READER.read(path, ReadHints()).signals, sig)


def test_mat_without_ecg_struct(tmp_path):
    path = tmp_path / "noecg.mat"
    scipy.io.savemat(str(path), {"val": np.zeros((12, 100))})
    assert not READER.claims(path, head(path))
    with pytest.raises(MalformedFile, match="no variable 'ECG'"):
        READER.read(path, ReadHints())


def test_ecg_struct_without_data_or_with_bad_data(tmp_path):
    path = tmp_path / "nodata.mat"
    scipy.io.savemat(str(path), {"ECG": {"sex": "Male", "age": 50, "signal": np.zeros((12, 10))}})
    with pytest.raises(MalformedFile, match="no field 'data'"):
        READER.read(path, ReadHints())
    scipy.io.savemat(str(path), {"ECG": {"sex": "Male", "age": 50, "data": np.zeros((5, 100))}})
    with pytest.raises(MalformedFile, match=r"shape \(5, 100\)"):
        READER.read(path, ReadHints())
    scipy.io.savemat(str(path), {"ECG": {"sex": "Male", "age": 50, "data": "not numbers"}})
    with pytest.raises(MalformedFile, match="not a numeric matrix"):
        READER.read(path, ReadHints())
    scipy.io.savemat(str(path), {"ECG": np.zeros((12, 100))})
    with pytest.raises(MalformedFile, match="not a struct"):
        READER.read(path, ReadHints())


def test_truncated_mat_is_malformed(tmp_path):
    data = RAW[0].read_bytes()
    path = tmp_path / "cut.mat"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MalformedFile, match="cannot read MATLAB file"):
        READER.read(path, ReadHints())


def test_wfdb_v4_mat_is_neither_claimed_nor_read(tmp_path):
    path = SAMPLES / (RECORDS_500[0] + ".mat")
    assert not READER.claims(path, head(path))
    with pytest.raises(MalformedFile, match="MATLAB 5"):
        READER.read(path, ReadHints())


def test_claims_only_cpsc(tmp_path):
    assert_claims_only(READER, foreign_files(tmp_path), {"cpsc2018_mat"})
