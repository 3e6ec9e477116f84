"""HL7 v3 annotated ECG (FDA aECG XML, namespace ``urn:hl7-org:v3``).

No maintained Python parser for aECG exists on PyPI, so this module walks the XML itself
(parsed with defusedxml: DTDs allowed, entity declarations and external references refused,
nothing is fetched).

Structure read::

    AnnotatedECG/component/series            code RHYTHM (preferred) - never derivation/derivedSeries
      component/sequenceSet/component/sequence
        code TIME_ABSOLUTE | TIME_RELATIVE    value GLIST_TS / GLIST_PQ: increment (s, ms, us) -> fs
        code MDC_ECG_LEAD_*                   value SLIST_PQ: origin, scale (uV, mV, ...), digits

physical value = origin + scale * digit, converted to mV. MDC lead codes become standard
names ("MDC_ECG_LEAD_AVR" -> "aVR"); codes outside the 12 standard leads keep their suffix.
Subject demographics are never copied into metadata.

``Recording.gains``: 1 / scale per lead, in digits per mV of the scale's unit, sign kept (a
negative scale inverts the lead as written). A scale of 0 is refused (MalformedFile naming the
leads): every sample would read as the origin. (A non-finite scale is already refused where
the number is parsed.)

``Recording.acquired_at``: the chosen series' ``effectiveTime/low`` (else the AnnotatedECG's),
an HL7 v3 TS (``YYYYMMDDHHMMSS.UUUU[+|-ZZzz]``): timezone-aware when it carries a zone, naive
otherwise. A malformed one gives None and the ``acquisition_time_unreadable`` warning.

Kept (issue 15), not switched to ecgdatakit 2.0.3: it agrees with ecgdatakit within 1e-9 mV,
with equal names, rate and gains, on the independent writer's files (the acquisition time
differs only without effectiveTime) (tests/formats/test_ecgdatakit_differential.py); 16.06 ms
here vs 20.05 ms. Ours checks the sizes a file declares against the reader limits and the memory
budget (app/ecg/readers/_limits.py) before it decodes, which the library does not do.
"""

from __future__ import annotations

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
    stack_leads,
)
from app.ecg.readers._dates import acquisition_time, compact_datetime
from app.ecg.readers._limits import STANDARD_LEAD_COUNT, check_leads, check_samples, count_tokens
from app.ecg.readers._xml import XmlRootReader, child, children, parse_root, text_of
from app.ecg.readers.base import FormatReader, ReadHints
from app.ecg.recording import Recording, SignalWarning
from app.ecg.units import mv_factor
from app.errors import MalformedFile, UnsupportedSignal

FORMAT_LABEL = "HL7 aECG"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"

_TIME_TO_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
_MDC_STANDARD = {lead.upper(): lead for lead in STANDARD_LEADS}


def _code(el: Element) -> str:
    c = child(el, "code")
    return (c.get("code") or "").strip() if c is not None else ""


def _pq(el: Element | None, what: str) -> tuple[float, str]:
    v = parse_number(el.get("value") if el is not None else None, FORMAT_LABEL, f"{what} value")
    if el is None or v is None:
        raise MalformedFile(f"{FORMAT_LABEL}: {what} has no value")
    return v, (el.get("unit") or "").strip()


def _effective_low(el: Element) -> str | None:
    """``effectiveTime/low/@value`` (or ``effectiveTime/@value``) of ``el``; None without one."""
    effective = child(el, "effectiveTime")
    if effective is None:
        return None
    low = child(effective, "low")
    value = low.get("value") if low is not None else effective.get("value")
    return value.strip() if value and value.strip() else None


def _lead_name(code: str) -> str:
    suffix = code[len("MDC_ECG_LEAD_"):]
    return _MDC_STANDARD.get(suffix.upper(), suffix)


def _series_candidates(root: Element) -> list[Element]:
    """Top-level series (AnnotatedECG/component/series); derivedSeries are never included."""
    out = []
    for comp in children(root, "component"):
        out.extend(children(comp, "series"))
    return out


def _sequence_sets(series: Element) -> list[Element]:
    out = []
    for comp in children(series, "component"):
        out.extend(children(comp, "sequenceSet"))
    return out


def _sequences(seqset: Element) -> list[Element]:
    out = []
    for comp in children(seqset, "component"):
        out.extend(children(comp, "sequence"))
    return out


