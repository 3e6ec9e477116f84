"""DICOM ECG waveform reader (12-lead ECG and General ECG Waveform Storage).

Parsing is done by pydicom (file structure, Waveform Sequence, multiplex group sample
decoding via ``pydicom.waveforms.multiplex_array``); this module only chooses the multiplex
group, names the channels and converts each channel to millivolts::

    value = raw * ChannelSensitivity * ChannelSensitivityCorrectionFactor + ChannelBaseline

in the units of ChannelSensitivityUnitsSequence (UCUM ``uV``, ``mV``, ``V``, ``nV``), then to mV.

The rhythm group (MultiplexGroupLabel ``RHYTHM``, otherwise the longest group that is not a
median/representative beat) is chosen over median beats. Patient module attributes are never
copied into ``Recording.metadata``.

``Recording.gains``: 1 / (ChannelSensitivity x ChannelSensitivityCorrectionFactor), in digits
per mV of the sensitivity's units, sign kept (a negative sensitivity inverts the channel, and is
applied as written). A product of zero or one that is not finite is refused (MalformedFile
naming the channels): every sample would read as the baseline. A correction factor absent or
empty counts as 1; one written as 0 is that zero, not "absent". A channel without a sensitivity
(read with the caller's units hint) gets the gain that hint implies.

``Recording.acquired_at``: AcquisitionDateTime (DT, with its own UTC offset or else
TimezoneOffsetFromUTC), else AcquisitionDate + AcquisitionTime, else ContentDate + ContentTime
(DA + TM, in TimezoneOffsetFromUTC when present); naive without an offset. A malformed value
is skipped (the next one is tried) and, if none is usable, reported as the
``acquisition_time_unreadable`` warning; it never fails the read.

Kept (issue 15), not switched to ecgdatakit 2.0.3: it agrees with ecgdatakit within 1e-9 mV,
with equal names, rate, gains and time, on the independent writer's files
(tests/formats/test_ecgdatakit_differential.py); 4.51 ms here vs 10.24 ms. Ours checks the sizes
a file declares against the reader limits and the memory budget (app/ecg/readers/_limits.py)
before it decodes, which the library does not do.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.ecg.readers._common import gain_from_resolution, refuse_unusable_gains
from app.ecg.readers._dates import WARNING_CODE, acquisition_time, compact_datetime, dicom_date_time, utc_offset
from app.ecg.readers._limits import check_samples, inflated_size
from app.ecg.readers.base import FormatReader, ReadHints
from app.ecg.recording import Recording, SignalWarning
from app.ecg.units import mv_factor
from app.errors import InvalidInput, MalformedFile, UnsupportedSignal

ECG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "General ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.3": "Ambulatory ECG Waveform Storage",
}

# SCP-ECG lead codes (coding scheme SCPECG, code value "5.6.3-9-N")
_SCPECG_LEADS = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6", 9: "V7",
    10: "V2R", 11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R", 15: "V7R", 16: "X", 17: "Y", 18: "Z",
    61: "III", 62: "aVR", 63: "aVL", 64: "aVF",
}

_MEDIAN_WORDS = ("MEDIAN", "REPRESENTATIVE", "AVERAGE", "TEMPLATE")


def _lead_name(channel: Any, index: int) -> str:
    """Lead name from ChannelSourceSequence (CodeMeaning, then SCP-ECG code) or ChannelLabel.

    ``"Lead I"``, ``"Lead I (Einthoven)"`` and ``"Lead aVR, augmented voltage, right"`` become
    ``"I"`` and ``"aVR"``; other spellings are kept as the file has them.
    """
    src = channel.get("ChannelSourceSequence")
    if src:
        item = src[0]
        meaning = str(item.get("CodeMeaning", "") or "").strip()
        if meaning:
            name = re.sub(r"^lead\s+", "", meaning, flags=re.IGNORECASE)
            name = re.split(r"[,(]", name, maxsplit=1)[0].strip()
            if name:
                return name
        code = str(item.get("CodeValue", "") or "")
        m = re.fullmatch(r"5\.6\.3-9-(\d+)", code)
        if m and int(m.group(1)) in _SCPECG_LEADS:
            return _SCPECG_LEADS[int(m.group(1))]
    label = str(channel.get("ChannelLabel", "") or "").strip()
    if label:
        return label
    return f"Channel {index + 1}"


def _unit_factor(channel: Any, lead: str) -> float:
    seq = channel.get("ChannelSensitivityUnitsSequence")
    if not seq:
        raise MalformedFile(
            f"DICOM ECG channel {lead!r} has a ChannelSensitivity but no "
            "ChannelSensitivityUnitsSequence; cannot tell the units"
        )
    code = str(seq[0].get("CodeValue", "") or "").strip()
    # UCUM is case-sensitive ("MV" would be megavolt), so only an exact "MV" is refused
    factor = None if code == "MV" else mv_factor(code)
    if factor is None:
        meaning = str(seq[0].get("CodeMeaning", "") or "").lower()
        for word, f in (("microvolt", 1e-3), ("millivolt", 1.0), ("nanovolt", 1e-6), ("volt", 1e3)):
            if word in meaning:
                factor = f
                break
    if factor is None:
        raise UnsupportedSignal(
            f"DICOM ECG channel {lead!r} has unsupported sensitivity units {code!r}"
        )
    return factor


def _correction(channel: Any) -> float:
    """ChannelSensitivityCorrectionFactor; 1 when absent or empty (an explicit 0 stays 0)."""
    value = channel.get("ChannelSensitivityCorrectionFactor")
    return 1.0 if value is None or str(value).strip() == "" else float(value)


def _is_median(label: str) -> bool:
    up = label.upper()
    return any(w in up for w in _MEDIAN_WORDS)


def _choose_group(seq: Any) -> tuple[int, list[SignalWarning]]:
    infos = []
    for i, item in enumerate(seq):
        label = str(item.get("MultiplexGroupLabel", "") or "")
        try:
            n = int(item.get("NumberOfWaveformSamples", 0) or 0)
            fs = float(item.get("SamplingFrequency", 0) or 0)
        except (TypeError, ValueError):
            n, fs = 0, 0.0
        dur = n / fs if fs > 0 else 0.0
        infos.append((i, label, dur))
    rhythm = [i for i, label, _ in infos if label.strip().upper() == "RHYTHM"]
    if rhythm:
        return rhythm[0], []
    non_median = [x for x in infos if not _is_median(x[1])]
    if non_median:
        return max(non_median, key=lambda x: x[2])[0], []
    best = max(infos, key=lambda x: x[2])
    return best[0], [
        SignalWarning(
            "median_beats_only",
            f"DICOM file holds only median/representative beats (group {best[1]!r}); "
            "no rhythm waveform",
        )
    ]


_DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian


def _check_deflated(path: Path) -> None:
    """A deflated data set is inflated in chunks and counted before pydicom inflates it whole."""
    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(str(path))
        if str(meta.get("TransferSyntaxUID", "")) != _DEFLATED:
            return
        group_length = int(meta.get("FileMetaInformationGroupLength", 0) or 0)
    except Exception:
        return  # no readable meta: dcmread reports the problem
    if group_length <= 0:
        return
    try:
        with path.open("rb") as fh:
            fh.seek(132 + 12 + group_length)  # preamble + DICM, the group length element, the rest
            inflated_size(fh.read, "DICOM deflated data set", raw=True)
    except OSError as exc:
        raise MalformedFile(f"DICOM file cannot be read: {exc.strerror}") from None


class DicomEcgReader:
    name = "dicom"
    title = "DICOM ECG Waveform Storage (12-lead / General ECG)"
    extensions = (".dcm", ".dicom")

    def claims(self, path: Path, head: bytes) -> bool:
        return len(head) >= 132 and head[128:132] == b"DICM"

    def companions(self, path: Path) -> list[Path]:
        return []

    def read(self, path: Path, hints: ReadHints = ReadHints()) -> Recording:
        import pydicom
        from pydicom.errors import InvalidDicomError
        from pydicom.waveforms.numpy_handler import multiplex_array

        _check_deflated(Path(path))
        try:
            ds = pydicom.dcmread(str(path))
        except InvalidDicomError as exc:
            raise MalformedFile(f"not a valid DICOM file: {exc}") from None
        except Exception as exc:  # truncated / corrupt element stream
            raise MalformedFile(f"DICOM file cannot be parsed (truncated or corrupt?): {exc}") from None

        try:
            sop = str(ds.get("SOPClassUID", "") or "")
            if sop not in ECG_SOP_CLASSES:
                name = getattr(ds.get("SOPClassUID"), "name", "") or "unknown"
                raise MalformedFile(
                    f"DICOM file is not an ECG waveform: SOP class {sop or '(none)'} ({name}); "
                    f"expected one of {', '.join(ECG_SOP_CLASSES)}"
                )
            seq = ds.get("WaveformSequence")
            if not seq:
                raise MalformedFile("DICOM ECG has no WaveformSequence (no waveform data)")

            index, warnings = _choose_group(seq)
            item = seq[index]
            label = str(item.get("MultiplexGroupLabel", "") or "")
            fs_raw = item.get("SamplingFrequency")
            if fs_raw is None or str(fs_raw).strip() == "":
                raise MalformedFile(
                    f"DICOM ECG multiplex group {index} ({label!r}) has no SamplingFrequency"
                )
            fs = float(fs_raw)
            if not np.isfinite(fs) or fs <= 0:
                raise UnsupportedSignal(f"DICOM ECG sampling frequency {fs} is not positive")
            channels = item.get("ChannelDefinitionSequence")
            if not channels:
                raise MalformedFile(
                    f"DICOM ECG multiplex group {index} has no ChannelDefinitionSequence (no leads)"
                )
            if "WaveformData" not in item:
                raise MalformedFile(f"DICOM ECG multiplex group {index} has no WaveformData")
            n_ch = int(item.NumberOfWaveformChannels)
            n_samp = int(item.NumberOfWaveformSamples)
            bits = int(item.WaveformBitsAllocated)
            if n_ch != len(channels):
                raise MalformedFile(
                    f"DICOM ECG group {index}: NumberOfWaveformChannels={n_ch} but "
                    f"{len(channels)} channel definitions"
                )
            check_samples(n_ch, n_samp, f"DICOM ECG multiplex group {index}")
            if bits not in (8, 16, 32):
                raise MalformedFile(f"DICOM ECG WaveformBitsAllocated {bits} is not 8, 16 or 32")
            expected = n_ch * n_samp * (bits // 8)
            got = len(item.WaveformData)
            if got < expected:
                raise MalformedFile(
                    f"DICOM ECG WaveformData is truncated: {got} bytes, expected {expected} "
                    f"({n_ch} channels x {n_samp} samples x {bits} bits)"
                )
            try:
                raw = multiplex_array(ds, index, as_raw=True)
            except Exception as exc:
                raise MalformedFile(f"DICOM ECG waveform data cannot be decoded: {exc}") from None

            raw = np.asarray(raw)
            names = [_lead_name(ch, j) for j, ch in enumerate(channels)]
            steps = [_mv_per_digit(ch, lead, hints) for ch, lead in zip(channels, names, strict=True)]
            refuse_unusable_gains(
                [step for step, _ in steps], names, label="DICOM ECG",
                field="ChannelSensitivity x ChannelSensitivityCorrectionFactor",
            )
            signals = np.empty((n_ch, n_samp), dtype=np.float64)
            lsb_mv: list[float] = []
            padding = item.get("WaveformPaddingValue")
            pad_value = None
            if padding is not None:
                pad_arr = np.frombuffer(
                    bytes(padding), dtype=raw.dtype.newbyteorder("<")
                ) if isinstance(padding, (bytes, bytearray)) else np.asarray([padding])
                if pad_arr.size:
                    pad_value = pad_arr[0]
            for j, (ch, (step, factor)) in enumerate(zip(channels, steps, strict=True)):
                col = raw[:n_samp, j].astype(np.float64)
                if _has_sensitivity(ch):
                    base = float(ch.get("ChannelBaseline", 0.0) or 0.0)
                    val = (col * step + base) * factor
                else:
                    val = col * factor
                lsb_mv.append(abs(step * factor))
                if pad_value is not None:
                    val[raw[:n_samp, j] == pad_value] = np.nan
                signals[j] = val
        except InvalidInput:
            raise
        except Exception as exc:  # missing mandatory attribute, bad VR value, ...
            raise MalformedFile(f"DICOM ECG waveform is malformed: {exc}") from None

        if np.isnan(signals).any():
            bad = tuple(n for n, row in zip(names, signals, strict=True) if np.isnan(row).any())
            warnings.append(
                SignalWarning("nan_samples", "padding samples set to NaN", bad)
            )
        groups = [str(it.get("MultiplexGroupLabel", "") or "") for it in seq]
        metadata: dict[str, Any] = {
            "sop_class_uid": sop,
            "sop_class": ECG_SOP_CLASSES[sop],
            "multiplex_group": label,
            "multiplex_groups": groups,
            "bits_allocated": bits,
            "lsb_mV": lsb_mv,
        }
        manufacturer = ds.get("Manufacturer")
        if manufacturer:
            metadata["manufacturer"] = str(manufacturer)
        acquired_at, time_warnings = _acquired_at(ds)
        return Recording(
            signals=signals, fs=fs, lead_names=tuple(names),
            source_format=self.name, warnings=warnings + time_warnings, metadata=metadata,
            gains=tuple(gain_from_resolution(step, factor) for step, factor in steps),
            acquired_at=acquired_at,
        )


def _text(ds: Any, keyword: str) -> str | None:
    """An attribute's value as text (None when absent or empty); never raises."""
    try:
        value = ds.get(keyword)
    except Exception:  # a value pydicom cannot convert
        return None
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _acquired_at(ds: Any) -> tuple[datetime | None, list[SignalWarning]]:
    """The acquisition time and, when something in the file could not be read, a warning. A
    malformed TimezoneOffsetFromUTC leaves the times naive (the recorder's local time)."""
    zone = _text(ds, "TimezoneOffsetFromUTC")
    warnings: list[SignalWarning] = []
    try:
        utc_offset(zone)
    except ValueError:
        zone = None
        warnings.append(SignalWarning(WARNING_CODE, "DICOM ECG: TimezoneOffsetFromUTC is not a valid UTC offset; "
                                                    "the acquisition time is read without a zone"))
    acquired_at, more = acquisition_time([
        ("AcquisitionDateTime", lambda: compact_datetime(_text(ds, "AcquisitionDateTime"), zone)),
        ("AcquisitionDate/AcquisitionTime",
         lambda: dicom_date_time(_text(ds, "AcquisitionDate"), _text(ds, "AcquisitionTime"), zone)),
        ("ContentDate/ContentTime", lambda: dicom_date_time(_text(ds, "ContentDate"), _text(ds, "ContentTime"), zone)),
    ], "DICOM ECG")
    return acquired_at, warnings + more


def _has_sensitivity(channel: Any) -> bool:
    return "ChannelSensitivity" in channel and channel.ChannelSensitivity not in (None, "")


def _mv_per_digit(channel: Any, lead: str, hints: ReadHints) -> tuple[float, float]:
    """(sensitivity x correction in the sensitivity's units, mV per one of those units); for a
    channel without a sensitivity, (1, mV per unit of the caller's units hint)."""
    if _has_sensitivity(channel):
        return float(channel.ChannelSensitivity) * _correction(channel), _unit_factor(channel, lead)
    if hints.units is None:
        raise MalformedFile(
            f"DICOM ECG channel {lead!r} has no ChannelSensitivity; samples cannot be converted to millivolts"
        )
    from_units = mv_factor(hints.units)
    if from_units is None:
        raise UnsupportedSignal(f"unknown units hint {hints.units!r}")
    return 1.0, from_units


READER: FormatReader = DicomEcgReader()
