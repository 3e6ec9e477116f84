"""What the diagnose use-case returns: immutable, typed result objects (no HTTP, no JSON).

``DiagnoseService.diagnose`` builds a :class:`DiagnoseResult`; the HTTP edge renders it with
``app.api.schemas.DiagnoseResponse.from_result`` (the JSON of ``POST /diagnose``) or
``app.api.fhir.to_fhir_bundle`` (a FHIR Bundle), and the command line prints those same two.
Numbers are already rounded as the caller sees them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from app.serving.runtime import ModelInfo

__all__ = [
    "DiagnoseResult",
    "EcgResult",
    "EvidenceSpan",
    "LabelSetRef",
    "LeadEffect",
    "ModelInfo",
    "RankedDiagnosis",
    "ResultWarning",
    "SourceDescription",
    "Tracing",
]


@dataclass(frozen=True)
class EvidenceSpan:
    """A stretch of the record (seconds from its start) a label attended to, and its share of
    that label's attention in the window that scored highest."""

    start_s: float
    end_s: float
    weight: float


@dataclass(frozen=True)
class LeadEffect:
    """Lead-level evidence: how one label's probability moves when one lead is masked
    (``explain=leads``). ``delta`` = probability with the lead masked - the reported probability:
    negative where the lead supported the diagnosis, positive where it argued against it."""

    lead: str
    delta: float


@dataclass(frozen=True)
class RankedDiagnosis:
    """One label's score for one ECG, with what a clinician reads about it."""

    rank: int  # 1 = highest probability among all labels of the set (kept when others are filtered out)
    label: str
    label_id: int | None  # None for labels not in the knowledge store
    probability: float
    aggregation: str  # "max", "mean" (records longer than one window) or "single_window"
    codes: Mapping[str, str]
    knowledge: str
    evidence: tuple[EvidenceSpan, ...]
    window_probabilities: tuple[float, ...] | None = None  # only when asked for
    lead_effects: tuple[LeadEffect, ...] | None = None  # only with explain=leads; in the contract's lead order


@dataclass(frozen=True)
class SourceDescription:
    """What was read from one record and how it was cut into model windows."""

    filename: str | None
    format: str
    fs: float  # the record's own sampling rate (Hz)
    duration_s: float
    leads_read: tuple[str, ...]
    derived_leads: tuple[str, ...]
    windows: int
    window_starts_s: tuple[float, ...]
    padded: bool
    acquired_at: datetime | None = None  # as the file states it (None: the file has no acquisition time)


@dataclass(frozen=True, eq=False)
class Tracing:
    """The signal a report plots: the 12 leads at the record's own rate, in millivolts, after
    lead derivation and NaN filling (what was scored, before resampling). Only when asked for
    (``DiagnoseOptions.keep_tracing``); never part of the JSON answer."""

    fs: float
    leads: tuple[str, ...]
    signals: np.ndarray  # (12, n) float64, mV, rows in ``leads`` order


@dataclass(frozen=True)
class ResultWarning:
    """Something the caller should know about a signal (or the whole response)."""

    code: str
    message: str
    leads: tuple[str, ...] = ()


@dataclass(frozen=True)
class EcgResult:
    """The ranked diagnoses of one ECG of the request."""

    ecg_index: int
    ref: str | None  # the caller's own reference (JSON ``id``), echoed back
    source: SourceDescription
    diagnoses: tuple[RankedDiagnosis, ...]
    warnings: tuple[ResultWarning, ...]
    tracing: Tracing | None = None  # only with DiagnoseOptions.keep_tracing (reports)


@dataclass(frozen=True)
class LabelSetRef:
    """The label set scored (the results depend on the whole set), by name and content version."""

    name: str
    version: str


@dataclass(frozen=True)
class DiagnoseResult:
    """Everything one diagnose request produced."""

    request_id: str
    model: ModelInfo
    label_set: LabelSetRef
    intended_use: str
    results: tuple[EcgResult, ...]
    warnings: tuple[ResultWarning, ...]
    timings_ms: Mapping[str, float]
