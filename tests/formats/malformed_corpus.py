"""A corpus of malformed, hostile and extreme files for every format, built on demand.

Each case writes its file(s) into a folder and says what the service must answer: an
error class (and the HTTP status it maps to) with a phrase the message must contain, or a
successful read carrying a given warning. The files are made with the formats' own tooling
(np.save, h5py, scipy.io, zlib, pyedflib, pydicom, xml) or by hand from the format
descriptions, starting from a real record of tests/data/ecg; never with the readers.

The "bombs" declare or inflate to far more than the largest accepted recording while being
small on disk; ``BOMBS`` names them for the memory checks.
"""

from __future__ import annotations

import base64
import functools
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.ecg.readers.base import ReadHints
from app.errors import InvalidInput, MalformedFile, UnsupportedFormat, UnsupportedSignal, UploadTooLarge

ECG_DIR = Path(__file__).resolve().parents[1] / "data" / "ecg"
STANDARD = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Path]  # writes the case into a folder; returns the path to read
    error: type[InvalidInput] | None  # None: the read succeeds
    status: int | None = None  # HTTP status of the error through POST /diagnose
    phrase: str = ""  # in the error message, or the warning code of a successful read
    hints: ReadHints = field(default_factory=ReadHints)
    upload_name: str = ""  # the name to upload it under (default: the file's name)


@functools.lru_cache(maxsize=1)
def real_signal() -> tuple[np.ndarray, float]:
    """(12, 5000) mV and 500 Hz of the real record E07500."""
    import wfdb

    rec = wfdb.rdrecord(str(ECG_DIR / "E07500"))
    sig = np.ascontiguousarray(rec.p_signal.T, dtype=np.float64)
    sig.setflags(write=False)
    return sig, float(rec.fs)


def _zeros_deflated(prefix: bytes, n_zero_bytes: int, *, raw: bool = False) -> bytes:
    """zlib (or raw deflate) of ``prefix`` + ``n_zero_bytes`` zeros, made in 16 MB steps."""
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    out = [comp.compress(prefix)]
    block = bytes(16 << 20)
    left = n_zero_bytes
    while left > 0:
        out.append(comp.compress(block[: min(left, len(block))]))
        left -= len(block)
    out.append(comp.flush())
    return b"".join(out)


BOMB_BYTES = 600 << 20  # past the 576 MB (549 MiB) decompression limit


# --- CSV ---------------------------------------------------------------------------------------


def _csv_text(rows: int = 5000) -> str:
    sig, _ = real_signal()
    lines = [",".join(STANDARD)]
    lines.extend(",".join(f"{v:.4f}" for v in sig[:, i]) for i in range(rows))
    return "\n".join(lines) + "\n"


def _csv(name: str, text: str | bytes) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        p = d / name
        p.write_bytes(text.encode() if isinstance(text, str) else text)
        return p
    return build


