"""GE MUSE resting ECG XML (root ``RestingECG``).

No maintained PyPI parser for MUSE XML exists, so this module reads it itself (XML parsed with
defusedxml: the usual ``<!DOCTYPE RestingECG SYSTEM "restecg.dtd">`` is allowed but never
fetched; entity declarations and external references are refused).

Read::

    RestingECG/Waveform          WaveformType "Rhythm" (chosen) or "Median"
      SampleBase [* 10**SampleExponent] -> fs
      LeadData                   LeadID, LeadAmplitudeUnitsPerBit (e.g. 4.88),
                                 LeadAmplitudeUnits (MICROVOLTS), LeadSampleCountTotal,
                                 WaveFormData = base64 of little-endian int16

MUSE stores only I, II and V1-V6; those leads are returned as stored and
``metadata["derive_limb_leads"]`` says III, aVR, aVL and aVF must be derived (preprocessing
does that). Patient demographics are never copied into metadata.

``Recording.gains``: 1 / LeadAmplitudeUnitsPerBit per lead, in digits per mV of
LeadAmplitudeUnits, sign kept. Zero units per bit is refused (MalformedFile naming the leads):
every sample would read as 0 and the cause would be lost in a "flat lead" refusal later.

``Recording.acquired_at``: TestDemographics AcquisitionDate (``MM-DD-YYYY``) and AcquisitionTime
(``HH:MM:SS``), naive (MUSE gives no zone). A malformed one gives None and the
``acquisition_time_unreadable`` warning.

Kept (issue 15), not switched to ecgdatakit 2.0.3: it agrees with ecgdatakit within 1e-9 mV,
with equal names, rate, gains and time, on the independent writer's files
(tests/formats/test_ecgdatakit_differential.py); 3.78 ms here vs 3.16 ms for ecgdatakit, a 0.6
ms difference not worth losing the checks for. Ours checks the sizes a file declares against the
reader limits and the memory budget (app/ecg/readers/_limits.py) before it decodes, which the
library does not do.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import numpy as np

from app.ecg.leads import LIMB_LEADS_FROM_I_II
from app.ecg.readers._common import (
    file_or_hinted_rate,
    gain_from_resolution,
    parse_number,
    refuse_unusable_gains,
    stack_leads,
)
from app.ecg.readers._dates import acquisition_time, us_date_time
from app.ecg.readers._limits import STANDARD_LEAD_COUNT, check_leads, check_samples
from app.ecg.readers._xml import XmlRootReader, child, children, parse_root, text_of
from app.ecg.readers.base import FormatReader, ReadHints
from app.ecg.recording import Recording, SignalWarning
from app.ecg.units import mv_factor
from app.errors import MalformedFile, UnsupportedSignal

FORMAT_LABEL = "GE MUSE XML"
# SampleBase is given in Hz with exponent 0 in every MUSE export seen; 10^6 is plenty of room.
_MAX_EXPONENT = 6


def _optional_number(el: Element, name: str, what: str) -> float | None:
    return parse_number(text_of(child(el, name)), FORMAT_LABEL, f"{what} {name}")


def _number(el: Element, name: str, what: str) -> float:
    v = _optional_number(el, name, what)
    if v is None:
        raise MalformedFile(f"{FORMAT_LABEL}: {what} has no {name}")
    return v


class GeMuseReader(XmlRootReader):
    name = "ge_muse"
    title = "GE MUSE resting ECG XML"
    root_element = "RestingECG"

    def read(self, path: Path, hints: ReadHints = ReadHints()) -> Recording:
        root = parse_root(path, FORMAT_LABEL, self.root_element)
        waveforms = children(root, "Waveform")
        if not waveforms:
            raise MalformedFile(f"{FORMAT_LABEL}: no Waveform element")
        types = [text_of(child(w, "WaveformType")) for w in waveforms]
        rhythm = [w for w, t in zip(waveforms, types, strict=True) if t.lower() == "rhythm"]
        warnings: list[SignalWarning] = []
        if rhythm:
            wf = rhythm[0]
        else:
            non_median = [w for w, t in zip(waveforms, types, strict=True) if t.lower() != "median"]
            wf = non_median[0] if non_median else waveforms[0]
            if not non_median:
                warnings.append(
                    SignalWarning("median_beats_only", "MUSE file holds only median beats")
                )
        wtype = text_of(child(wf, "WaveformType")) or "(unnamed)"
        what = f"{wtype} waveform"

        base = _optional_number(wf, "SampleBase", what)
        if base is not None:
            exponent = _optional_number(wf, "SampleExponent", what) or 0.0
            if not -_MAX_EXPONENT <= exponent <= _MAX_EXPONENT:
                raise UnsupportedSignal(
                    f"{FORMAT_LABEL}: {what} SampleExponent {exponent:g} is outside "
                    f"-{_MAX_EXPONENT}..{_MAX_EXPONENT}; the sampling rate would be "
                    f"SampleBase x 10^{exponent:g}",
                    details={"limit": "sample_exponent", "max": _MAX_EXPONENT},
                )
            base *= 10.0**exponent
        fs = file_or_hinted_rate(
            base, hints, f"{FORMAT_LABEL}: {what} has no SampleBase (sampling rate)"
        )
        if fs <= 0:
            raise UnsupportedSignal(f"{FORMAT_LABEL}: sampling rate {fs} is not positive")

        leads = children(wf, "LeadData")
        if not leads:
            raise MalformedFile(f"{FORMAT_LABEL}: {what} has no LeadData elements (no leads)")
        check_leads(len(leads), f"{FORMAT_LABEL}: {what}")
        names: list[str] = []
        rows: list[np.ndarray] = []
        lsb: list[float] = []
        gains: list[float] = []
        total = 0
        for i, ld in enumerate(leads):
            lead = text_of(child(ld, "LeadID")) or f"Lead {i + 1}"
            lwhat = f"lead {lead}"
            per_bit = _number(ld, "LeadAmplitudeUnitsPerBit", lwhat)
            units = text_of(child(ld, "LeadAmplitudeUnits")).upper()
            if not units:
                raise MalformedFile(f"{FORMAT_LABEL}: {lwhat} has no LeadAmplitudeUnits")
            factor = mv_factor(units)
            if factor is None:
                raise UnsupportedSignal(f"{FORMAT_LABEL}: {lwhat} has unknown units {units!r}")
            refuse_unusable_gains([per_bit], [lead], label=FORMAT_LABEL, field="LeadAmplitudeUnitsPerBit")
            data_text = text_of(child(ld, "WaveFormData"))
            if not data_text:
                raise MalformedFile(f"{FORMAT_LABEL}: {lwhat} has no WaveFormData")
            try:
                raw = base64.b64decode(re.sub(r"\s+", "", data_text), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise MalformedFile(
                    f"{FORMAT_LABEL}: {lwhat} WaveFormData is not valid base64 ({exc})"
                ) from None
            if len(raw) % 2:
                raise MalformedFile(
                    f"{FORMAT_LABEL}: {lwhat} WaveFormData has an odd byte count {len(raw)} "
                    "(expected int16 samples)"
                )
            samples = np.frombuffer(raw, dtype="<i2")
            check_samples(1, samples.size, f"{FORMAT_LABEL}: {lwhat} WaveFormData")
            total += samples.size
            check_samples(1, total // STANDARD_LEAD_COUNT, f"{FORMAT_LABEL}: {what} (all leads)")
            count = _optional_number(ld, "LeadSampleCountTotal", lwhat)
            if count is not None:
                if count < 0:
                    raise MalformedFile(f"{FORMAT_LABEL}: {lwhat} LeadSampleCountTotal is negative")
                check_samples(1, int(count), f"{FORMAT_LABEL}: {lwhat} LeadSampleCountTotal")
                count = int(count)
                if samples.size < count:
                    raise MalformedFile(
                        f"{FORMAT_LABEL}: {lwhat} WaveFormData is truncated: {samples.size} "
                        f"samples, LeadSampleCountTotal says {count}"
                    )
                samples = samples[:count]
            names.append(lead)
            rows.append(samples.astype(np.float64) * (per_bit * factor))
            lsb.append(abs(per_bit * factor))
            gains.append(gain_from_resolution(per_bit, factor))

        if len(set(names)) != len(names):
            raise MalformedFile(f"{FORMAT_LABEL}: duplicate LeadID in {names}")
        signals = stack_leads(rows, warnings)
        missing = [x for x in LIMB_LEADS_FROM_I_II if x not in names]
        metadata: dict[str, Any] = {"waveform_type": wtype, "lsb_mV": lsb}
        if missing:
            metadata["derive_limb_leads"] = (
                f"GE MUSE stores only {', '.join(names)}; limb leads {', '.join(missing)} "
                "must be derived from I and II"
            )
        test = child(root, "TestDemographics")
        day = text_of(child(test, "AcquisitionDate")) if test is not None else ""
        clock = text_of(child(test, "AcquisitionTime")) if test is not None else ""
        acquired_at, time_warnings = acquisition_time(
            [("AcquisitionDate/AcquisitionTime", lambda: us_date_time(day, clock))], FORMAT_LABEL)
        return Recording(
            signals=signals, fs=fs, lead_names=tuple(names),
            source_format=self.name, warnings=warnings + time_warnings, metadata=metadata, gains=tuple(gains),
            acquired_at=acquired_at,
        )


READER: FormatReader = GeMuseReader()
