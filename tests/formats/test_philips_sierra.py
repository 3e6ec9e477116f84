"""Philips Sierra XML reader: real WFDB records written as Sierra XML (uncompressed Base64
and XLI-compressed with the test's own encoder), read back.

Quantisation bound: |read - original| <= 0.5 * resolution (5 uV -> 2.5 uV) on every lead,
for XLI too (the limb-lead residual coding is lossless).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.formats import writers_xml_dicom as W
from app.ecg.readers.base import ReadHints
from app.ecg.readers.philips_sierra import READER
from app.errors import MalformedFile, UnsupportedSignal

EPS = 1e-9
LSB = 5e-3


def _read(path):
    return READER.read(path, ReadHints())


@pytest.mark.parametrize("record", W.ROUND_TRIP_RECORDS)
def test_round_trip_uncompressed(tmp_path, record):
    rec = W.load(record)
    path = W.write_sierra(tmp_path / "s.xml", rec, resolution_uv=5.0)
    assert READER.claims(path, W.head(path))
    out = _read(path)
    assert out.source_format == "philips_sierra"
    assert out.fs == rec.fs
    assert out.lead_names == rec.names
    assert out.signals.shape == rec.signals.shape
    assert np.abs(out.signals - rec.signals).max() <= 0.5 * LSB + EPS
    assert out.metadata["compression"] == "none"
    W.assert_no_identifiers(out.metadata)


@pytest.mark.parametrize(
    "record,seconds,extra",
    [(W.REC_500_A, None, 0), (W.REC_500_B, None, 4), (W.REC_1000, 8.0, 4)],
)
def test_round_trip_xli(tmp_path, record, seconds, extra):
    rec = W.load(record)
    path = W.write_sierra(tmp_path / "x.xml", rec, xli=True, seconds=seconds, extra_zero_leads=extra)
    out = _read(path)
    ref = rec.signals if seconds is None else rec.signals[:, : int(seconds * rec.fs)]
    assert out.metadata["compression"] == "XLI"
    assert out.lead_names == rec.names
    assert out.fs == rec.fs
    assert out.signals.shape == ref.shape
    # limb leads III, aVR, aVL, aVF come back only if the residual reconstruction is right
    assert np.abs(out.signals - ref).max() <= 0.5 * LSB + EPS


def test_xli_stream_truncated(tmp_path):
    rec = W.load(W.REC_500_A)
    path = W.write_sierra(tmp_path / "xt.xml", rec, xli=True, seconds=2.0)
    text = path.read_text()
    start = text.index('compressmethod="XLI">') + len('compressmethod="XLI">')
    end = text.index("</parsedwaveforms>")
    b64 = "".join(text[start:end].split())
    cut = b64[: (len(b64) // 2) // 4 * 4]
    path.write_text(text[:start] + cut + text[end:])
    with pytest.raises(MalformedFile, match="XLI data is truncated"):
        _read(path)


def test_xli_garbage_stream(tmp_path):
    import base64

    rec = W.load(W.REC_500_A)
    path = W.write_sierra(tmp_path / "xg.xml", rec, xli=True, seconds=2.0)
    rng = np.random.default_rng(7)
    junk = bytearray(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    junk[0:4] = (3992).to_bytes(4, "little")  # one plausible chunk header, garbage LZW codes
    W.mutate(path, r'(compressmethod="XLI">)[^<]*', r"\1" + base64.b64encode(bytes(junk)).decode())
    with pytest.raises(MalformedFile, match="XLI"):
        _read(path)


def test_truncated_xml(tmp_path):
    path = W.truncate(W.write_sierra(tmp_path / "t.xml", W.load(W.REC_500_A)), 0.8)
    with pytest.raises(MalformedFile, match="not well-formed"):
        _read(path)


def test_wrong_base64(tmp_path):
    path = W.write_sierra(tmp_path / "b.xml", W.load(W.REC_500_A))
    W.mutate(path, r'(compressmethod="">)....', r"\1%%%%")
    with pytest.raises(MalformedFile, match="not valid base64"):
        _read(path)


def test_uncompressed_data_shorter_than_duration(tmp_path):
    path = W.write_sierra(tmp_path / "d.xml", W.load(W.REC_500_A))
    W.mutate(path, r'durationperchannel="10000"', 'durationperchannel="12000"')
    with pytest.raises(MalformedFile, match="truncated"):
        _read(path)


def test_missing_sampling_rate(tmp_path):
    path = W.write_sierra(tmp_path / "r.xml", W.load(W.REC_500_A))
    W.mutate(path, r"<samplingrate>[^<]*</samplingrate>", "")
    with pytest.raises(MalformedFile, match="samplingrate"):
        _read(path)


def test_missing_resolution(tmp_path):
    path = W.write_sierra(tmp_path / "res.xml", W.load(W.REC_500_A))
    W.mutate(path, r"<resolution>[^<]*</resolution>", "")
    with pytest.raises(MalformedFile, match="resolution"):
        _read(path)


def test_missing_waveforms_element(tmp_path):
    path = W.write_sierra(tmp_path / "w.xml", W.load(W.REC_500_A))
    W.mutate(path, r"<waveforms>.*</waveforms>", "")
    with pytest.raises(MalformedFile, match="parsedwaveforms"):
        _read(path)


def test_unknown_compression(tmp_path):
    path = W.write_sierra(tmp_path / "c.xml", W.load(W.REC_500_A))
    W.mutate(path, r'compressflag="False" compressmethod=""', 'compressflag="True" compressmethod="ZIP"')
    with pytest.raises(UnsupportedSignal, match="ZIP"):
        _read(path)


def test_external_entity_is_refused_not_fetched(tmp_path):
    path = tmp_path / "xxe.xml"
    path.write_text(W.external_entity_xml(
        '<restingecgdata xmlns="http://www3.medical.philips.com">', "</restingecgdata>"))
    assert READER.claims(path, W.head(path))
    with pytest.raises(MalformedFile, match="refused.*entit"):
        _read(path)


def test_claims_only_sierra(tmp_path):
    for fmt, path in W.other_format_files(tmp_path).items():
        assert READER.claims(path, W.head(path)) == (fmt == "philips_sierra"), fmt
