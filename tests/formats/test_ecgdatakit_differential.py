"""Our readers against ecgdatakit 2.0 (Apache-2.0), a maintained multi-format ECG parser, on the
same files: those the project's independent writers make from a real record (DICOM, HL7 aECG,
GE MUSE, Philips Sierra plain and XLI, EDF, SCP-ECG uncompressed and default-Huffman, ISHNE) and every WFDB record of
../shared/ecg-samples.

What must agree, for every format both read:
- lead names, after the one spelling map preprocessing applies (``canonical_lead``): ours keeps
  the file's spelling (``i``, ``avr`` in PTB), ecgdatakit normalises it;
- the sampling rate, exactly;
- every sample, in mV, within ``SAMPLE_BOUND_MV`` = 1e-9 mV: both decode the same stored
  integers with the same gain and baseline, so only float rounding may differ (the largest
  difference measured is 1.3e-15 mV);
- the gain, as digits per mV (ours: ``Recording.gains``; ecgdatakit: 1 / ``Lead.resolution``),
  within 1e-9 relative;
- the acquisition time, except where noted below.

Known disagreements, each checked to still be what it is, with the reason:
- WFDB records whose record line carries a base date/time not in WFDB's form (``E00001 12 500
  5000 05-May-2020 14:50:55``: 70 of the 121 shared records, CinC 2021 G12EC, PTB-XL, Ningbo,
  Chapman). WFDB's header format (PhysioNet ``header(5)``) puts the base *time* (HH:MM:SS) after
  the sample count and the base date as dd/mm/yyyy after it; ecgdatakit refuses the whole record
  (CorruptedFileError "invalid base time"), ours reads the signals and ignores the malformed
  time (README: header quirks). The signals are well-formed, so ours is the useful reading.
- HL7 aECG without ``effectiveTime``: ecgdatakit takes the acquisition time from the head of the
  TIME_ABSOLUTE time sequence (the absolute time of the first sample, which the HL7 aECG
  implementation guide defines); ours reads ``effectiveTime`` only and gives None. Both are
  defensible; the sequence head is the better fallback (a note for the acquisition-time work).
- EDF: both read the header's startdate/starttime (EDF spec, bytes 168-183, dd.mm.yy
  hh.mm.ss, clipping year 1985) as the same naive time (this was a disagreement until our
  reader learned it).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from tests.formats import writers_ishne as I
from tests.formats import writers_scp as S
from tests.formats import writers_tabular as T
from tests.formats import writers_xml_dicom as W

from app.ecg.leads import canonical_lead
from app.ecg.readers import read_any
from app.ecg.recording import Recording

ecgdatakit = pytest.importorskip("ecgdatakit")

SAMPLE_BOUND_MV = 1e-9
GAIN_RTOL = 1e-9
_MV = {"nV": 1e-6, "uV": 1e-3, "mV": 1.0, "V": 1e3}


@dataclass(frozen=True)
class Theirs:
    names: tuple[str, ...]
    rates: set[float]
    signals: list[np.ndarray]  # mV
    gains: list[float]  # digits per mV
    acquired_at: datetime | None


def theirs(path: Path) -> Theirs:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = ecgdatakit.FileParser.parse(path)
    phys = raw.to_physical()
    return Theirs(
        names=tuple(lead.label for lead in phys.leads),
        rates={float(lead.sampling_rate) for lead in phys.leads},
        signals=[np.asarray(lead.samples, dtype=np.float64) * _MV[lead.units] for lead in phys.leads],
        gains=[1.0 / (lead.resolution * _MV[lead.resolution_unit]) for lead in raw.leads],
        acquired_at=raw.recording.date,
    )


def _names(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(canonical_lead(n) or n for n in names)


def assert_agree(ours: Recording, lib: Theirs, *, times: bool = True) -> None:
    assert _names(ours.lead_names) == _names(lib.names)
    assert lib.rates == {ours.fs}
    for i, name in enumerate(ours.lead_names):
        a, b = ours.signals[i], lib.signals[i]
        assert a.shape == b.shape, name
        assert (np.isnan(a) == np.isnan(b)).all(), name
        assert np.nanmax(np.abs(a - b), initial=0.0) <= SAMPLE_BOUND_MV, name
    if ours.gains is not None:
        np.testing.assert_allclose(ours.gains, lib.gains, rtol=GAIN_RTOL)
    if times:
        assert ours.acquired_at == lib.acquired_at


# --- files from the project's independent writers -------------------------------------------------


def _written(kind: str, tmp: Path) -> Path:
    rec = W.load(W.REC_500_A)
    if kind == "dicom":
        return W.write_dicom(tmp / "a.dcm", rec)
    if kind == "hl7_aecg":
        return W.write_aecg(tmp / "a.xml", rec, effective_time="20210304050607")
    if kind == "hl7_aecg_no_effective_time":
        return W.write_aecg(tmp / "a.xml", rec)
    if kind == "ge_muse":
        return W.write_muse(tmp / "m.xml", rec)
    if kind == "philips_sierra":
        return W.write_sierra(tmp / "s.xml", rec)
    if kind == "philips_sierra_xli":
        return W.write_sierra(tmp / "s.xml", rec, xli=True)
    if kind == "edf":
        T.write_edf(tmp / "a.edf", rec.signals, rec.fs, list(rec.names))
        return tmp / "a.edf"
    if kind == "ishne":
        return I.write_ishne(tmp / "a.ecg", rec.signals, rec.fs, rec.names).path
    if kind.startswith("scp_ecg"):
        diff = int(kind[-1])
        return S.write_scp(tmp / "a.scp", rec.signals, rec.fs, rec.names, diff=diff,
                           huffman="huffman" in kind).path
    raise KeyError(kind)


WRITTEN = ("dicom", "hl7_aecg", "ge_muse", "philips_sierra", "philips_sierra_xli",
           "scp_ecg_diff0", "scp_ecg_diff1", "scp_ecg_diff2", "scp_ecg_huffman_diff2", "ishne")


@pytest.mark.parametrize("kind", WRITTEN)
def test_written_files_agree(kind: str, tmp_path: Path) -> None:
    path = _written(kind, tmp_path)
    assert_agree(read_any(path), theirs(path))


def test_aecg_without_effective_time_known_disagreement(tmp_path: Path) -> None:
    """ecgdatakit falls back to the TIME_ABSOLUTE sequence head; ours has no time."""
    path = _written("hl7_aecg_no_effective_time", tmp_path)
    ours, lib = read_any(path), theirs(path)
    assert_agree(ours, lib, times=False)
    assert ours.acquired_at is None and lib.acquired_at is not None


def test_edf_start_time_agrees(tmp_path: Path) -> None:
    """Both read the EDF startdate/starttime as the same naive time."""
    path = _written("edf", tmp_path)
    ours, lib = read_any(path), theirs(path)
    assert_agree(ours, lib, times=False)
    assert ours.acquired_at is not None and lib.acquired_at is not None
    assert ours.acquired_at.tzinfo is None
    assert ours.acquired_at == lib.acquired_at.replace(tzinfo=None)


# --- every WFDB record of the shared samples ------------------------------------------------------


def _shared_records() -> list[str]:
    root = T.SAMPLES
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.hea")) if root.is_dir() else []


def _malformed_base_time(hea: Path) -> bool:
    fields = hea.read_text(errors="replace").splitlines()[0].split()
    return len(fields) > 4 and ":" not in fields[4]


@pytest.mark.parametrize("record", _shared_records())
def test_shared_wfdb_records_agree(record: str) -> None:
    hea = (T.SAMPLES / record).with_suffix(".hea")
    ours = read_any(hea)
    if _malformed_base_time(hea):
        # known: ecgdatakit refuses a base time not in HH:MM:SS form; ours reads the signals
        with pytest.raises(ecgdatakit.CorruptedFileError, match="invalid base time"):
            theirs(hea)
        assert ours.signals.shape[1] > 0 and ours.acquired_at is None
        return
    assert_agree(ours, theirs(hea))
