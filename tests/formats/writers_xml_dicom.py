"""Independent test writers for the DICOM, HL7 aECG, GE MUSE and Philips Sierra readers.

Each writer turns a real WFDB record (signals in mV) into a file of the vendor format,
using only pydicom / xml.etree / base64 and the format descriptions - never the reader
code under test. The XLI encoder (LZW with 10-bit codes over second-difference-coded
samples) is written here from the published description of the format, independently of
the decoder the reader uses.

Every writer quantises ``round(value / lsb)``, so a correct reader reproduces the original
within ``0.5 * lsb`` (plus float rounding).
"""

from __future__ import annotations

import base64
import functools
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.formats.writers_tabular import SAMPLES, head  # noqa: F401  (head is re-exported to the tests)

# two 500 Hz records from different sources and one 1000 Hz record (38.4 s)
REC_500_A = "cinc2021-a/E07500"
REC_500_B = "cinc2021-b/PTB_PTBXL/HR00001"
REC_500_C = "cinc2021-b/G12EC/E00001"
REC_1000 = "cinc2021-b/PTB_PTBXL/S0001"
ROUND_TRIP_RECORDS = (REC_500_A, REC_500_B, REC_1000)

FAKE_PATIENT_NAME = "DOE^JANE_SECRET"
FAKE_PATIENT_ID = "PID-998877"
FAKE_BIRTH = "19470211"


@dataclass(frozen=True)
class Rec:
    signals: np.ndarray  # (n_leads, n) mV
    fs: float
    names: tuple[str, ...]


@functools.lru_cache(maxsize=8)
def load(record: str) -> Rec:
    import wfdb

    path = SAMPLES / record
    if not path.with_suffix(".hea").exists():
        import pytest

        pytest.skip(f"ECG samples not found at {path}")
    r = wfdb.rdrecord(str(path))
    sig = np.asarray(r.p_signal, dtype=np.float64).T.copy()
    assert not np.isnan(sig).any()
    return Rec(sig, float(r.fs), tuple(r.sig_name))


def quantise(x_mv: np.ndarray, lsb_mv: float, lo: int = -32768, hi: int = 32767) -> np.ndarray:
    q = np.round(np.asarray(x_mv) / lsb_mv)
    if q.min() < lo or q.max() > hi:
        raise ValueError(f"signal does not fit [{lo}, {hi}] at {lsb_mv} mV/LSB")
    return q.astype(np.int64)


# --- DICOM -----------------------------------------------------------------------------------

SOP_12LEAD = "1.2.840.10008.5.1.4.1.1.9.1.1"
SOP_GENERAL = "1.2.840.10008.5.1.4.1.1.9.1.2"
SCPECG = {"I": 1, "II": 2, "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8,
          "III": 61, "aVR": 62, "aVL": 63, "aVF": 64}


def _channel(name: str, sens: float, corr: float, baseline: float, units: str, style: str):
    from pydicom.dataset import Dataset

    ch = Dataset()
    src = Dataset()
    src.CodeValue = f"5.6.3-9-{SCPECG.get(name, 0)}"
    src.CodingSchemeDesignator = "SCPECG"
    src.CodingSchemeVersion = "1.3"
    if style == "meaning":
        src.CodeMeaning = f"Lead {name}"
    elif style == "einthoven":
        src.CodeMeaning = {"I": "Lead I (Einthoven)", "aVR": "Lead aVR, augmented voltage, right"}.get(
            name, f"Lead {name}")
    else:  # "label": no CodeMeaning, ChannelLabel only
        src.CodeMeaning = ""
        ch.ChannelLabel = name
    ch.ChannelSourceSequence = [src]
    ch.ChannelSensitivity = f"{sens:g}"
    u = Dataset()
    u.CodeValue = units
    u.CodingSchemeDesignator = "UCUM"
    u.CodingSchemeVersion = "1.4"
    u.CodeMeaning = {"uV": "microvolt", "mV": "millivolt"}[units]
    ch.ChannelSensitivityUnitsSequence = [u]
    ch.ChannelSensitivityCorrectionFactor = f"{corr:g}"
    ch.ChannelBaseline = f"{baseline:g}"
    ch.ChannelSampleSkew = "0"
    ch.WaveformBitsStored = 16
    return ch


