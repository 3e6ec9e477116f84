"""The one object every format reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
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

    def __post_init__(self) -> None:
        if self.signals.ndim != 2:
            raise ValueError("signals must be (n_leads, n_samples)")
        if self.signals.shape[0] != len(self.lead_names):
            raise ValueError("one lead name per signal row")

    @property
    def n_samples(self) -> int:
        return int(self.signals.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs if self.fs > 0 else 0.0