def _csv_padded_cell(d: Path) -> Path:
    """475 KB of CSV with one cell padded to 400 KB (a fixed-width parse would take GBs)."""
    lines = _csv_text(900).splitlines()
    first = lines[5].split(",")
    first[3] = " " * 400_000 + first[3]
    lines[5] = ",".join(first)
    p = d / "padded.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def _csv_cases() -> list[Case]:
    hz = ReadHints(sampling_rate=500)
    good = _csv_text()
    lines = good.splitlines()
    cell_1mb = [*lines[:3], lines[3].replace(",", "," + "1" * (1 << 20), 1), *lines[4:]]
    nan_lines = lines[:]
    nan_lines[10] = ",".join(["nan", "inf", "-inf", *nan_lines[10].split(",")[3:]])
    return [
        Case("csv_padded_cell", _csv_padded_cell, MalformedFile, 422, "characters", hz),
        Case("csv_1mb_cell", _csv("cell.csv", "\n".join(cell_1mb)), MalformedFile, 422, "characters", hz),
        Case("csv_2mb_header", _csv("hdr.csv", ",".join(STANDARD) + "," + "x" * (2 << 20) + "\n1,2\n"),
             MalformedFile, 422, "characters", hz),
        Case("csv_10000_leads", _csv("wide.csv", ",".join(f"V{i}" for i in range(10_000)) + "\n"
                                     + ",".join("0" for _ in range(10_000)) + "\n"),
             MalformedFile, 422, "characters", hz),
        Case("csv_1000_leads", _csv("wide1k.csv", ",".join(f"V{i}" for i in range(1000)) + "\n"
                                    + ",".join("0" for _ in range(1000)) + "\n"),
             UploadTooLarge, 413, "at most 64", hz),
        Case("csv_truncated_row", _csv("cut.csv", good[: len(good) // 2].rsplit(",", 3)[0]),
             MalformedFile, 422, "fields", hz),
        Case("csv_nan_inf", _csv("nan.csv", "\n".join(nan_lines)), None, None, "nan_samples", hz),
        Case("csv_non_utf8", _csv("latin.csv", good.replace("V1", "V1 (\u00b5V)", 1).encode("latin-1")),
             None, None, "", hz),
        Case("csv_not_numbers", _csv("words.csv", "\n".join([*lines[:5], "I,II" + ",ab" * 10, *lines[6:]])),
             MalformedFile, 422, "not a number", hz),
    ]


# --- NPY -----------------------------------------------------------------------------------------


def _npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _npy(name: str, make: Callable[[], bytes]) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        p = d / name
        p.write_bytes(make())
        return p
    return build


def _npy_array(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _npy_cases() -> list[Case]:
    hz = ReadHints(sampling_rate=500)
    sig, _ = real_signal()
    nan_sig = sig.copy()
    nan_sig[2, 100:200] = np.nan
    nan_sig[5, 7] = np.inf
    return [
        Case("npy_1e15_samples", _npy("huge.npy", lambda: _npy_header((12, 10**15)) + bytes(64)),
             UploadTooLarge, 413, "samples per signal", hz),
        Case("npy_10000_leads", _npy("leads.npy", lambda: _npy_array(np.zeros((10_000, 20)))),
             InvalidInput, 400, "not 12 leads", hz),
        Case("npy_10000_leads_declared", _npy("leads2.npy", lambda: _npy_header((10_000, 5000)) + bytes(64)),
             UploadTooLarge, 413, "at most 64", hz),
        Case("npy_0_leads", _npy("empty.npy", lambda: _npy_array(np.zeros((0, 5000)))),
             InvalidInput, 400, "not 12 leads", hz),
        Case("npy_truncated", _npy("cut.npy", lambda: _npy_array(sig)[:50_000]), MalformedFile, 422,
             "truncated", hz),
        Case("npy_object", _npy("obj.npy", lambda: _npy_array(np.array([{"a": 1}], dtype=object))),
             MalformedFile, 422, "pickled", hz),
        Case("npy_nan_inf", _npy("nan.npy", lambda: _npy_array(nan_sig)), None, None, "nan_samples", hz),
        Case("npy_3d", _npy("cube.npy", lambda: _npy_array(np.zeros((2, 12, 100)))), MalformedFile, 422,
             "expected 2-D", hz),
    ]


# --- SPH HDF5 ------------------------------------------------------------------------------------


def _h5(name: str, shape: tuple[int, int], dtype: str = "f2", **kwargs: object) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        import h5py

        p = d / name
        with h5py.File(p, "w") as f:
            f.create_dataset("ecg", shape=shape, dtype=dtype, **kwargs)
        return p
    return build


def _h5_cases() -> list[Case]:
    return [
        # a dataset declared but never written: 1-2 KB on disk, h5py would allocate it all
        Case("h5_sparse", _h5("sparse.h5", (12, 10**8), "f8"), UploadTooLarge, 413, "samples per signal"),
        Case("h5_compressed_zeros", _h5("zeros.h5", (12, 20_000_000), "f2", chunks=(12, 1 << 16),
                                        compression="gzip", fillvalue=0),
             UploadTooLarge, 413, "samples per signal"),
        Case("h5_no_samples", _h5("empty.h5", (12, 0)), MalformedFile, 422, "no samples"),
    ]


# --- CPSC MATLAB -----------------------------------------------------------------------------------


def _mat_small_element() -> tuple[bytes, bytes]:
    """(128-byte MAT 5 header, uncompressed top-level element) of a real CPSC-like struct."""
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, {"ECG": {"sex": "F", "age": 60, "data": np.zeros((12, 10))}},
                     do_compression=False)
    raw = buf.getvalue()
    return raw[:128], raw[128:]


def _mat_bomb(d: Path) -> Path:
    """A valid struct ECG in a miCOMPRESSED element that goes on inflating to 600 MiB of zeros."""
    header, element = _mat_small_element()
    comp = _zeros_deflated(element, BOMB_BYTES)
    p = d / "bomb.mat"
    p.write_bytes(header + struct.pack("<II", 15, len(comp)) + comp)
    return p


def _mat_truncated(d: Path) -> Path:
    import scipy.io

    sig, _ = real_signal()
    p = d / "cut.mat"
    scipy.io.savemat(p, {"ECG": {"sex": "F", "age": 60, "data": sig}})
    p.write_bytes(p.read_bytes()[:40_000])
    return p


def _mat_cases() -> list[Case]:
    return [
        Case("mat_compression_bomb", _mat_bomb, UploadTooLarge, 413, "decompresses to more than"),
        Case("mat_truncated", _mat_truncated, MalformedFile, 422, "cannot read MATLAB"),
    ]


# --- XML: GE MUSE, Philips Sierra, HL7 aECG --------------------------------------------------------


def _muse(d: Path, *, exponent: str = "0", leads: int = 8, name: str = "muse.xml") -> Path:
    sig, fs = real_signal()
    parts = ['<?xml version="1.0"?>\n<RestingECG><Waveform><WaveformType>Rhythm</WaveformType>',
             f"<SampleBase>{fs:g}</SampleBase><SampleExponent>{exponent}</SampleExponent>"]
    for k in range(leads):
        q = np.round(sig[k % 8] / 4.88e-3).astype("<i2")
        parts.append(
            f"<LeadData><LeadID>{'L' + str(k) if leads > 8 else ('I', 'II', 'V1', 'V2', 'V3', 'V4', 'V5', 'V6')[k]}"
            f"</LeadID><LeadAmplitudeUnitsPerBit>4.88</LeadAmplitudeUnitsPerBit>"
            f"<LeadAmplitudeUnits>MICROVOLTS</LeadAmplitudeUnits>"
            f"<LeadSampleCountTotal>{q.size}</LeadSampleCountTotal>"
            f"<WaveFormData>{base64.b64encode(q.tobytes()).decode()}</WaveFormData></LeadData>"
        )
    parts.append("</Waveform></RestingECG>\n")
    p = d / name
    p.write_text("".join(parts))
    return p


def _entity_bomb(root: str) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        ents = ['<!ENTITY a0 "lol">'] + [f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10)]
        p = d / "bomb.xml"
        p.write_text(f'<?xml version="1.0"?>\n<!DOCTYPE {root} [\n' + "\n".join(ents)
                     + f"\n]>\n<{root}>&a9;</{root}>\n")
        return p
    return build


def _external_entity(root: str) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        p = d / "xxe.xml"
        p.write_text(f'<?xml version="1.0"?>\n<!DOCTYPE {root} [\n'
                     '  <!ENTITY secret SYSTEM "file:///etc/passwd">\n]>\n'
                     f"<{root}>&secret;</{root}>\n")
        return p
    return build


PHILIPS_NS = "http://www3.medical.philips.com"


def _sierra(d: Path, *, n_leads: str = "12", duration_ms: str = "10000", data: bytes | None = None) -> Path:
    sig, fs = real_signal()
    if data is None:
        data = b"".join(np.round(r / 5e-3).astype("<i2").tobytes() for r in sig)
    p = d / "sierra.xml"
    p.write_text(
        f'<?xml version="1.0"?>\n<restingecgdata xmlns="{PHILIPS_NS}"><dataacquisition>'
        f"<signalcharacteristics><samplingrate>{fs:g}</samplingrate><resolution>5</resolution>"
        "<acquisitiontype>STD-12</acquisitiontype></signalcharacteristics></dataacquisition>"
        f'<waveforms><parsedwaveforms durationperchannel="{duration_ms}" numberofleads="{n_leads}" '
        f'leadlabels="{" ".join(STANDARD)}" dataencoding="Base64" compressflag="False">'
        f"{base64.b64encode(data).decode()}</parsedwaveforms></waveforms></restingecgdata>\n"
    )
    return p


def _aecg(d: Path, *, digits_for: Callable[[np.ndarray], str] | None = None) -> Path:
    sig, fs = real_signal()
    seqs = ['<component><sequence><code code="TIME_ABSOLUTE"/><value xsi:type="GLIST_TS">'
            f'<head value="20200101"/><increment value="{1 / fs:g}" unit="s"/></value></sequence></component>']
    for name, row in zip(STANDARD, sig, strict=True):
        q = np.round(row / 2.5e-3).astype(int)
        digits = digits_for(q) if digits_for else " ".join(map(str, q))
        seqs.append(f'<component><sequence><code code="MDC_ECG_LEAD_{name.upper()}"/>'
                    '<value xsi:type="SLIST_PQ"><origin value="0" unit="uV"/><scale value="2.5" unit="uV"/>'
                    f"<digits>{digits}</digits></value></sequence></component>")
    p = d / "aecg.xml"
    p.write_text(
        '<?xml version="1.0"?>\n<AnnotatedECG xmlns="urn:hl7-org:v3" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><component><series>'
        '<code code="RHYTHM"/><component><sequenceSet>' + "".join(seqs)
        + "</sequenceSet></component></series></component></AnnotatedECG>\n"
    )
    return p


def _xml_cases() -> list[Case]:
    cases = [
        Case("muse_exponent_400", lambda d: _muse(d, exponent="400"), UnsupportedSignal, 422, "SampleExponent"),
        Case("muse_ok", _muse, None, None, ""),
        Case("muse_10000_leads", lambda d: _muse(d, leads=100), UploadTooLarge, 413, "at most 64"),
        Case("muse_truncated", lambda d: _cut(_muse(d), 0.5), MalformedFile, 422, "not well-formed"),
        Case("sierra_3e7_leads", lambda d: _sierra(d, n_leads="30000000"), UploadTooLarge, 413, "at most 64"),
        Case("sierra_hour_declared", lambda d: _sierra(d, duration_ms="3600000000"), UploadTooLarge, 413,
             "samples per signal"),
        Case("sierra_truncated_data", lambda d: _sierra(d, data=bytes(1000)), MalformedFile, 422, "truncated"),
        Case("aecg_not_numbers", lambda d: _aecg(d, digits_for=lambda q: "1 2 x 4"), MalformedFile, 422,
             "non-number"),
        Case("aecg_ok", _aecg, None, None, ""),
    ]
    for fmt, root in (("muse", "RestingECG"), ("sierra", "restingecgdata"), ("aecg", "AnnotatedECG")):
        cases.append(Case(f"{fmt}_entity_bomb", _entity_bomb(root), MalformedFile, 422, "declares entities"))
        cases.append(Case(f"{fmt}_external_entity", _external_entity(root), MalformedFile, 422,
                          "nothing was fetched"))
    return cases


def _cut(p: Path, fraction: float) -> Path:
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * fraction)])
    return p


