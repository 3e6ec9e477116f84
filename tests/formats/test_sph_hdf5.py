"""SPH HDF5 reader: the real SPH files and files written by h5py from real WFDB records.

Quantisation bound: float16 has an 11-bit significand, so a stored value is within
|x| * 2**-11 of the original (2**-25 absolute for |x| below 2**-14 mV, the subnormal range).
"""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest

from app.ecg.readers.base import ReadHints
from app.ecg.readers.sph_hdf5 import READER
from app.errors import InvalidInput, MalformedFile
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
    write_sph,
)

pytestmark = requires_samples
SPH = SAMPLES / "cinc2021-b" / "SPH"


def _metadata() -> dict[str, dict[str, str]]:
    with open(SPH / "metadata.csv", newline="") as fh:
        return {row["ECG_ID"]: row for row in csv.DictReader(fh)}


def test_real_sph_files_match_metadata_and_have_plausible_amplitudes():
    meta = _metadata()
    files = sorted(SPH.glob("SPH*.h5"))
    assert len(files) == 10
    for path in files:
        assert READER.claims(path, head(path)), path.name
        rec = READER.read(path, ReadHints())
        assert rec.source_format == "sph_hdf5" and rec.lead_names == STANDARD
        assert rec.fs == 500.0 and rec.signals.dtype == np.float64
        row = meta.get(path.name)
        if row is not None:  # SPH00005 has no metadata row
            assert rec.n_samples == int(row["N"]) and rec.fs == float(row["fs"])
        assert 10.0 <= rec.duration_s <= 60.0
        span = np.percentile(rec.signals, 99, axis=1) - np.percentile(rec.signals, 1, axis=1)
        assert 0.2 < float(np.median(span)) < 5.0, path.name
        assert np.abs(rec.signals).max() < 20.0
        # lead order: Einthoven's law I + III = II holds (to float16 rounding) only in I, II, III order
        resid = rec.signals[0] + rec.signals[2] - rec.signals[1]
        assert np.median(np.abs(resid)) < 0.05 * np.median(np.abs(rec.signals[1])) + 0.01, path.name
        # the patient table (ids, age, sex, dates) is never read into metadata
        assert set(rec.metadata) == {"layout", "dtype", "fs_source", "units"}


def _f16_bound(x: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(x) * 2.0**-11, 2.0**-25) * (1 + 1e-6)


@pytest.mark.parametrize("rel", list(RECORDS_500) + [RECORD_1000], ids=lambda r: r.split("/")[-1])
def test_h5py_round_trip_within_float16(tmp_path, rel):
    sig, fs, names = load_wfdb(rel)
    path = tmp_path / "rec.h5"
    stored = write_sph(path, sig)
    assert READER.claims(path, head(path))
    hints = ReadHints(sampling_rate=fs) if fs != 500.0 else ReadHints()
    rec = READER.read(path, hints)
    assert rec.fs == fs and rec.lead_names == names
    np.testing.assert_array_equal(rec.signals, stored)
    assert (np.abs(rec.signals - sig) <= _f16_bound(sig)).all()


def test_rate_attribute_is_honoured_and_checked(tmp_path):
    sig, fs, _ = load_wfdb(RECORD_1000)
    path = tmp_path / "attr.h5"
    write_sph(path, sig[:, :2000], fs=1000.0)
    rec = READER.read(path, ReadHints())
    assert rec.fs == 1000.0 and rec.metadata["fs_source"] == "file attribute"
    with pytest.raises(InvalidInput, match="contradicts"):
        READER.read(path, ReadHints(sampling_rate=500))


def test_hdf5_without_ecg_dataset(tmp_path):
    path = tmp_path / "none.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("signal", data=np.zeros((12, 100)))
    assert not READER.claims(path, head(path))
    with pytest.raises(MalformedFile, match="no dataset 'ecg'.*signal"):
        READER.read(path, ReadHints())


@pytest.mark.parametrize(
    "data,message",
    [
        (np.zeros((8, 100), dtype=np.float16), r"shape \(8, 100\)"),
        (np.zeros((12, 100, 2), dtype=np.float16), "shape"),
        (np.array([b"x"] * 12).reshape(12, 1), "dtype"),
    ],
    ids=["8-leads", "3d", "bytes"],
)
def test_bad_ecg_dataset(tmp_path, data, message):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("ecg", data=data)
    assert not READER.claims(path, head(path))
    with pytest.raises(MalformedFile, match=message):
        READER.read(path, ReadHints())


def test_ecg_group_and_truncated_file(tmp_path):
    path = tmp_path / "group.h5"
    with h5py.File(path, "w") as f:
        f.create_group("ecg")
    with pytest.raises(MalformedFile, match="group"):
        READER.read(path, ReadHints())
    data = (SPH / "SPH00001.h5").read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 3])
    assert not READER.claims(cut, head(cut))
    with pytest.raises(MalformedFile):
        READER.read(cut, ReadHints())


def test_claims_only_sph(tmp_path):
    assert_claims_only(READER, foreign_files(tmp_path), {"sph_hdf5"})
