"""Philips Sierra ECG XML (root ``restingecgdata``, namespace http://www3.medical.philips.com).

XLI decompression (LZW with 10-bit codes, per-lead chunks, second-difference delta coding)
uses ``ecgdatakit.parsing.codecs.xli.xli_decode`` (ecgdatakit 2.0.3, Apache-2.0, a runtime
dependency), after the chunk headers are walked and counted here; until issue 15 it used
``sierraecg.xli.xli_decode`` (PyPI, MIT, sierra-ecg-tools), which returns the same integers
(tests/formats/test_xli_codecs.py) 4.5x slower (98 ms vs 22 ms for a 12-lead 10 s record).
Neither library's high-level reader is used: sierraecg's ``read_file`` applies the XLI lead
reconstruction to uncompressed data too (and fails on read-only buffers), so the XML is
read here with defusedxml and the lead reconstruction is done here, vectorised, for XLI
data only (as in the reference C# implementation)::

    III = II - I - III'            aVR = -aVR' - floor((I + II) / 2)
    aVL = floor((I - III) / 2) - aVL'    aVF = floor((II + III) / 2) - aVF'

(the C# reference truncates the halves toward zero, sierraecg floors them: they differ by at
most 1 LSB on those four leads.)

Read: dataacquisition/signalcharacteristics samplingrate, resolution (uV per LSB),
acquisitiontype, numberchannelsallocated; waveforms/parsedwaveforms with dataencoding
"Base64" (or "Plain" text), compressflag/compressmethod "XLI" or uncompressed int16 LE,
durationperchannel (ms), leadlabels. Patient data are never copied into metadata.

``Recording.gains``: 1 / resolution (one resolution for every lead), in digits per mV, sign
kept. A resolution of 0 is refused (MalformedFile naming every lead): every sample would read
as 0.

``Recording.acquired_at``: the ``dataacquisition`` element's ``date`` (``YYYY-MM-DD``) and
``time`` (``HH:MM:SS``) attributes, naive (the file gives no zone). A malformed one gives None
and the ``acquisition_time_unreadable`` warning.

Kept (issue 15), not switched to ecgdatakit 2.0.3: it agrees with ecgdatakit within 1e-9 mV,
with equal names, rate, gains and time, on the independent writer's plain and XLI files
(tests/formats/test_ecgdatakit_differential.py); plain 4.41 ms here vs 2.29 ms; XLI was 125.5 ms
vs 33.7 ms, nearly all in sierraecg's LZW decode, so only that step was switched to ecgdatakit's
XLI codec (same integers, see above; the reader now takes about 26 ms for a 12-lead 10 s XLI
record). Ours checks the sizes a file declares against the reader limits and the memory budget
(app/ecg/readers/_limits.py) before it decodes, which the library does not do, and its
numberofleads, duration and XLI chunk checks stay in front of the codec.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from xml.etree.ElementTree import Element

import numpy as np

from app.ecg.leads import STANDARD_LEADS
from app.ecg.readers._common import (
    file_or_hinted_rate,
    gain_from_resolution,
    parse_number,
    refuse_unusable_gains,
)
from app.ecg.readers._dates import acquisition_time, iso_date_time
from app.ecg.readers._limits import check_leads, check_samples, count_tokens
from app.ecg.readers._xml import XmlRootReader, child, local, parse_root, text_of
from app.ecg.readers.base import FormatReader, ReadHints
from app.ecg.recording import Recording
from app.ecg.units import to_millivolts_factor
from app.errors import MalformedFile, UnsupportedSignal

FORMAT_LABEL = "Philips Sierra XML"


def _find(el: Element, name: str) -> Element | None:
    for e in el.iter():
        if local(e.tag) == name:
            return e
    return None


def _num(el: Element | None, name: str) -> float | None:
    return parse_number(text_of(el), FORMAT_LABEL, name)


def _xli_decode(data: bytes, n_leads: int) -> list[np.ndarray]:
    try:
        from ecgdatakit.parsing.codecs.xli import xli_decode
    except ImportError:  # pragma: no cover - dependency declared in pyproject
        raise UnsupportedSignal(
            f"{FORMAT_LABEL}: XLI-compressed data needs the 'ecgdatakit' package, not installed"
        ) from None

    # walk the chunk headers first so a cut stream gets a clear message
    offset, chunk = 0, 0
    while offset < len(data):
        if offset + 8 > len(data):
            raise MalformedFile(f"{FORMAT_LABEL}: XLI data is truncated inside chunk header {chunk}")
        size = int.from_bytes(data[offset:offset + 4], "little", signed=True)
        if size <= 0 or offset + 8 + size > len(data):
            raise MalformedFile(
                f"{FORMAT_LABEL}: XLI data is truncated or corrupt: chunk {chunk} declares "
                f"{size} bytes, {len(data) - offset - 8} remain"
            )
        offset += 8 + size
        chunk += 1
        check_leads(chunk, f"{FORMAT_LABEL} XLI data")
    try:
        leads = xli_decode(data)
    except Exception as exc:  # corrupt chunk header, overflow in delta decoding, ...
        raise MalformedFile(f"{FORMAT_LABEL}: XLI-compressed waveform cannot be decoded: {exc}") from None
    return [np.asarray(x, dtype=np.int64) for x in leads]


def _reconstruct_limb(leads: list[np.ndarray]) -> None:
    """XLI stores III, aVR, aVL, aVF as residuals; rebuild them in place (int64, no overflow)."""
    i, ii = leads[0], leads[1]
    iii = ii - i - leads[2]
    leads[2] = iii
    leads[3] = -leads[3] - np.floor_divide(i + ii, 2)
    leads[4] = np.floor_divide(i - iii, 2) - leads[4]
    leads[5] = np.floor_divide(ii + iii, 2) - leads[5]


class PhilipsSierraReader(XmlRootReader):
    name = "philips_sierra"
    title = "Philips Sierra ECG XML (PageWriter/TraceMaster)"
    root_element = "restingecgdata"

    def read(self, path: Path, hints: ReadHints = ReadHints()) -> Recording:
        root = parse_root(path, FORMAT_LABEL, self.root_element)
        acq = child(root, "dataacquisition")
        sc = _find(acq, "signalcharacteristics") if acq is not None else None
        if sc is None:
            raise MalformedFile(f"{FORMAT_LABEL}: no dataacquisition/signalcharacteristics element")
        fs = file_or_hinted_rate(
            _num(child(sc, "samplingrate"), "samplingrate"),
            hints,
            f"{FORMAT_LABEL}: signalcharacteristics has no samplingrate",
        )
        if fs <= 0:
            raise UnsupportedSignal(f"{FORMAT_LABEL}: samplingrate {fs} is not positive")
        resolution_uv = _num(child(sc, "resolution"), "resolution")
        if resolution_uv is None:
            raise MalformedFile(f"{FORMAT_LABEL}: signalcharacteristics has no resolution (uV per LSB)")
        acq_type = text_of(child(sc, "acquisitiontype"))
        allocated = _num(child(sc, "numberchannelsallocated"), "numberchannelsallocated")
        valid = _num(child(sc, "numberchannelsvalid"), "numberchannelsvalid")

        pw = _find(root, "parsedwaveforms")
        if pw is None:
            raise MalformedFile(f"{FORMAT_LABEL}: no waveforms/parsedwaveforms element")
        labels_attr = (pw.get("leadlabels") or "").split()
        n_leads_attr = pw.get("numberofleads")
        try:
            n_leads = int(n_leads_attr) if n_leads_attr else None
        except ValueError:
            raise MalformedFile(f"{FORMAT_LABEL}: numberofleads {n_leads_attr!r} is not a number") from None
        if n_leads is None:
            n_leads = int(allocated or valid or len(labels_attr) or 0)
        if n_leads <= 0:
            raise MalformedFile(f"{FORMAT_LABEL}: number of leads unknown or zero")
        check_leads(n_leads, FORMAT_LABEL)
        if labels_attr:
            labels = labels_attr[:n_leads]
        elif acq_type in ("STD-12", "10-WIRE") and n_leads <= 12:
            labels = list(STANDARD_LEADS[:n_leads])
        else:
            labels = [f"Channel {k + 1}" for k in range(n_leads)]
        if len(labels) < n_leads:
            raise MalformedFile(
                f"{FORMAT_LABEL}: leadlabels names {len(labels)} leads, numberofleads is {n_leads}"
            )
        duration_ms = parse_number(
            (pw.get("durationperchannel") or "").strip(), FORMAT_LABEL, "durationperchannel"
        )
        if duration_ms is not None:
            if duration_ms < 0:
                raise MalformedFile(f"{FORMAT_LABEL}: durationperchannel {duration_ms:g} is negative")
            check_samples(n_leads, round(duration_ms * fs / 1000.0), f"{FORMAT_LABEL} durationperchannel")

        encoding = (pw.get("dataencoding") or "").strip()
        compress_method = (pw.get("compressmethod") or pw.get("compression") or "").strip()
        compress_flag = (pw.get("compressflag") or "").strip().lower()
        compressed = compress_flag in ("true", "1") or (
            compress_flag == "" and compress_method.upper() == "XLI"
        )
        text = pw.text or ""
        if not text.strip():
            raise MalformedFile(f"{FORMAT_LABEL}: parsedwaveforms is empty (no waveform data)")

        if encoding.lower() == "plain":
            if compressed:
                raise UnsupportedSignal(f"{FORMAT_LABEL}: compressed Plain-encoded data is not supported")
            check_samples(n_leads, count_tokens(text) // n_leads, f"{FORMAT_LABEL}: Plain waveform data")
            try:
                flat = np.array(text.split(), dtype=np.int64)
            except ValueError:
                raise MalformedFile(f"{FORMAT_LABEL}: Plain waveform data holds a non-integer") from None
            leads = _split(flat, n_leads, duration_ms, fs)
        elif encoding.lower() == "base64":
            try:
                data = base64.b64decode(re.sub(r"\s+", "", text), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise MalformedFile(f"{FORMAT_LABEL}: parsedwaveforms is not valid base64 ({exc})") from None
            if compressed:
                if compress_method.upper() != "XLI":
                    raise UnsupportedSignal(
                        f"{FORMAT_LABEL}: compression {compress_method!r} is not supported (only XLI)"
                    )
                leads = _xli_decode(data, n_leads)
                check_samples(len(leads), max((x.size for x in leads), default=0), f"{FORMAT_LABEL} XLI data")
                if len(leads) < n_leads:
                    raise MalformedFile(
                        f"{FORMAT_LABEL}: XLI data holds {len(leads)} leads, expected {n_leads}"
                    )
                leads = leads[:n_leads]
                if n_leads >= 6 and (
                    acq_type in ("STD-12", "10-WIRE") or tuple(labels[:6]) == STANDARD_LEADS[:6]
                ):
                    _reconstruct_limb(leads)
                if duration_ms:
                    want = round(duration_ms * fs / 1000.0)
                    short = min(x.size for x in leads)
                    if short < want:
                        raise MalformedFile(
                            f"{FORMAT_LABEL}: XLI data is truncated: {short} samples per lead, "
                            f"durationperchannel says {want}"
                        )
                    leads = [x[:want] for x in leads]
            else:
                if len(data) % 2:
                    raise MalformedFile(f"{FORMAT_LABEL}: waveform byte count {len(data)} is odd")
                leads = _split(np.frombuffer(data, dtype="<i2").astype(np.int64), n_leads, duration_ms, fs)
        else:
            raise UnsupportedSignal(f"{FORMAT_LABEL}: dataencoding {encoding!r} is not supported")

        n = min(x.size for x in leads)
        if n == 0:
            raise MalformedFile(f"{FORMAT_LABEL}: waveform data holds no samples")
        refuse_unusable_gains([resolution_uv] * n_leads, labels, label=FORMAT_LABEL, field="resolution")
        lsb_mv = resolution_uv * to_millivolts_factor("uV")
        signals = np.vstack([x[:n] for x in leads]).astype(np.float64) * lsb_mv
        metadata = {
            "acquisition_type": acq_type,
            "compression": "XLI" if compressed else "none",
            "lsb_mV": [lsb_mv] * n_leads,
        }
        doc = child(root, "documentinfo")
        if doc is not None:
            metadata["document_version"] = text_of(child(doc, "documentversion"))
        day, clock = (acq.get("date"), acq.get("time")) if acq is not None else (None, None)
        acquired_at, time_warnings = acquisition_time(
            [("dataacquisition date/time", lambda: iso_date_time(day, clock))], FORMAT_LABEL)
        return Recording(
            signals=signals, fs=fs, lead_names=tuple(labels),
            source_format=self.name, warnings=time_warnings, metadata=metadata,
            gains=(gain_from_resolution(resolution_uv, to_millivolts_factor("uV")),) * n_leads,
            acquired_at=acquired_at,
        )


def _split(flat: np.ndarray, n_leads: int, duration_ms: float | None, fs: float) -> list[np.ndarray]:
    """Uncompressed data: lead after lead, each ``duration * fs`` samples."""
    if duration_ms:
        per = round(duration_ms * fs / 1000.0)
    else:
        per = flat.size // n_leads
    if per <= 0 or flat.size < per * n_leads:
        raise MalformedFile(
            f"{FORMAT_LABEL}: waveform data is truncated: {flat.size} samples, expected "
            f"{n_leads} leads x {per}"
        )
    return [flat[k * per:(k + 1) * per] for k in range(n_leads)]


READER: FormatReader = PhilipsSierraReader()
