"""Independent writers and shared fixtures for the EDF, CSV, NPY, CPSC .mat and SPH tests.

Every file a test reads is produced here with the format's own tooling (pyedflib, the csv
module, np.save, scipy.io.savemat, h5py) from real WFDB records of the shared samples, so
the readers are checked against something they did not write themselves.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import h5py
import numpy as np
import pyedflib
import pytest
import scipy.io
import wfdb

from app.ecg.readers.base import HEAD_BYTES

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "ecg-samples"
STANDARD = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# (record path under SAMPLES, max samples to keep): three 500 Hz sources and one 1000 Hz one
RECORDS_500 = (
    "cinc2021-b/CPSC_CPSC-Extra/A0002",
    "cinc2021-a/E07500",
    "cinc2021-b/ChapmanShaoxing_Ningbo/JS00001",
)
RECORD_1000 = "cinc2021-b/PTB_PTBXL/S0001"
ALL_RECORDS = RECORDS_500 + (RECORD_1000,)
MAX_SECONDS = 12

requires_samples = pytest.mark.skipif(
    not (SAMPLES / "index.csv").is_file(), reason=f"shared ECG samples not found at {SAMPLES}"
)


@functools.lru_cache(maxsize=None)
def load_wfdb(rel: str) -> tuple[np.ndarray, float, tuple[str, ...]]:
    """(signals (leads, samples) float64 mV, fs, lead names) of a sample record, at most MAX_SECONDS."""
    rec = wfdb.rdrecord(str(SAMPLES / rel))
    n = int(min(rec.sig_len, MAX_SECONDS * rec.fs))
    sig = np.ascontiguousarray(rec.p_signal[:n].T, dtype=np.float64)
    sig.setflags(write=False)
    return sig, float(rec.fs), tuple(rec.sig_name)


def head(path: Path) -> bytes:
    """What the registry hands a reader's ``claims``: the file's first bytes."""
    with open(path, "rb") as fh:
        return fh.read(HEAD_BYTES)


# --- EDF ---------------------------------------------------------------------------------


def write_edf(
    path: Path,
    signals: np.ndarray,
    fs: float | list[float],
    labels: list[str],
    *,
    unit: str = "uV",
    scale: float = 1000.0,
    phys_limit: float | None = None,
    plus: bool = True,
    annotations: list[tuple[float, str]] = (),
    extra: list[tuple[str, str, float, np.ndarray]] = (),
    patient_name: str = "Jane_Doe",
    patient_code: str = "MRN-0042",
) -> list[float]:
    """Write leads (given in mV, multiplied by ``scale`` into ``unit``) with pyedflib.

    Returns the quantisation step of each lead in mV (physical range / digital range).
    ``extra`` adds non-lead signals as (label, dimension, rate, values).
    """
    rates = fs if isinstance(fs, list) else [fs] * len(labels)
    n_all = len(labels) + len(extra)
    w = pyedflib.EdfWriter(str(path), n_all, pyedflib.FILETYPE_EDFPLUS if plus else pyedflib.FILETYPE_EDF)
    headers, data, steps = [], [], []
    for k, label in enumerate(labels):
        x = np.asarray(signals[k], dtype=np.float64) * scale
        lim = phys_limit if phys_limit is not None else float(np.ceil(np.abs(x).max() * 1.1 + 1e-9))
        headers.append(
            dict(label=label, dimension=unit, sample_frequency=rates[k], physical_min=-lim,
                 physical_max=lim, digital_min=-32768, digital_max=32767)
        )
        data.append(np.ascontiguousarray(x))
        steps.append(2 * lim / 65535 / scale)
    for label, dim, rate, values in extra:
        lim = float(np.ceil(np.abs(values).max() + 1))
        headers.append(
            dict(label=label, dimension=dim, sample_frequency=rate, physical_min=-lim,
                 physical_max=lim, digital_min=-32768, digital_max=32767)
        )
        data.append(np.ascontiguousarray(values, dtype=np.float64))
    w.setSignalHeaders(headers)
    w.setPatientName(patient_name)
    w.setPatientCode(patient_code)
    for onset, text in annotations:
        w.writeAnnotation(onset, -1, text)
    w.writeSamples(data)
    w.close()
    return steps


# --- CSV ---------------------------------------------------------------------------------


def write_csv(
    path: Path,
    signals: np.ndarray,
    header: list[str],
    *,
    delimiter: str = ",",
    decimals: int = 4,
    scale: float = 1.0,
    time_fs: float | None = None,
    decimal_comma: bool = False,
) -> None:
    """One row per sample; values (mV * scale) printed with ``decimals`` decimals."""
    n = signals.shape[1]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow((["time"] if time_fs else []) + list(header))
        for i in range(n):
            row = [f"{v:.{decimals}f}" for v in signals[:, i] * scale]
            if time_fs:
                row.insert(0, f"{i / time_fs:.6f}")
            if decimal_comma:
                row = [c.replace(".", ",") for c in row]
            w.writerow(row)


# --- other formats -------------------------------------------------------------------------


def write_sph(path: Path, signals: np.ndarray, **attrs) -> np.ndarray:
    """SPH layout: dataset ``ecg`` (12, N) float16; returns what was stored (as float64)."""
    stored = signals.astype(np.float16)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("ecg", data=stored)
        for k, v in attrs.items():
            ds.attrs[k] = v
    return stored.astype(np.float64)


def write_cpsc(path: Path, data: np.ndarray, *, sex: str = "Female", age: int = 63) -> None:
    """CPSC 2018 raw layout: struct ECG {sex, age, data} via scipy.io.savemat (MATLAB 5)."""
    scipy.io.savemat(str(path), {"ECG": {"sex": sex, "age": age, "data": data}})


def foreign_files(tmp: Path) -> dict[str, Path]:
    """One file of every format these tests know, keyed by format name, for claims() checks."""
    tmp.mkdir(parents=True, exist_ok=True)
    sig, fs, names = load_wfdb(RECORDS_500[0])
    sig = sig[:, :1000]
    out = {
        "wfdb_hea": SAMPLES / (RECORDS_500[0] + ".hea"),
        "wfdb_mat": SAMPLES / (RECORDS_500[0] + ".mat"),
        "wfdb_dat": SAMPLES / "ptbdb" / "s0010_re.dat",
        "wfdb_hea_ptbdb": SAMPLES / "ptbdb" / "s0010_re.hea",
        "cpsc2018_mat": SAMPLES / "cpsc2018-raw" / "A1980.mat",
        "sph_hdf5": SAMPLES / "cinc2021-b" / "SPH" / "SPH00001.h5",
        "sph_metadata_csv": SAMPLES / "cinc2021-b" / "SPH" / "metadata.csv",
        "index_csv": SAMPLES / "index.csv",
    }
    write_edf(tmp / "x.edf", sig, fs, [f"ECG {n}" for n in names])
    out["edf"] = tmp / "x.edf"
    write_csv(tmp / "x.csv", sig, list(names))
    out["csv"] = tmp / "x.csv"
    np.save(tmp / "x.npy", sig)
    out["npy"] = tmp / "x.npy"
    np.savez(tmp / "x.npz", ecg=sig)
    out["npz"] = tmp / "x.npz"
    scipy.io.savemat(str(tmp / "other.mat"), {"val": sig})
    out["matlab5_other"] = tmp / "other.mat"
    scipy.io.savemat(str(tmp / "v4.mat"), {"val": (sig * 1000).astype(np.int16)}, format="4")
    out["matlab4"] = tmp / "v4.mat"
    with h5py.File(tmp / "other.h5", "w") as f:
        f.create_dataset("signal", data=sig)
    out["hdf5_other"] = tmp / "other.h5"
    (tmp / "notes.txt").write_text("patient notes\nnothing to see, here\n")
    out["text"] = tmp / "notes.txt"
    (tmp / "x.json").write_text('{"leads": {"I": [0.1, 0.2], "II": [0.3, 0.4]}, "fs": 500}')
    out["json"] = tmp / "x.json"
    (tmp / "x.xml").write_text('<?xml version="1.0"?><AnnotatedECG><component/></AnnotatedECG>')
    out["xml"] = tmp / "x.xml"
    return out


def assert_claims_only(reader, files: dict[str, Path], own: set[str]) -> None:
    """The reader claims exactly the files of its own formats among ``files``."""
    wrong = {k for k, p in files.items() if reader.claims(p, head(p)) != (k in own)}
    assert not wrong, f"{reader.name}: wrong claims() for {sorted(wrong)}"
