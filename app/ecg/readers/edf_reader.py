"""EDF / EDF+ (European Data Format), read with pyedflib.

Each signal carries its own label, physical dimension (uV, mV, V, ...) and sample rate.
Annotation signals ("EDF Annotations") are skipped. When some labels are recognisable ECG
leads ("ECG I", "I", "EKG II", "V1"), those signals are the leads and the others (respiration,
SpO2, ...) are ignored with a warning; otherwise every signal measured in volts is a lead.
All leads must share one sample rate. A prefix such as "ECG " / "EKG " is dropped from
the lead name; the header's patient and recording fields are never read into metadata.

``Recording.gains``: each lead's (digital max - digital min) / (physical max - physical min),
per mV of its physical dimension, sign kept: a physical range written high-to-low is how EDF
inverts a signal, and edflib applies it, so that lead gets the ``negative_gain`` warning. A
physical range of zero (edflib will not open such a file) or a digital range of zero (every
sample would read as one value) is refused as MalformedFile naming the signals.

Kept (issue 15), not switched to ecgdatakit 2.0.3: it agrees with ecgdatakit within 1e-9 mV,
with equal names, rate, gains and start date/time (``acquired_at``, from the header's startdate
and starttime with EDF's 1985 clipping year), on the independent writer's files
(tests/formats/test_ecgdatakit_differential.py); 1.68 ms here vs 1.01 ms for ecgdatakit, a 0.7
ms difference not worth losing the checks for. Ours checks the sizes a file declares against the
reader limits and the memory budget (app/ecg/readers/_limits.py) before it decodes, which the
library does not do.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.ecg.leads import is_lead_name, strip_lead_prefix
from app.ecg.readers._common import gain_per_mv, refuse_unusable_gains
from app.ecg.readers._dates import acquisition_time, edf_date_time
from app.ecg.readers._limits import check_leads, check_samples
from app.ecg.readers.base import FormatReader, ReadHints
from app.ecg.recording import Recording, SignalWarning
from app.ecg.units import mv_factor
from app.errors import MalformedFile, UnsupportedSignal

if TYPE_CHECKING:
    import pyedflib  # only for the annotation: the runtime import stays lazy in read()

MAGIC = b"0       "


def _int_field(raw: bytes) -> int | None:
    try:
        return int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None


def _float_field(raw: bytes) -> float | None:
    try:
        return float(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None


def _parse_main_header(head: bytes) -> tuple[int, int, float, int] | None:
    """(header bytes, data records, record duration, n signals) if the fixed header is sane."""
    if len(head) < 256 or head[:8] != MAGIC:
        return None
    if any(b < 32 or b > 126 for b in head[:256]):
        return None
    hdr_bytes = _int_field(head[184:192])
    n_records = _int_field(head[236:244])
    duration = _float_field(head[244:252])
    ns = _int_field(head[252:256])
    if hdr_bytes is None or n_records is None or duration is None or ns is None:
        return None
    if ns < 1 or hdr_bytes != 256 * (ns + 1) or n_records < -1 or duration < 0:
        return None
    return hdr_bytes, n_records, duration, ns


_RANGE_FIELD = "digital range / physical range"


def _range_ratio(digital: float, physical: float) -> float:
    """Digital units per physical unit; inf for a zero physical range (refused, never divided)."""
    return float(digital) / float(physical) if physical != 0 else math.inf


def _check_physical_ranges(sig: bytes, ns: int) -> None:
    """Refuse, naming the signals, a zero physical range before edflib sees the file: edflib
    will not open it and only says it is "not EDF compliant (Physical Maximum)". (A zero digital
    range edflib reads; the lead signals are checked for it once opened.)"""
    def fields(offset: int) -> list[float | None]:
        return [_float_field(sig[offset * ns + 8 * i : offset * ns + 8 * i + 8]) for i in range(ns)]

    labels = [strip_lead_prefix(sig[16 * i : 16 * i + 16].decode("ascii", "replace").strip()) or f"signal {i + 1}"
              for i in range(ns)]
    pmin, pmax = fields(104), fields(112)
    flat = [labels[i] for i in range(ns) if pmin[i] is not None and pmin[i] == pmax[i]]
    refuse_unusable_gains([0.0] * len(flat), flat, label="EDF header", field="physical range")


class EdfReader:
    name = "edf"
    title = "EDF / EDF+ (European Data Format)"
    extensions = (".edf", ".rec")

    def claims(self, path: Path, head: bytes) -> bool:
        return _parse_main_header(head) is not None

    def companions(self, path: Path) -> list[Path]:
        return []

    def read(self, path: Path, hints: ReadHints) -> Recording:
        head = self._check_size(Path(path))
        reserved = head[192:236].decode("ascii", "replace").strip()
        import pyedflib  # imported here: the module is optional for every other format

        try:
            f = pyedflib.EdfReader(str(path))
        except Exception as e:  # pyedflib raises OSError with edflib's reason
            raise MalformedFile(f"cannot read EDF file: {e}") from None
        try:
            recording = self._read_open(f, discontinuous=reserved.startswith("EDF+D"))
        except (MalformedFile, UnsupportedSignal):
            raise
        except Exception as e:
            raise MalformedFile(f"cannot read EDF signals: {e}") from None
        finally:
            f.close()
        # the header's own start date/time fields (pyedflib's parsed value would hide a malformed one)
        text = head[168:184].decode("ascii", "replace")
        recording.acquired_at, dated = acquisition_time(
            [("startdate/starttime", lambda: edf_date_time(text[:8], text[8:]))], "EDF header")
        recording.warnings.extend(dated)
        return recording


    @staticmethod
    def _check_size(path: Path) -> bytes:
        """Check the header against the file size; return the 256-byte fixed header."""
        try:
            size = path.stat().st_size
            with path.open("rb") as fh:
                head = fh.read(256)
                parsed = _parse_main_header(head)
                if parsed is None:
                    raise MalformedFile("not an EDF file: the 256-byte fixed header is missing or invalid")
                hdr_bytes, n_records, _, ns = parsed
                sig = fh.read(hdr_bytes - 256)
        except OSError as e:
            raise MalformedFile(f"cannot read EDF file: {e}") from None
        if len(sig) < ns * 256:
            raise MalformedFile(
                f"EDF header is truncated: {ns} signal headers need {hdr_bytes} bytes, the file has {size}"
            )
        # samples per data record: ns fields of 8 bytes at offset 216 * ns in the signal header
        off = ns * 216
        fields = [_int_field(sig[off + 8 * i : off + 8 * i + 8]) for i in range(ns)]
        per_record = [n for n in fields if n is not None and n >= 0]
        if len(per_record) != ns:
            raise MalformedFile("EDF signal header has an invalid number of samples per data record")
        check_leads(ns, "EDF header")
        _check_physical_ranges(sig, ns)
        if n_records >= 0:
            check_samples(ns, n_records * max(per_record), "EDF header")
            expected = hdr_bytes + n_records * 2 * sum(per_record)
            if size < expected:
                raise MalformedFile(
                    f"EDF file is truncated: its header promises {n_records} data records "
                    f"({expected} bytes), the file has {size} bytes"
                )
        return head

    def _read_open(self, f: pyedflib.EdfReader, *, discontinuous: bool) -> Recording:
        n = f.signals_in_file
        labels = [f.getLabel(i).strip() for i in range(n)]
        dims = [f.getPhysicalDimension(i).strip() for i in range(n)]
        rates = [float(f.getSampleFrequency(i)) for i in range(n)]
        nsamp = [int(x) for x in f.getNSamples()]

        usable = [i for i in range(n) if not labels[i].lower().startswith("edf annotations")]
        if not usable:
            raise MalformedFile("EDF file has no signals (only annotations)")
        named = [i for i in usable if is_lead_name(labels[i])]
        if named:
            leads = named
        else:
            leads = [i for i in usable if mv_factor(dims[i]) is not None]
            if not leads:
                raise UnsupportedSignal(
                    "EDF file has no ECG leads: no signal label is a lead name and none is in volts",
                    details={"labels": labels, "dimensions": dims},
                )
        ignored = [labels[i] for i in usable if i not in leads]

        lead_rates = {rates[i] for i in leads}
        if len(lead_rates) > 1:
            listing = ", ".join(f"{labels[i]} {rates[i]:g} Hz" for i in leads)
            raise MalformedFile(
                f"EDF lead signals have different sampling rates ({listing}); all leads must share one rate",
                details={"rates": {labels[i]: rates[i] for i in leads}},
            )
        fs = lead_rates.pop()
        if not fs > 0:
            raise MalformedFile("EDF lead signals have a sampling rate of 0 Hz")

        factors = []
        for i in leads:
            fac = mv_factor(dims[i])
            if fac is None:
                raise UnsupportedSignal(
                    f"EDF signal {labels[i]!r} has physical dimension {dims[i]!r}; expected a voltage (uV, mV, V)",
                    details={"label": labels[i], "dimension": dims[i]},
                )
            factors.append(fac)
        ranges = [
            _range_ratio(float(f.getDigitalMaximum(i)) - float(f.getDigitalMinimum(i)),
                         float(f.getPhysicalMaximum(i)) - float(f.getPhysicalMinimum(i)))
            for i in leads
        ]
        names = tuple(strip_lead_prefix(labels[i]) for i in leads)
        refuse_unusable_gains(ranges, names, label="EDF", field=_RANGE_FIELD)

        length = min(nsamp[i] for i in leads)
        if length == 0:
            raise MalformedFile("EDF lead signals hold no samples")
        signals = np.empty((len(leads), length), dtype=np.float64)
        for row, (i, fac) in enumerate(zip(leads, factors, strict=True)):
            signals[row] = f.readSignal(i, 0, length, digital=False) * fac

        warnings: list[SignalWarning] = []
        if ignored:
            warnings.append(
                SignalWarning(
                    "ignored_signals", f"EDF signals that are not ECG leads were ignored: {', '.join(ignored)}"
                )
            )
        filetype = {0: "EDF", 1: "EDF+", 2: "BDF", 3: "BDF+"}.get(int(f.filetype), str(f.filetype))
        if discontinuous:
            warnings.append(
                SignalWarning("discontinuous", "EDF+D file: data records were joined without their time gaps")
            )
        return Recording(
            signals=signals, fs=fs, lead_names=names,
            source_format=self.name, warnings=warnings,
            gains=tuple(gain_per_mv(r, fac) for r, fac in zip(ranges, factors, strict=True)),
            metadata={
                "edf_type": filetype,
                "labels": [labels[i] for i in leads],
                "physical_dimensions": [dims[i] for i in leads],
                "record_duration_s": float(f.datarecord_duration),
            },
        )


READER: FormatReader = EdfReader()