def _group(label: str, sig_mv: np.ndarray, fs: float, names, *, lsb_uv: float, corr: float,
           baseline_uv: float, units: str, style: str):
    from pydicom.dataset import Dataset

    g = Dataset()
    g.MultiplexGroupTimeOffset = "0"
    g.WaveformOriginality = "ORIGINAL" if label != "MEDIAN" else "DERIVED"
    g.NumberOfWaveformChannels = sig_mv.shape[0]
    g.NumberOfWaveformSamples = sig_mv.shape[1]
    g.SamplingFrequency = f"{fs:g}"
    g.MultiplexGroupLabel = label
    unit_scale = 1.0 if units == "uV" else 1e-3  # sensitivity written in the file's units
    sens = lsb_uv / corr * unit_scale
    base = baseline_uv * unit_scale
    g.ChannelDefinitionSequence = [
        _channel(n, sens, corr, base, units, style) for n in names
    ]
    g.WaveformBitsAllocated = 16
    g.WaveformSampleInterpretation = "SS"
    # physical = raw * sens * corr + baseline  ->  raw = (x - baseline) / lsb
    raw = quantise((sig_mv - baseline_uv * 1e-3), lsb_uv * 1e-3)
    g.WaveformData = raw.T.astype("<i2").tobytes()  # interleaved: sample by sample
    return g


