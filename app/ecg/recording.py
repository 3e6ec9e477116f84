"""The one object every format reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SignalWarning:
    """Something the caller should know about the signal; never fatal."""

    code: str  # machine-readable, e.g. "nan_samples", "flat_lead", "derived_leads"
    message: str
    leads: tuple[str, ...] = ()


@dataclass
class Recording:
    """A multi-lead ECG as read from a file, before any model-specific processing.

    ``signals`` is (n_leads, n_samples) float64 in millivolts, already converted by the
    reader from whatever units the file used. ``lead_names`` are as the source spelt them
    (preprocessing maps spelling variants). Non-identifying ``metadata`` only: readers must
    never copy patient names, IDs or dates of birth into it.
    """

    signals: np.ndarray
    fs: float
    lead_names: tuple[str, ...]
    source_format: str
    warnings: list[SignalWarning] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    # per lead, the gain the file declares, in one convention for every format: digital units
    # per millivolt (WFDB's ADC gain over its units, EDF's digital/physical range ratio, the
    # inverse of an LSB size such as DICOM's sensitivity or MUSE's units per bit, converted to
    # mV), with the sign the file declares; None where the format has none (CSV, NPY, HDF5,
    # MATLAB, JSON arrays). Readers refuse a zero or non-finite one (MalformedFile: it cannot
    # convert digits to mV). Preprocessing warns about a negative one (``negative_gain``): the
    # reader applied it as declared, so that lead's polarity is the file's word, and it is
    # rarely meant.
    gains: tuple[float, ...] | None = None
    # when the ECG was acquired, as the file states it (WFDB base date/time, DICOM
    # AcquisitionDateTime, aECG effectiveTime); None where the file has none. Timezone-aware
    # when the file gives a zone, naive otherwise (the recorder's local time). Never logged.
    acquired_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.signals.ndim != 2:
            raise ValueError("signals must be (n_leads, n_samples)")
        if self.signals.shape[0] != len(self.lead_names):
            raise ValueError("one lead name per signal row")
        if self.gains is not None and len(self.gains) != len(self.lead_names):
            raise ValueError("one gain per lead (or none)")

    @property
    def n_samples(self) -> int:
        return int(self.signals.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs if self.fs > 0 else 0.0
