"""Every reader whose format declares a per-lead gain reports it in ``Recording.gains`` (digits
per mV, the sign the file declares); a negative one gets preprocessing's ``negative_gain``
warning naming the lead; a zero (or non-finite) one is refused with MalformedFile (422) naming
the leads and the field.

Files are real files of each format, written into tmp_path by the independent test writers
(tests/formats/writers_*.py, wfdb.wrsamp) from the repository's own record
tests/data/ecg/E07500 (12 leads, 500 Hz, 10 s), then edited where a test needs one odd field.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pydicom
import pytest
import wfdb
from tests.formats import writers_xml_dicom as W
from tests.formats.writers_tabular import write_csv, write_edf

from app.ecg.preprocess import preprocess
from app.ecg.readers import read_any
from app.ecg.readers.base import ReadHints
from app.ecg.recording import Recording
from app.errors import MalformedFile

E07500 = Path(__file__).resolve().parents[1] / "data" / "ecg" / "E07500"
STANDARD = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


@functools.lru_cache(maxsize=1)
def _record() -> W.Rec:
    r = wfdb.rdrecord(str(E07500))
    return W.Rec(np.asarray(r.p_signal, dtype=np.float64).T.copy(), float(r.fs), tuple(r.sig_name))


def _read(path: Path) -> Recording:
    return read_any(path, ReadHints())


def _negative_gain_leads(rec: Recording) -> tuple[str, ...]:
    warned = [w for w in preprocess(rec).warnings if w.code == "negative_gain"]
    return warned[0].leads if warned else ()


def _refused(path: Path) -> MalformedFile:
    with pytest.raises(MalformedFile) as info:
        _read(path)
    return info.value


def _assert_refusal(err: MalformedFile, leads: list[str], field: str) -> None:
    assert err.details["leads"] == leads, err.details
    assert err.details["field"] == field
    assert all(lead in err.message for lead in leads) and field in err.message
    assert err.to_dict()["code"] == "malformed_file"


# --- WFDB ------------------------------------------------------------------------------------


def _wfdb(folder: Path, gains: list[float], units: str = "mV", name: str = "g") -> Path:
    """E07500 written with wfdb.wrsamp at ``gains`` adu per ``units`` (format 16). wrsamp writes
    positive gains only, so a negative one is written into the header afterwards; that lead
    stores negated digits, so its physical signal is still the original one."""
    rec = _record()
    per_unit = 1.0 if units == "mV" else 1000.0  # mV -> units
    d = np.round(rec.signals.T * per_unit * np.array(gains)).astype(np.int64)
    wfdb.wrsamp(name, fs=rec.fs, units=[units] * 12, sig_name=list(rec.names), d_signal=d, fmt=["16"] * 12,
                adc_gain=[abs(g) for g in gains], baseline=[0] * 12, write_dir=str(folder))
    header = folder / f"{name}.hea"
    for lead, gain in zip(rec.names, gains, strict=True):
        if gain < 0:
            _edit_gain(header, lead, f"{gain:g}")
    return header


def _edit_gain(header: Path, lead: str, gain: str) -> Path:
    """Replace the gain on ``lead``'s signal line (the line's description is the lead name)."""
    lines = header.read_text().splitlines()
    for k, line in enumerate(lines):
        tokens = line.split()
        if k and tokens and tokens[-1] == lead:
            rest = tokens[2][tokens[2].index("("):]
            tokens[2] = gain + rest
            lines[k] = " ".join(tokens)
            break
    else:
        raise AssertionError(f"no signal line for {lead}")
    header.write_text("\n".join(lines) + "\n")
    return header


def _off_fast_path(header: Path) -> Path:
    """A non-ASCII comment keeps a record off the numpy fast path: wfdb.rdrecord reads it."""
    header.write_bytes(header.read_bytes() + "# Ärztin\n".encode())
    return header


@pytest.mark.parametrize("decoder", ["numpy", "wfdb"])
@pytest.mark.parametrize("units,gain,per_mv", [("mV", 1000.0, 1000.0), ("uV", 0.2, 200.0)])
def test_wfdb_gain_is_reported_per_mv(tmp_path, decoder, units, gain, per_mv):
    header = _wfdb(tmp_path, [gain] * 12, units)
    if decoder == "wfdb":
        _off_fast_path(header)
    rec = _read(header)
    assert rec.metadata["decoder"] == decoder
    assert rec.gains == pytest.approx((per_mv,) * 12, rel=1e-12)
    assert _negative_gain_leads(rec) == ()


def test_wfdb_missing_gain_is_wfdbs_default(tmp_path):
    header = _wfdb(tmp_path, [200.0] * 12)
    lines = header.read_text().splitlines()
    lines[1] = " ".join(lines[1].split()[:2])  # "g.dat 16": no gain, so wfdb reads 200 adu/mV
    header.write_text("\n".join(lines) + "\n")
    assert _read(header).gains == (200.0,) * 12


@pytest.mark.parametrize("decoder", ["numpy", "wfdb"])
def test_wfdb_negative_gain_is_warned_about(tmp_path, decoder):
    gains = [1000.0] * 12
    gains[7] = -1000.0  # V2
    header = _wfdb(tmp_path, gains)
    if decoder == "wfdb":
        _off_fast_path(header)
    rec = _read(header)
    assert rec.metadata["decoder"] == decoder
    assert rec.gains is not None and rec.gains[7] == -1000.0
    assert _negative_gain_leads(rec) == ("V2",)
    assert np.abs(rec.signals - _record().signals).max() <= 0.5e-3 + 1e-12  # applied as declared


@pytest.mark.parametrize("decoder", ["numpy", "wfdb"])
@pytest.mark.parametrize("gain", ["0", "0.0", "1e999"])
def test_wfdb_zero_or_infinite_gain_is_refused(tmp_path, decoder, gain):
    header = _edit_gain(_edit_gain(_wfdb(tmp_path, [1000.0] * 12), "III", gain), "V5", gain)
    if decoder == "wfdb":
        _off_fast_path(header)
    _assert_refusal(_refused(header), ["III", "V5"], "ADC gain")


# --- EDF ----------------------------------------------------------------------------------------

EDF_LIMIT_UV = 10_000.0  # physical range -10..10 mV, digital -32768..32767


def _edf(path: Path) -> Path:
    rec = _record()
    write_edf(path, rec.signals, rec.fs, [f"ECG {n}" for n in rec.names], unit="uV", scale=1000.0,
              phys_limit=EDF_LIMIT_UV, plus=False)
    return path


def _patch_edf(path: Path, lead: int, field_offset: int, text: str) -> Path:
    """Overwrite one 8-byte field of signal ``lead``'s header (offsets per signal count, as the
    EDF specification lays them out: physical min 104, max 112, digital min 120, max 128)."""
    data = bytearray(path.read_bytes())
    ns = int(data[252:256].decode())
    at = 256 + field_offset * ns + 8 * lead
    data[at : at + 8] = text.ljust(8).encode("ascii")
    path.write_bytes(bytes(data))
    return path


def test_edf_gain_is_digital_over_physical_range_per_mv(tmp_path):
    rec = _read(_edf(tmp_path / "g.edf"))
    assert rec.lead_names == STANDARD
    assert rec.gains == pytest.approx((65535 / (2 * EDF_LIMIT_UV) * 1000.0,) * 12, rel=1e-12)
    assert _negative_gain_leads(rec) == ()


def test_edf_inverted_physical_range_is_a_negative_gain(tmp_path):
    path = _edf(tmp_path / "n.edf")
    _patch_edf(path, 1, 104, f"{EDF_LIMIT_UV:g}")  # lead II: physical min +10 mV ...
    _patch_edf(path, 1, 112, f"{-EDF_LIMIT_UV:g}")  # ... physical max -10 mV
    rec = _read(path)
    assert rec.gains is not None and rec.gains[1] == pytest.approx(-3276.75)
    assert _negative_gain_leads(rec) == ("II",)
    assert np.corrcoef(rec.signals[1], _record().signals[1])[0, 1] < -0.99  # inverted, as declared


def test_edf_zero_digital_range_is_refused(tmp_path):
    path = _patch_edf(_patch_edf(_edf(tmp_path / "z.edf"), 6, 120, "0"), 6, 128, "0")  # V1
    _assert_refusal(_refused(path), ["V1"], "digital range / physical range")


def test_edf_zero_physical_range_is_refused_naming_the_lead(tmp_path):
    path = _patch_edf(_patch_edf(_edf(tmp_path / "p.edf"), 3, 104, "5"), 3, 112, "5")  # aVR
    _assert_refusal(_refused(path), ["aVR"], "physical range")  # before edflib, which only says "not compliant"


# --- DICOM ---------------------------------------------------------------------------------------


def _dicom(path: Path, **kw) -> Path:
    return W.write_dicom(path, _record(), median=False, **kw)


def _set_channel(path: Path, lead: int, **values: str) -> Path:
    ds = pydicom.dcmread(path)
    channel = ds.WaveformSequence[0].ChannelDefinitionSequence[lead]
    for key, value in values.items():
        setattr(channel, key, value)
    ds.save_as(path)
    return path


@pytest.mark.parametrize("units,corr", [("uV", 1.0), ("mV", 1.0), ("uV", 2.0)])
def test_dicom_gain_is_one_over_sensitivity_times_correction(tmp_path, units, corr):
    rec = _read(_dicom(tmp_path / "g.dcm", lsb_uv=2.5, units=units, corr=corr))
    assert rec.gains == pytest.approx((400.0,) * 12, rel=1e-12)  # 2.5 uV per digit
    assert _negative_gain_leads(rec) == ()


def test_dicom_negative_sensitivity_is_warned_about(tmp_path):
    path = _set_channel(_dicom(tmp_path / "n.dcm"), 4, ChannelSensitivity="-2.5")  # aVL
    rec = _read(path)
    assert rec.gains is not None and rec.gains[4] == pytest.approx(-400.0)
    assert _negative_gain_leads(rec) == ("aVL",)


@pytest.mark.parametrize("field", ["ChannelSensitivity", "ChannelSensitivityCorrectionFactor"])
def test_dicom_zero_sensitivity_or_correction_is_refused(tmp_path, field):
    path = _set_channel(_dicom(tmp_path / "z.dcm"), 0, **{field: "0"})
    _set_channel(path, 11, **{field: "0"})
    _assert_refusal(_refused(path), ["I", "V6"], "ChannelSensitivity x ChannelSensitivityCorrectionFactor")


# --- HL7 aECG, GE MUSE, Philips Sierra ---------------------------------------------------------


def test_aecg_gain_is_one_over_scale(tmp_path):
    rec = _read(W.write_aecg(tmp_path / "g.xml", _record(), scale_uv=2.5, derived=False))
    assert rec.gains == pytest.approx((400.0,) * 12, rel=1e-12)


@pytest.mark.parametrize("value,refused", [("-2.5", False), ("0", True)])
def test_aecg_negative_scale_warned_zero_refused(tmp_path, value, refused):
    path = W.write_aecg(tmp_path / "n.xml", _record(), scale_uv=2.5, derived=False)
    W.mutate(path, r'<scale value="2.5"', f'<scale value="{value}"', count=1)  # the first lead: I
    if refused:
        _assert_refusal(_refused(path), ["I"], "scale")
        return
    rec = _read(path)
    assert rec.gains is not None and rec.gains[0] == pytest.approx(-400.0)
    assert _negative_gain_leads(rec) == ("I",)


def test_muse_gain_is_one_over_units_per_bit(tmp_path):
    rec = _read(W.write_muse(tmp_path / "g.xml", _record(), uv_per_bit=4.88, median=False))
    assert rec.lead_names == W.MUSE_LEADS
    assert rec.gains == pytest.approx((1 / 4.88e-3,) * 8, rel=1e-12)


@pytest.mark.parametrize("value,refused", [("-4.88", False), ("0", True)])
def test_muse_negative_units_per_bit_warned_zero_refused(tmp_path, value, refused):
    path = W.write_muse(tmp_path / "n.xml", _record(), uv_per_bit=4.88, median=False)
    W.mutate(path, r"<LeadAmplitudeUnitsPerBit>4.88<", f"<LeadAmplitudeUnitsPerBit>{value}<", count=1)  # I
    if refused:
        _assert_refusal(_refused(path), ["I"], "LeadAmplitudeUnitsPerBit")
        return
    rec = _read(path)
    assert rec.gains is not None and rec.gains[0] == pytest.approx(-1 / 4.88e-3)
    assert _negative_gain_leads(rec) == ("I",)


@pytest.mark.parametrize("xli", [False, True])
def test_sierra_gain_is_one_over_resolution(tmp_path, xli):
    rec = _read(W.write_sierra(tmp_path / "g.xml", _record(), resolution_uv=5.0, xli=xli))
    assert rec.gains == pytest.approx((200.0,) * 12, rel=1e-12)


@pytest.mark.parametrize("value,refused", [("-5", False), ("0", True)])
def test_sierra_negative_resolution_warned_zero_refused(tmp_path, value, refused):
    path = W.write_sierra(tmp_path / "n.xml", _record(), resolution_uv=5.0)
    W.mutate(path, r"<resolution>5<", f"<resolution>{value}<", count=1)
    if refused:
        _assert_refusal(_refused(path), list(STANDARD), "resolution")
        return
    rec = _read(path)
    assert rec.gains == pytest.approx((-200.0,) * 12)
    assert _negative_gain_leads(rec) == STANDARD


# --- formats with no gain ------------------------------------------------------------------------


def test_formats_without_a_gain_report_none(tmp_path):
    rec = _record()
    np.save(tmp_path / "a.npy", rec.signals)
    write_csv(tmp_path / "a.csv", rec.signals, list(rec.names))
    for path in (tmp_path / "a.npy", tmp_path / "a.csv"):
        read = read_any(path, ReadHints(sampling_rate=rec.fs))
        assert read.source_format in ("npy", "csv") and read.gains is None
        assert _negative_gain_leads(read) == ()
