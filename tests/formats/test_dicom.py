"""DICOM ECG reader: real WFDB records written as DICOM by pydicom, read back.

Quantisation bound: |read - original| <= 0.5 * LSB (LSB = ChannelSensitivity x correction),
i.e. 1.25 uV at the 2.5 uV/bit used here.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.formats import writers_xml_dicom as W
from app.ecg.readers.base import ReadHints
from app.ecg.readers.dicom_reader import READER
from app.errors import MalformedFile

EPS = 1e-9


def _read(path):
    return READER.read(path, ReadHints())


@pytest.mark.parametrize("record", W.ROUND_TRIP_RECORDS)
def test_round_trip_real_records(tmp_path, record):
    rec = W.load(record)
    path = W.write_dicom(tmp_path / "ecg.dcm", rec, lsb_uv=2.5)
    assert READER.claims(path, W.head(path))
    out = _read(path)
    assert out.source_format == "dicom"
    assert out.fs == rec.fs
    assert out.lead_names == rec.names
    assert out.signals.dtype == np.float64
    assert out.signals.shape == rec.signals.shape  # rhythm group, not the 1.2 s median group
    err = np.abs(out.signals - rec.signals).max()
    assert err <= 0.5 * 2.5e-3 + EPS, err
    assert out.metadata["multiplex_group"] == "RHYTHM"
    W.assert_no_identifiers(out.metadata)


def test_general_ecg_sop_mv_units_correction_and_baseline(tmp_path):
    rec = W.load(W.REC_500_B)
    # sensitivity 0.01 mV x correction 0.5 = 5 uV/LSB; baseline 0.1 mV
    path = W.write_dicom(tmp_path / "g.dcm", rec, lsb_uv=5.0, corr=0.5, baseline_uv=100.0,
                         units="mV", sop=W.SOP_GENERAL)
    out = _read(path)
    assert out.metadata["sop_class"] == "General ECG Waveform Storage"
    assert np.allclose(out.metadata["lsb_mV"], 5e-3)
    assert np.abs(out.signals - rec.signals).max() <= 0.5 * 5e-3 + EPS


def test_lead_names_from_einthoven_meanings_and_channel_labels(tmp_path):
    rec = W.load(W.REC_500_C)
    out = _read(W.write_dicom(tmp_path / "e.dcm", rec, style="einthoven"))
    assert out.lead_names == rec.names
    out = _read(W.write_dicom(tmp_path / "l.dcm", rec, style="label"))
    assert out.lead_names == rec.names


def test_unlabelled_rhythm_group_beats_median_group(tmp_path):
    rec = W.load(W.REC_500_A)
    out = _read(W.write_dicom(tmp_path / "u.dcm", rec, rhythm_label=""))
    assert out.n_samples == rec.signals.shape[1]
    assert np.abs(out.signals - rec.signals).max() <= 0.5 * 2.5e-3 + EPS


def test_median_only_file_is_read_with_a_warning(tmp_path):
    import pydicom

    rec = W.load(W.REC_500_A)
    path = W.write_dicom(tmp_path / "m.dcm", rec)
    ds = pydicom.dcmread(path)
    ds.WaveformSequence = [ds.WaveformSequence[0]]  # keep the MEDIAN group only
    ds.save_as(path)
    out = _read(path)
    assert [w.code for w in out.warnings] == ["median_beats_only"]
    assert out.n_samples == int(1.2 * rec.fs)


def test_truncated_file(tmp_path):
    path = W.truncate(W.write_dicom(tmp_path / "t.dcm", W.load(W.REC_500_A)), 0.6)
    with pytest.raises(MalformedFile, match="(?i)truncated|parsed"):
        _read(path)


def test_non_ecg_dicom(tmp_path):
    path = W.write_non_ecg_dicom(tmp_path / "ct.dcm")
    assert READER.claims(path, W.head(path))  # it is DICOM ...
    with pytest.raises(MalformedFile, match="not an ECG waveform.*1.2.840.10008.5.1.4.1.1.2"):
        _read(path)  # ... but not an ECG


def test_missing_sampling_frequency(tmp_path):
    import pydicom

    path = W.write_dicom(tmp_path / "f.dcm", W.load(W.REC_500_A), median=False)
    ds = pydicom.dcmread(path)
    del ds.WaveformSequence[0].SamplingFrequency
    ds.save_as(path)
    with pytest.raises(MalformedFile, match="SamplingFrequency"):
        _read(path)


def test_missing_channel_definitions(tmp_path):
    import pydicom

    path = W.write_dicom(tmp_path / "c.dcm", W.load(W.REC_500_A), median=False)
    ds = pydicom.dcmread(path)
    del ds.WaveformSequence[0].ChannelDefinitionSequence
    ds.save_as(path)
    with pytest.raises(MalformedFile, match="ChannelDefinitionSequence"):
        _read(path)


def test_missing_waveform_sequence(tmp_path):
    import pydicom

    path = W.write_dicom(tmp_path / "w.dcm", W.load(W.REC_500_A))
    ds = pydicom.dcmread(path)
    del ds.WaveformSequence
    ds.save_as(path)
    with pytest.raises(MalformedFile, match="WaveformSequence"):
        _read(path)


def test_missing_units(tmp_path):
    import pydicom

    path = W.write_dicom(tmp_path / "n.dcm", W.load(W.REC_500_A), median=False)
    ds = pydicom.dcmread(path)
    del ds.WaveformSequence[0].ChannelDefinitionSequence[3].ChannelSensitivityUnitsSequence
    ds.save_as(path)
    with pytest.raises(MalformedFile, match="aVR.*ChannelSensitivityUnitsSequence"):
        _read(path)


def test_garbage_after_preamble(tmp_path):
    path = tmp_path / "g.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
    assert READER.claims(path, W.head(path))
    with pytest.raises(MalformedFile):
        _read(path)


def test_claims_only_dicom(tmp_path):
    files = W.other_format_files(tmp_path)
    for fmt, path in files.items():
        assert READER.claims(path, W.head(path)) == (fmt == "dicom"), fmt