# --- EDF -------------------------------------------------------------------------------------------


def _edf(d: Path) -> Path:
    import pyedflib

    sig, fs = real_signal()
    p = d / "rec.edf"
    w = pyedflib.EdfWriter(str(p), 12, file_type=pyedflib.FILETYPE_EDFPLUS)
    try:
        w.setSignalHeaders([{"label": f"ECG {n}", "dimension": "uV", "sample_frequency": fs,
                             "physical_max": 32767, "physical_min": -32768,
                             "digital_max": 32767, "digital_min": -32768} for n in STANDARD])
        w.writeSamples([np.clip(r * 1000, -32768, 32767) for r in sig])
    finally:
        w.close()
    return p


def _edf_declaring(d: Path, n_records: int) -> Path:
    p = _edf(d)
    data = bytearray(p.read_bytes())
    data[236:244] = f"{n_records:<8d}".encode()
    p.write_bytes(bytes(data))
    return p


def _edf_cases() -> list[Case]:
    return [
        Case("edf_declares_10_days", lambda d: _edf_declaring(d, 99_999_999), UploadTooLarge, 413,
             "samples per signal"),
        Case("edf_truncated", lambda d: _cut(_edf(d), 0.5), MalformedFile, 422, "truncated"),
    ]


# --- WFDB ------------------------------------------------------------------------------------------