class HL7AecgReader(XmlRootReader):
    name = "hl7_aecg"
    title = "HL7 aECG (FDA annotated ECG XML)"
    root_element = "AnnotatedECG"

    def read(self, path: Path, hints: ReadHints = ReadHints()) -> Recording:
        root = parse_root(path, FORMAT_LABEL, self.root_element)
        series = _series_candidates(root)
        if not series:
            raise MalformedFile(f"{FORMAT_LABEL}: no component/series element (no waveforms)")
        rhythm = [s for s in series if _code(s).upper() == "RHYTHM"]
        warnings: list[SignalWarning] = []
        chosen = rhythm[0] if rhythm else None
        if chosen is None:
            non_median = [s for s in series if "BEAT" not in _code(s).upper()]
            chosen = non_median[0] if non_median else series[0]
            if not non_median:
                warnings.append(
                    SignalWarning("median_beats_only", "aECG holds only representative beats")
                )

        seqsets = [ss for ss in _sequence_sets(chosen) if _sequences(ss)]
        if not seqsets:
            raise MalformedFile(f"{FORMAT_LABEL}: series {_code(chosen)!r} has no sequenceSet")
        seqset = seqsets[0]

        fs: float | None = None
        names: list[str] = []
        rows: list[np.ndarray] = []
        lsb: list[float] = []
        gains: list[float] = []
        sequences = _sequences(seqset)
        check_leads(len(sequences) - 1, f"{FORMAT_LABEL} sequenceSet")
        total = 0
        for seq in sequences:
            code = _code(seq)
            value = child(seq, "value")
            if code.startswith("TIME_"):
                if value is None:
                    raise MalformedFile(f"{FORMAT_LABEL}: time sequence {code} has no value")
                inc, unit = _pq(child(value, "increment"), f"time sequence {code} increment")
                factor = _TIME_TO_S.get(unit.lower()) if unit else None
                if factor is None:
                    raise UnsupportedSignal(
                        f"{FORMAT_LABEL}: time increment unit {unit!r} is not s, ms or us"
                    )
                if inc <= 0:
                    raise UnsupportedSignal(f"{FORMAT_LABEL}: time increment {inc} is not positive")
                fs = 1.0 / (inc * factor)
            elif code.startswith("MDC_ECG_LEAD_"):
                lead = _lead_name(code)
                if value is None:
                    raise MalformedFile(f"{FORMAT_LABEL}: lead {lead} has no value")
                vtype = value.get(XSI_TYPE, "")
                if vtype and vtype.split(":")[-1] != "SLIST_PQ":
                    raise UnsupportedSignal(
                        f"{FORMAT_LABEL}: lead {lead} value type {vtype!r} is not SLIST_PQ"
                    )
                origin_el = child(value, "origin")
                origin, ounit = (0.0, "") if origin_el is None else _pq(origin_el, f"lead {lead} origin")
                scale, sunit = _pq(child(value, "scale"), f"lead {lead} scale")
                sf = mv_factor(sunit)
                if sf is None:
                    raise UnsupportedSignal(
                        f"{FORMAT_LABEL}: lead {lead} scale unit {sunit!r} is not a voltage unit"
                    )
                refuse_unusable_gains([scale], [lead], label=FORMAT_LABEL, field="scale")
                of = mv_factor(ounit) or sf
                digits_text = text_of(child(value, "digits"))
                if not digits_text:
                    raise MalformedFile(f"{FORMAT_LABEL}: lead {lead} has no digits")
                n_digits = count_tokens(digits_text)
                check_samples(1, n_digits, f"{FORMAT_LABEL}: lead {lead} digits")
                total += n_digits
                check_samples(1, total // STANDARD_LEAD_COUNT, f"{FORMAT_LABEL}: all leads' digits")
                try:
                    digits = np.array(digits_text.split(), dtype=np.float64)
                    if not np.isfinite(digits).all():
                        raise ValueError
                except ValueError:
                    bad = next(
                        (t for t in digits_text.split() if not re.fullmatch(r"[-+]?\d+", t)), "?"
                    )
                    raise MalformedFile(
                        f"{FORMAT_LABEL}: lead {lead} digits contain a non-number {bad[:20]!r}"
                    ) from None
                names.append(lead)
                rows.append(origin * of + scale * sf * digits)
                lsb.append(abs(scale * sf))
                gains.append(gain_from_resolution(scale, sf))
        fs = file_or_hinted_rate(
            fs,
            hints,
            f"{FORMAT_LABEL}: no TIME_ABSOLUTE/TIME_RELATIVE sequence with an increment "
            "(sampling rate unknown)",
        )
        if not rows:
            raise MalformedFile(f"{FORMAT_LABEL}: sequenceSet has no MDC_ECG_LEAD_* sequences")
        metadata = {"series_code": _code(chosen), "lsb_mV": lsb, "n_series": len(series)}
        effective = _effective_low(chosen) or _effective_low(root)
        acquired_at, time_warnings = acquisition_time(
            [("effectiveTime", lambda: compact_datetime(effective))], FORMAT_LABEL)
        return Recording(
            signals=stack_leads(rows, warnings), fs=fs, lead_names=tuple(names),
            source_format=self.name, warnings=warnings + time_warnings, metadata=metadata, gains=tuple(gains),
            acquired_at=acquired_at,
        )


READER: FormatReader = HL7AecgReader()
