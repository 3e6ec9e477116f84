"""GE MUSE XML reader: real WFDB records written as MUSE XML, read back.

MUSE stores I, II, V1-V6 only. Quantisation bound: |read - original| <= 0.5 * 4.88 uV.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.formats import writers_xml_dicom as W
from app.ecg.readers.base import ReadHints
from app.ecg.readers.ge_muse import READER
from app.errors import MalformedFile

EPS = 1e-9
LSB = 4.88e-3


def _read(path):
    return READER.read(path, ReadHints())


@pytest.mark.parametrize("record", W.ROUND_TRIP_RECORDS)
def test_round_trip_real_records(tmp_path, record):
    rec = W.load(record)
    path = W.write_muse(tmp_path / "m.xml", rec, uv_per_bit=4.88)
    assert READER.claims(path, W.head(path))
    out = _read(path)
    assert out.source_format == "ge_muse"
    assert out.fs == rec.fs
    assert out.lead_names == W.MUSE_LEADS
    ref = rec.signals[[rec.names.index(n) for n in W.MUSE_LEADS]]
    # Rhythm chosen although the (0.6 s, -3x) Median waveform comes first in the file
    assert out.signals.shape == ref.shape
    assert np.abs(out.signals - ref).max() <= 0.5 * LSB + EPS
    assert out.metadata["waveform_type"] == "Rhythm"
    assert "III" in out.metadata["derive_limb_leads"]
    assert "aVF" in out.metadata["derive_limb_leads"]
    W.assert_no_identifiers(out.metadata)


def test_doctype_with_external_dtd_is_read_without_fetching(tmp_path):
    # real MUSE exports start with <!DOCTYPE RestingECG SYSTEM "restecg.dtd">; no such file exists
    path = W.write_muse(tmp_path / "d.xml", W.load(W.REC_500_A))
    assert b"restecg.dtd" in path.read_bytes()[:200]
    assert _read(path).n_samples == 5000


def test_truncated_xml(tmp_path):
    path = W.truncate(W.write_muse(tmp_path / "t.xml", W.load(W.REC_500_A)), 0.7)
    with pytest.raises(MalformedFile, match="not well-formed"):
        _read(path)


def test_wrong_base64(tmp_path):
    path = W.write_muse(tmp_path / "b.xml", W.load(W.REC_500_A), median=False)
    W.mutate(path, r"<WaveFormData>....", "<WaveFormData>%%%%", count=1)
    with pytest.raises(MalformedFile, match="lead I WaveFormData is not valid base64"):
        _read(path)


def test_waveform_data_shorter_than_sample_count(tmp_path):
    path = W.write_muse(tmp_path / "s.xml", W.load(W.REC_500_A), median=False)
    W.mutate(path, r"<LeadSampleCountTotal>5000<", "<LeadSampleCountTotal>6000<", count=1)
    with pytest.raises(MalformedFile, match="truncated.*5000 samples.*6000"):
        _read(path)


def test_missing_sampling_rate(tmp_path):
    path = W.write_muse(tmp_path / "r.xml", W.load(W.REC_500_A))
    W.mutate(path, r"<SampleBase>[^<]*</SampleBase>", "")
    with pytest.raises(MalformedFile, match="SampleBase"):
        _read(path)


def test_missing_leads(tmp_path):
    path = W.write_muse(tmp_path / "l.xml", W.load(W.REC_500_A))
    W.mutate(path, r"<LeadData>.*?</LeadData>", "")
    with pytest.raises(MalformedFile, match="no LeadData"):
        _read(path)


def test_missing_amplitude_scale(tmp_path):
    path = W.write_muse(tmp_path / "a.xml", W.load(W.REC_500_A), median=False)
    W.mutate(path, r"<LeadAmplitudeUnitsPerBit>[^<]*</LeadAmplitudeUnitsPerBit>", "", count=1)
    with pytest.raises(MalformedFile, match="lead I has no LeadAmplitudeUnitsPerBit"):
        _read(path)


def test_no_waveform(tmp_path):
    path = W.write_muse(tmp_path / "w.xml", W.load(W.REC_500_A))
    W.mutate(path, r"<Waveform>.*</Waveform>", "")
    with pytest.raises(MalformedFile, match="no Waveform"):
        _read(path)


def test_external_entity_is_refused_not_fetched(tmp_path):
    path = tmp_path / "xxe.xml"
    path.write_text(W.external_entity_xml("<RestingECG>", "</RestingECG>"))
    assert READER.claims(path, W.head(path))
    with pytest.raises(MalformedFile, match="refused.*entit"):
        _read(path)


def test_claims_only_muse(tmp_path):
    for fmt, path in W.other_format_files(tmp_path).items():
        assert READER.claims(path, W.head(path)) == (fmt == "ge_muse"), fmt