def _wfdb(d: Path, record_line: str | None = None, signal_lines: list[str] | None = None,
          cut: float | None = None) -> Path:
    import shutil

    header = (ECG_DIR / "E07500.hea").read_text().splitlines()
    shutil.copy(ECG_DIR / "E07500.mat", d / "E07500.mat")
    if record_line is not None:
        header[0] = record_line
    if signal_lines is not None:
        header = [header[0], *signal_lines]
    p = d / "E07500.hea"
    p.write_text("\n".join(header) + "\n")
    if cut is not None:
        _cut(d / "E07500.mat", cut)
    return p


def _wfdb_cases() -> list[Case]:
    sig_line = "E07500.mat 16x1+24 1000.0(0)/mV 16 0 0 0 0 I"
    return [
        # the signal file is small: refused as truncated before the length limit is reached
        Case("wfdb_hour_declared", lambda d: _wfdb(d, "E07500 12 500 1800000000"), MalformedFile, 422,
             "truncated"),
        Case("wfdb_10000_signals", lambda d: _wfdb(d, "E07500 10000 500 5000", [sig_line] * 10_000),
             MalformedFile, 422, "1..256 allowed"),
        Case("wfdb_100_signals", lambda d: _wfdb(d, "E07500 100 500 50", [sig_line] * 100),
             UploadTooLarge, 413, "at most 64"),
        Case("wfdb_truncated", lambda d: _wfdb(d, cut=0.5), MalformedFile, 422, "truncated"),
        Case("wfdb_record_name_with_extension", lambda d: _wfdb(d, "E07500.mat 12 500 5000"), None, None, ""),
    ]


