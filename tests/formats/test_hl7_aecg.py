"""HL7 aECG reader: real WFDB records written as aECG XML with xml.etree, read back.

Quantisation bound: |read - original| <= 0.5 * scale (2.5 uV here -> 1.25 uV).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.formats import writers_xml_dicom as W
from app.ecg.readers.base import ReadHints
from app.ecg.readers.hl7_aecg import READER
from app.errors import MalformedFile, UnsupportedSignal

EPS = 1e-9


def _read(path):
    return READER.read(path, ReadHints())


@pytest.mark.parametrize("record", W.ROUND_TRIP_RECORDS)
def test_round_trip_real_records(tmp_path, record):
    rec = W.load(record)
    path = W.write_aecg(tmp_path / "a.xml", rec, scale_uv=2.5)
    assert READER.claims(path, W.head(path))
    out = _read(path)
    assert out.source_format == "hl7_aecg"
    assert out.fs == pytest.approx(rec.fs, rel=1e-9)
    assert out.lead_names == rec.names  # MDC_ECG_LEAD_AVR -> aVR etc.
    # the derivedSeries (1.2 s of -3x data, placed first in the file) must not be chosen
    assert out.signals.shape == rec.signals.shape
    assert np.abs(out.signals - rec.signals).max() <= 0.5 * 2.5e-3 + EPS
    assert out.metadata["series_code"] == "RHYTHM"
    W.assert_no_identifiers(out.metadata)


def test_increment_in_ms_and_nonzero_origin(tmp_path):
    rec = W.load(W.REC_1000)
    path = W.write_aecg(tmp_path / "ms.xml", rec, scale_uv=1.0, origin_uv=-250.0, time_unit="ms")
    out = _read(path)
    assert out.fs == pytest.approx(1000.0)
    assert np.abs(out.signals - rec.signals).max() <= 0.5 * 1e-3 + EPS


def test_truncated_xml(tmp_path):
    path = W.truncate(W.write_aecg(tmp_path / "t.xml", W.load(W.REC_500_A)), 0.5)
    with pytest.raises(MalformedFile, match="not well-formed"):
        _read(path)


def test_external_entity_is_refused_not_fetched(tmp_path):
    path = tmp_path / "xxe.xml"
    path.write_text(W.external_entity_xml('<AnnotatedECG xmlns="urn:hl7-org:v3">', "</AnnotatedECG>"))
    assert READER.claims(path, W.head(path))
    with pytest.raises(MalformedFile, match="refused.*entit"):
        _read(path)


def test_missing_sampling_rate(tmp_path):
    path = W.write_aecg(tmp_path / "r.xml", W.load(W.REC_500_A), derived=False)
    W.mutate(path, r"<increment [^>]*/>", "")
    with pytest.raises(MalformedFile, match="increment"):
        _read(path)


def test_sampling_rate_hint_used_when_file_has_no_time_sequence(tmp_path):
    path = W.write_aecg(tmp_path / "h.xml", W.load(W.REC_500_A), derived=False)
    W.mutate(path, r"<sequence><code code=\"TIME_ABSOLUTE\".*?</sequence>", "<sequence/>")
    out = READER.read(path, ReadHints(sampling_rate=500))
    assert out.fs == 500


def test_missing_leads(tmp_path):
    path = W.write_aecg(tmp_path / "l.xml", W.load(W.REC_500_A), derived=False)
    W.mutate(path, r"MDC_ECG_LEAD_", "MDC_ECG_NOTALEAD_")
    with pytest.raises(MalformedFile, match="no MDC_ECG_LEAD"):
        _read(path)


def test_no_series(tmp_path):
    path = W.write_aecg(tmp_path / "s.xml", W.load(W.REC_500_A))
    W.mutate(path, r"<series>.*</series>", "")
    with pytest.raises(MalformedFile, match="series"):
        _read(path)


def test_bad_digits(tmp_path):
    path = W.write_aecg(tmp_path / "d.xml", W.load(W.REC_500_A), derived=False)
    W.mutate(path, r"<digits>(\S+) ", r"<digits>\1 12x4 ", count=1)
    with pytest.raises(MalformedFile, match="lead I digits.*12x4"):
        _read(path)


def test_missing_scale(tmp_path):
    path = W.write_aecg(tmp_path / "sc.xml", W.load(W.REC_500_A), derived=False)
    W.mutate(path, r"<scale [^>]*/>", "", count=1)
    with pytest.raises(MalformedFile, match="lead I scale"):
        _read(path)


def test_non_voltage_scale_unit(tmp_path):
    path = W.write_aecg(tmp_path / "u.xml", W.load(W.REC_500_A), derived=False)
    W.mutate(path, r'(<scale value="[^"]*") unit="uV"', r'\1 unit="mmHg"', count=1)
    with pytest.raises(UnsupportedSignal, match="mmHg"):
        _read(path)


def test_claims_only_aecg(tmp_path):
    for fmt, path in W.other_format_files(tmp_path).items():
        assert READER.claims(path, W.head(path)) == (fmt == "hl7_aecg"), fmt