def write_dicom(path: Path, rec: Rec, *, lsb_uv: float = 2.5, corr: float = 1.0,
                baseline_uv: float = 0.0, units: str = "uV", sop: str | None = None,
                median: bool = True, rhythm_label: str = "RHYTHM", style: str = "meaning",
                dates: dict[str, str] | None = None) -> Path:
    """A DICOM ECG: a MEDIAN group (first, 1.2 s of other data) and the rhythm group. ``dates``:
    attributes by keyword, e.g. ``{"AcquisitionDateTime": "20200512123359", "TimezoneOffsetFromUTC": "+0200"}``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if sop is None:
        sop = SOP_12LEAD if rec.signals.shape[1] <= 16384 else SOP_GENERAL
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    uid = generate_uid()
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = uid
    ds.Modality = "ECG"
    ds.Manufacturer = "TestWriter"
    ds.PatientName = FAKE_PATIENT_NAME
    ds.PatientID = FAKE_PATIENT_ID
    ds.PatientBirthDate = FAKE_BIRTH
    for keyword, value in (dates or {}).items():
        setattr(ds, keyword, value)
    groups = []
    kw = dict(lsb_uv=lsb_uv, corr=corr, baseline_uv=baseline_uv, units=units, style=style)
    if median:
        n_med = int(1.2 * rec.fs)
        med = -3.0 * rec.signals[:, :n_med]  # recognisably different from the rhythm
        groups.append(_group("MEDIAN", med, rec.fs, rec.names, **kw))
    groups.append(_group(rhythm_label, rec.signals, rec.fs, rec.names, **kw))
    ds.WaveformSequence = groups
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_non_ecg_dicom(path: Path) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.arange(16, dtype="<i2").tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


# --- HL7 aECG --------------------------------------------------------------------------------

HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
MDC = {"I": "I", "II": "II", "III": "III", "aVR": "AVR", "aVL": "AVL", "aVF": "AVF",
       "V1": "V1", "V2": "V2", "V3": "V3", "V4": "V4", "V5": "V5", "V6": "V6"}


def _e(parent, tag, **attrs):
    el = ET.SubElement(parent, f"{{{HL7}}}{tag}")
    for k, v in attrs.items():
        el.set(k, str(v))
    return el


def _seqset(parent, sig_mv, fs, names, *, scale_uv, origin_uv, time_unit, time_code):
    ss = _e(_e(parent, "component"), "sequenceSet")
    seq = _e(_e(ss, "component"), "sequence")
    _e(seq, "code", code=time_code, codeSystem="2.16.840.1.113883.5.4")
    if time_code == "TIME_ABSOLUTE":
        val = _e(seq, "value", **{f"{{{XSI}}}type": "GLIST_TS"})
        _e(val, "head", value="20200101120000.000")
    else:
        val = _e(seq, "value", **{f"{{{XSI}}}type": "GLIST_PQ"})
        _e(val, "head", value="0", unit=time_unit)
    inc = 1.0 / fs if time_unit == "s" else 1000.0 / fs
    _e(val, "increment", value=f"{inc:g}", unit=time_unit)
    for name, row in zip(names, sig_mv):
        seq = _e(_e(ss, "component"), "sequence")
        _e(seq, "code", code=f"MDC_ECG_LEAD_{MDC.get(name, name)}",
           codeSystem="2.16.840.1.113883.6.24", codeSystemName="MDC")
        val = _e(seq, "value", **{f"{{{XSI}}}type": "SLIST_PQ"})
        _e(val, "origin", value=f"{origin_uv:g}", unit="uV")
        _e(val, "scale", value=f"{scale_uv:g}", unit="uV")
        digits = quantise(row - origin_uv * 1e-3, scale_uv * 1e-3)
        _e(val, "digits").text = " ".join(map(str, digits.tolist()))


def write_aecg(path: Path, rec: Rec, *, scale_uv: float = 2.5, origin_uv: float = 0.0,
               time_unit: str = "s", derived: bool = True, effective_time: str | None = None,
               series_effective_time: str | None = None) -> Path:
    """aECG with the rhythm series; the median-beat derivedSeries is placed before the rhythm
    sequenceSet so a reader that takes the first sequenceSet in document order is wrong.
    ``effective_time`` / ``series_effective_time``: the ``effectiveTime/low`` values (HL7 TS) of
    the AnnotatedECG and of the rhythm series."""
    ET.register_namespace("", HL7)
    ET.register_namespace("xsi", XSI)
    root = ET.Element(f"{{{HL7}}}AnnotatedECG")
    _e(root, "id", root="1.2.3.4")
    _e(root, "code", code="93000", codeSystem="2.16.840.1.113883.6.12")
    if effective_time is not None:
        _e(_e(root, "effectiveTime"), "low", value=effective_time)
    person = _e(_e(_e(_e(_e(root, "componentOf"), "timepointEvent"), "componentOf"),
                   "subjectAssignment"), "subject")
    trial = _e(person, "trialSubject")
    _e(trial, "id", extension=FAKE_PATIENT_ID)
    demo = _e(trial, "subjectDemographicPerson")
    _e(demo, "name").text = FAKE_PATIENT_NAME
    _e(demo, "birthTime", value=FAKE_BIRTH)
    series = _e(_e(root, "component"), "series")
    _e(series, "code", code="RHYTHM", codeSystem="2.16.840.1.113883.5.4")
    if series_effective_time is not None:
        _e(_e(series, "effectiveTime"), "low", value=series_effective_time)
    if derived:
        ds = _e(_e(series, "derivation"), "derivedSeries")
        _e(ds, "code", code="REPRESENTATIVE_BEAT", codeSystem="2.16.840.1.113883.5.4")
        n = int(1.2 * rec.fs)
        _seqset(ds, -3.0 * rec.signals[:, :n], rec.fs, rec.names, scale_uv=scale_uv,
                origin_uv=0.0, time_unit="ms", time_code="TIME_RELATIVE")
    _seqset(series, rec.signals, rec.fs, rec.names, scale_uv=scale_uv, origin_uv=origin_uv,
            time_unit=time_unit, time_code="TIME_ABSOLUTE")
    ET.ElementTree(root).write(str(path), encoding="utf-8", xml_declaration=True)
    return path


# --- GE MUSE ---------------------------------------------------------------------------------

MUSE_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def _muse_waveform(parent, wtype, sig_mv, fs, names, uv_per_bit):
    wf = ET.SubElement(parent, "Waveform")
    for tag, val in (("WaveformType", wtype), ("WaveformStartTime", "0"),
                     ("NumberofLeads", str(len(names))), ("SampleType", "CONTINUOUS_SAMPLES"),
                     ("SampleBase", f"{fs:g}"), ("SampleExponent", "0"),
                     ("HighPassFilter", "16"), ("LowPassFilter", "150"), ("ACFilter", "60")):
        ET.SubElement(wf, tag).text = val
    for name, row in zip(names, sig_mv):
        q = quantise(row, uv_per_bit * 1e-3).astype("<i2")
        ld = ET.SubElement(wf, "LeadData")
        raw = q.tobytes()
        for tag, val in (("LeadByteCountTotal", str(len(raw))), ("LeadTimeOffset", "0"),
                         ("LeadSampleCountTotal", str(q.size)),
                         ("LeadAmplitudeUnitsPerBit", f"{uv_per_bit:g}"),
                         ("LeadAmplitudeUnits", "MICROVOLTS"), ("LeadHighLimit", "32767"),
                         ("LeadLowLimit", "-32768"), ("LeadID", name),
                         ("LeadOffsetFirstSample", "0"), ("FirstSampleBaseline", "0"),
                         ("LeadSampleSize", "2"), ("LeadOff", "FALSE"), ("BaselineSway", "FALSE")):
            ET.SubElement(ld, tag).text = val
        # base64 wrapped at 76 characters like MUSE exports
        b64 = base64.b64encode(raw).decode("ascii")
        ET.SubElement(ld, "WaveFormData").text = "\n".join(
            b64[i:i + 76] for i in range(0, len(b64), 76))


def write_muse(path: Path, rec: Rec, *, uv_per_bit: float = 4.88, median: bool = True,
               acquired: tuple[str, str] | None = None) -> Path:
    """MUSE XML with the 8 stored leads; the Median waveform comes first in the file.
    ``acquired``: TestDemographics (AcquisitionDate, AcquisitionTime), e.g. ("05-12-2020", "12:33:59")."""
    idx = [rec.names.index(n) for n in MUSE_LEADS]
    sig = rec.signals[idx]
    root = ET.Element("RestingECG")
    ET.SubElement(ET.SubElement(root, "MuseInfo"), "MuseVersion").text = "9.0.9.18167"
    demo = ET.SubElement(root, "PatientDemographics")
    ET.SubElement(demo, "PatientID").text = FAKE_PATIENT_ID
    ET.SubElement(demo, "PatientLastName").text = FAKE_PATIENT_NAME
    ET.SubElement(demo, "DateofBirth").text = FAKE_BIRTH
    if acquired is not None:
        test = ET.SubElement(root, "TestDemographics")
        ET.SubElement(test, "AcquisitionDate").text = acquired[0]
        ET.SubElement(test, "AcquisitionTime").text = acquired[1]
    if median:
        n = int(0.6 * rec.fs)
        _muse_waveform(root, "Median", -3.0 * sig[:, :n], rec.fs, MUSE_LEADS, uv_per_bit)
    _muse_waveform(root, "Rhythm", sig, rec.fs, MUSE_LEADS, uv_per_bit)
    body = ET.tostring(root, encoding="unicode")
    text = ('<?xml version="1.0" encoding="ISO-8859-1"?>\n'
            '<!DOCTYPE RestingECG SYSTEM "restecg.dtd">\n' + body)
    Path(path).write_bytes(text.encode("iso-8859-1"))
    return path


# --- Philips Sierra + XLI encoder ------------------------------------------------------------

PHILIPS = "http://www3.medical.philips.com"


def lzw_encode(data: bytes, bits: int = 10) -> bytes:
    """LZW, 256 literal codes, dictionary grows to (1 << bits) - 2 and then freezes,
    codes packed most-significant-bit first."""
    max_code = (1 << bits) - 2
    table = {bytes([i]): i for i in range(256)}
    next_code = 256
    w = b""
    codes: list[int] = []
    for c in data:
        wc = w + bytes([c])
        if wc in table:
            w = wc
            continue
        codes.append(table[w])
        if next_code <= max_code:
            table[wc] = next_code
            next_code += 1
        w = bytes([c])
    if w:
        codes.append(table[w])
    out = bytearray()
    acc = 0
    nbits = 0
    for code in codes:
        acc = (acc << bits) | code
        nbits += bits
        while nbits >= 8:
            nbits -= 8
            out.append((acc >> nbits) & 0xFF)
        acc &= (1 << nbits) - 1
    if nbits:
        out.append((acc << (8 - nbits)) & 0xFF)
    return bytes(out)


def xli_encode_lead(x: np.ndarray) -> bytes:
    """One XLI chunk: 8-byte header (int32 LE compressed size, 2 unused bytes, int16 LE first
    second-difference residual), then LZW of the 16-bit delta words stored as all high
    bytes followed by all low bytes. Word k (k >= 2) holds the residual of sample k+1 plus 64,
    where residual(i) = 2*x[i-1] - x[i-2] - x[i]; words 0 and 1 are the first two samples."""
    x = [int(v) for v in x]
    n = len(x)
    assert n >= 3
    resid = {i: 2 * x[i - 1] - x[i - 2] - x[i] for i in range(2, n)}
    words = [0] * n
    words[0], words[1] = x[0], x[1]
    for i in range(3, n):
        words[i - 1] = resid[i] + 64
    words[n - 1] = 0
    if any(not -32768 <= w <= 32767 for w in words) or not -32768 <= resid[2] <= 32767:
        raise ValueError("XLI deltas do not fit 16 bits")
    u = [w & 0xFFFF for w in words]
    payload = bytes(v >> 8 for v in u) + bytes(v & 0xFF for v in u)
    comp = lzw_encode(payload)
    header = len(comp).to_bytes(4, "little", signed=True) + b"\x00\x00" + resid[2].to_bytes(
        2, "little", signed=True)
    return header + comp


def xli_encode(leads_lsb: np.ndarray, *, std12_residuals: bool = True, extra_zero_leads: int = 0) -> bytes:
    """Encode (12, n) integer samples; III, aVR, aVL, aVF stored as Philips residuals."""
    leads = [np.asarray(r, dtype=np.int64).copy() for r in leads_lsb]
    if std12_residuals:
        i, ii, iii, avr, avl, avf = leads[:6]
        leads[2] = ii - i - iii
        leads[3] = -avr - np.floor_divide(i + ii, 2)
        leads[4] = np.floor_divide(i - iii, 2) - avl
        leads[5] = np.floor_divide(ii + iii, 2) - avf
    n = leads[0].size
    leads += [np.zeros(n, dtype=np.int64)] * extra_zero_leads
    return b"".join(xli_encode_lead(r) for r in leads)


def write_sierra(path: Path, rec: Rec, *, resolution_uv: float = 5.0, xli: bool = False,
                 seconds: float | None = None, extra_zero_leads: int = 0,
                 acquired: tuple[str, str] | None = None) -> Path:
    """``acquired``: the dataacquisition element's (date, time) attributes, e.g. ("2020-05-12", "12:33:59")."""
    sig = rec.signals if seconds is None else rec.signals[:, : int(seconds * rec.fs)]
    q = quantise(sig, resolution_uv * 1e-3)
    n = q.shape[1]
    ET.register_namespace("", PHILIPS)

    def e(parent, tag, text=None, **attrs):
        el = ET.SubElement(parent, f"{{{PHILIPS}}}{tag}", {k: str(v) for k, v in attrs.items()})
        if text is not None:
            el.text = str(text)
        return el

    root = ET.Element(f"{{{PHILIPS}}}restingecgdata")
    doc = e(root, "documentinfo")
    e(doc, "documenttype", "PhilipsECG")
    e(doc, "documentversion", "1.04")
    pat = e(e(root, "patient"), "generalpatientdata")
    e(pat, "patientid", FAKE_PATIENT_ID)
    e(e(pat, "name"), "lastname", FAKE_PATIENT_NAME)
    e(pat, "dateofbirth", FAKE_BIRTH)
    acq_attrs = {"date": acquired[0], "time": acquired[1]} if acquired is not None else {}
    sc = e(e(root, "dataacquisition", **acq_attrs), "signalcharacteristics")
    e(sc, "samplingrate", f"{rec.fs:g}")
    e(sc, "resolution", f"{resolution_uv:g}")
    e(sc, "acquisitiontype", "STD-12")
    e(sc, "bitspersample", "16")
    e(sc, "signaloffset", "0")
    e(sc, "signalsigned", "true")
    e(sc, "numberchannelsvalid", str(len(rec.names) + extra_zero_leads))
    e(sc, "numberchannelsallocated", str(len(rec.names)))
    if xli:
        data = xli_encode(q, extra_zero_leads=extra_zero_leads)
    else:
        data = b"".join(r.astype("<i2").tobytes() for r in q)
    b64 = base64.b64encode(data).decode("ascii")
    pw = e(e(root, "waveforms"), "parsedwaveforms",
           durationperchannel=f"{1000.0 * n / rec.fs:g}", samplespersecond=f"{rec.fs:g}",
           numberofleads=len(rec.names), leadlabels=" ".join(rec.names),
           dataencoding="Base64", compressflag="True" if xli else "False",
           compressmethod="XLI" if xli else "")
    pw.text = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    ET.ElementTree(root).write(str(path), encoding="utf-8", xml_declaration=True)
    return path