# --- DICOM -----------------------------------------------------------------------------------------


def _dicom_dataset() -> object:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    sig, fs = real_signal()
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.9.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "ECG"
    group = Dataset()
    group.MultiplexGroupLabel = "RHYTHM"
    group.SamplingFrequency = f"{fs:g}"
    group.NumberOfWaveformChannels = 12
    group.NumberOfWaveformSamples = sig.shape[1]
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    channels = []
    for name in STANDARD:
        ch = Dataset()
        ch.ChannelLabel = name
        ch.ChannelSensitivity = "2.5"
        ch.ChannelSensitivityCorrectionFactor = "1"
        ch.ChannelBaseline = "0"
        unit = Dataset()
        unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = "uV", "UCUM", "microvolt"
        ch.ChannelSensitivityUnitsSequence = Sequence([unit])
        ch.WaveformBitsStored = 16
        channels.append(ch)
    group.ChannelDefinitionSequence = Sequence(channels)
    group.WaveformData = np.round(sig.T / 2.5e-3).astype("<i2").tobytes()
    ds.WaveformSequence = Sequence([group])
    return ds


def _dicom(d: Path, name: str = "ecg.dcm") -> Path:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = _dicom_dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID  # type: ignore[attr-defined]
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID  # type: ignore[attr-defined]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta  # type: ignore[attr-defined]
    p = d / name
    ds.save_as(p, enforce_file_format=True)  # type: ignore[attr-defined]
    return p


def _dicom_deflate_bomb(d: Path) -> Path:
    """Deflated Explicit VR LE: the data set, then a private OB element of 600 MiB of zeros."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    ds = _dicom_dataset()
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)  # type: ignore[arg-type]
    big = struct.pack("<HH2sHI", 0x6001, 0x1010, b"OB", 0, BOMB_BYTES)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID  # type: ignore[attr-defined]
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID  # type: ignore[attr-defined]
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    head = DicomBytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    p = d / "bomb.dcm"
    p.write_bytes(head.getvalue() + _zeros_deflated(body.getvalue() + big, BOMB_BYTES, raw=True))
    return p


def _dicom_declaring(d: Path) -> Path:
    p = _dicom(d)
    data = p.read_bytes()
    # NumberOfWaveformSamples (003A,0010) UL: the 4-byte value after the 8-byte explicit-VR tag
    tag = struct.pack("<HH2sH", 0x003A, 0x0010, b"UL", 4)
    i = data.index(tag) + len(tag)
    p.write_bytes(data[:i] + struct.pack("<I", 4_000_000_000) + data[i + 4:])
    return p


def _dicom_cases() -> list[Case]:
    return [
        Case("dicom_deflate_bomb", _dicom_deflate_bomb, UploadTooLarge, 413, "decompresses to more than"),
        Case("dicom_declares_4e9_samples", _dicom_declaring, UploadTooLarge, 413, "samples per signal"),
        Case("dicom_truncated", lambda d: _cut(_dicom(d), 0.5), MalformedFile, 422, ""),
        Case("dicom_ok", _dicom, None, None, ""),
    ]


def all_cases() -> list[Case]:
    return (_csv_cases() + _npy_cases() + _h5_cases() + _mat_cases() + _xml_cases()
            + _edf_cases() + _wfdb_cases() + _dicom_cases())


CASES = {case.name: case for case in all_cases()}
# small files that declare or inflate to gigabytes: read in a subprocess with peak memory measured
BOMBS = ("csv_padded_cell", "csv_1mb_cell", "npy_1e15_samples", "h5_sparse", "h5_compressed_zeros",
         "mat_compression_bomb", "sierra_3e7_leads", "dicom_deflate_bomb", "dicom_declares_4e9_samples",
         "wfdb_hour_declared", "edf_declares_10_days")
__all__ = ["BOMBS", "CASES", "Case", "UnsupportedFormat"]