def write_wfdb_header(path: Path) -> Path:
    path.write_text("rec 12 500 5000\n" + "".join(
        f"rec.dat 16 1000/mV 16 0 0 0 0 {n}\n" for n in MDC))
    return path


def external_entity_xml(root_open: str, root_close: str) -> str:
    """An XML file whose DTD declares an external entity pointing at a local secret and a URL."""
    return (
        '<?xml version="1.0"?>\n'
        '<!DOCTYPE r [\n'
        '  <!ENTITY secret SYSTEM "file:///etc/passwd">\n'
        '  <!ENTITY remote SYSTEM "http://127.0.0.1:9/never">\n'
        ']>\n'
        f"{root_open}&secret;&remote;{root_close}\n"
    )


# --- helpers shared by the four test modules -------------------------------------------------


def mutate(path: Path, pattern: str, repl: str, count: int = 0) -> Path:
    """Regex-edit a written text file; fails the test if the pattern is absent."""
    import re

    text = Path(path).read_text(encoding="latin-1")
    new, n = re.subn(pattern, repl, text, count=count, flags=re.S)
    assert n > 0, f"pattern {pattern!r} not in {path}"
    Path(path).write_text(new, encoding="latin-1")
    return path


def truncate(path: Path, fraction: float = 0.6) -> Path:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * fraction)])
    return path


def other_format_files(tmp_path: Path) -> dict[str, Path]:
    """One small file of every format here, plus WFDB headers (written and real)."""
    rec = load(REC_500_A)
    short = Rec(rec.signals[:, :1000], rec.fs, rec.names)
    d = tmp_path / "others"
    d.mkdir(exist_ok=True)
    return {
        "dicom": write_dicom(d / "a.dcm", short),
        "hl7_aecg": write_aecg(d / "a.xml", short),
        "ge_muse": write_muse(d / "m.xml", short),
        "philips_sierra": write_sierra(d / "s.xml", short),
        "wfdb_written": write_wfdb_header(d / "rec.hea"),
        "wfdb_real": SAMPLES / (REC_500_A + ".hea"),
        "wfdb_real_mat": SAMPLES / (REC_500_A + ".mat"),
    }


def assert_no_identifiers(metadata: dict) -> None:
    text = repr(metadata)
    for secret in (FAKE_PATIENT_NAME, FAKE_PATIENT_ID, FAKE_BIRTH, "DOE", "JANE"):
        assert secret not in text, f"patient identifier {secret!r} copied into metadata"
