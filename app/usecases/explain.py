"""From model outputs to what a clinician reads: aggregate windows, rank, attach knowledge
and evidence (attention spans; with ``explain=leads`` the effect of masking each lead). Pure
functions shared by the API and the command line (no HTTP, no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from app.contract import PRETRAINING, ModelContract
from app.ecg.preprocess import ModelInput
from app.usecases.results import EvidenceSpan, LeadEffect, RankedDiagnosis, ResultWarning, SourceDescription

INTENDED_USE = (
    "Decision support for qualified clinicians, not a diagnosis. ECGFM-KED ranks diagnostic statements "
    "by zero-shot probability; probabilities are uncalibrated model outputs, depend on the whole label set "
    "scored together, and this service has not measured their accuracy on your population. "
    "Every finding must be confirmed by a clinician reading the ECG."
)
Aggregation = Literal["max", "mean"]


@dataclass(frozen=True)
class PanelLabel:
    """One scored label: what the model saw (its vector) and what the clinician reads."""

    name: str
    knowledge: str
    codes: dict[str, str] = field(default_factory=dict)
    label_id: int | None = None


@dataclass(frozen=True)
class Panel:
    """The label set scored together (results depend on the whole set: labels attend to each other)."""

    name: str
    version: str
    labels: tuple[PanelLabel, ...]
    vectors: np.ndarray  # (C, D) float32, same order as labels

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.vectors):
            raise ValueError("one vector per label")


@dataclass(frozen=True)
class RankOptions:
    top_k: int = 5  # 0 = all labels
    threshold: float = 0.0
    aggregation: Aggregation = "max"
    include_windows: bool = False
    evidence_spans: int = 3


def evidence_spans(attention: np.ndarray, window_start_s: float, n_spans: int, segment_s: float,
                   limit_s: float | None = None) -> tuple[EvidenceSpan, ...]:
    """The segments a label attended to most, adjacent ones merged, in seconds of the record,
    heaviest first.

    ``attention`` is one label's row of last-layer cross-attention (one column per model
    segment, summing to 1); column i covers [i, i + 1) * ``segment_s`` of the window (the
    model contract's ``segment_s``: 10 s / 32 for the published model). The ``n_spans``
    heaviest columns are kept; spans starting at or beyond ``limit_s`` (zero padding) are dropped.
    """
    columns = sorted(int(i) for i in np.argsort(-attention, kind="stable")[: max(n_spans, 0)])
    spans: list[list[float]] = []  # [start, end, weight]
    last = -2
    for i in columns:
        start = window_start_s + i * segment_s
        if limit_s is not None and start >= limit_s:
            continue
        end = start + segment_s if limit_s is None else min(start + segment_s, limit_s)
        if spans and i == last + 1:
            spans[-1][1] = end
            spans[-1][2] += float(attention[i])
        else:
            spans.append([start, end, float(attention[i])])
        last = i
    spans.sort(key=lambda s: -s[2])
    return tuple(EvidenceSpan(round(a, 4), round(b, 4), round(w, 4)) for a, b, w in spans)


def mask_leads(windows: np.ndarray) -> np.ndarray:
    """(N, L, S) windows -> (N, L, L, S): ``[w, l]`` is window ``w`` with lead ``l`` masked.

    A lead is masked by holding it at its own mean over the window: a constant line at the
    lead's baseline level. That removes the lead's waveform (what the model could read from it)
    and nothing else. Zeroing it instead would also move a lead with an offset (baseline
    wander, a DC level) to 0 mV, a step the model sees and answers to; noise would not be
    deterministic (the same request would give other numbers). A lead that is already flat
    (constant, zero or not) is returned exactly as it was (its mean is its value), so masking it
    changes nothing. The mean is taken in float64 (exact for a constant float32 lead) and
    returned as float32, like the windows.
    """
    leads = windows.shape[1]
    level = windows.mean(axis=-1, dtype=np.float64).astype(windows.dtype)  # (N, L)
    flat = windows.min(axis=-1) == windows.max(axis=-1)
    level = np.where(flat, windows[..., 0], level)  # a flat lead keeps its own value, bit for bit
    masked = np.repeat(windows[:, None], leads, axis=1)
    diagonal = np.arange(leads)
    masked[:, diagonal, diagonal, :] = level[:, :, None]
    return masked


@dataclass(frozen=True, eq=False)
class LeadMasking:
    """What one ECG is scored on with ``explain=leads``: its N windows, then each window with
    each lead masked (``mask_leads``), for one model call.

    A variant identical to its window (the lead is already flat) is not scored again: its row
    is the window's own, so masking a flat lead gives exactly the window's probabilities
    (delta 0) on any execution provider, and costs no model pass."""

    windows: np.ndarray  # (N + M, L, S): the N original windows, then the M masked variants that differ
    originals: int  # N
    rows: np.ndarray  # (N, L) int: the row of ``windows`` scoring window w with lead l masked

    @classmethod
    def of(cls, windows: np.ndarray) -> LeadMasking:
        n, leads = windows.shape[:2]
        variants = mask_leads(windows)
        flat = windows.min(axis=-1) == windows.max(axis=-1)  # (N, L): variant == window
        changed = ~flat
        rows = np.empty((n, leads), dtype=np.intp)
        rows[flat] = np.nonzero(flat)[0]  # the window's own row
        rows[changed] = n + np.arange(int(changed.sum()))
        return cls(np.concatenate([windows, variants[changed]]), n, rows)

    def split(self, probs: np.ndarray, attention: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The model's (N + M, C) probabilities and (N + M, C, segments) attention -> the original
        windows' probabilities (N, C) and attention (N, C, segments), exactly the rows scored
        for them, and the masked probabilities (N, L, C)."""
        n = self.originals
        return probs[:n], attention[:n], probs[self.rows]


def _aggregate(probs: np.ndarray, aggregation: Aggregation) -> np.ndarray:
    """(N windows, C) -> (C,): how window probabilities combine for the reported probability."""
    out: np.ndarray = probs.mean(axis=0) if aggregation == "mean" else probs.max(axis=0)
    return out


def _masked_aggregates(masked: np.ndarray, aggregation: Aggregation) -> np.ndarray:
    """(N, L, C) masked probabilities -> (L, C), each lead aggregated over the windows exactly as
    the reported probabilities are (the same operation on a (N, C) array of the same layout, so
    equal inputs give equal results bit for bit; one window: max = mean = that window)."""
    return np.stack([_aggregate(np.ascontiguousarray(masked[:, lead]), aggregation)
                     for lead in range(masked.shape[1])])


def rank_diagnoses(
    model_input: ModelInput, probs: np.ndarray, attention: np.ndarray, panel: Panel, options: RankOptions,
    contract: ModelContract = PRETRAINING, masked: np.ndarray | None = None,
) -> tuple[RankedDiagnosis, ...]:
    """(N windows, C) probabilities and (N, C, segments) attention -> ranked diagnoses for one ECG.

    ``contract`` is the served model's: it says how many seconds one attention column covers and
    names the leads. ``masked`` (N, L, C), the probabilities with each lead masked
    (``LeadMasking.split``), fills each diagnosis' ``lead_effects`` in the contract's lead order:
    delta = the masked probability, aggregated and rounded as the reported one is, minus the
    reported probability (rounded again to 6 decimals, so probability + delta is the masked
    probability as it would have been reported)."""
    agg = _aggregate(probs, options.aggregation)
    masked_agg = None if masked is None else _masked_aggregates(masked, options.aggregation)
    best_window = np.argmax(probs, axis=0)  # evidence comes from the window that scored highest
    order = np.argsort(-agg, kind="stable")
    limit = model_input.duration_s if model_input.padded else None
    out: list[RankedDiagnosis] = []
    for rank, c in enumerate(order, start=1):
        p = round(float(agg[c]), 6)  # the value reported: the threshold applies to what the caller sees
        if p < options.threshold:
            continue
        w = int(best_window[c])
        label = panel.labels[c]
        out.append(RankedDiagnosis(
            rank=rank,
            label=label.name,
            label_id=label.label_id,
            probability=p,
            aggregation=options.aggregation if len(probs) > 1 else "single_window",
            codes=dict(label.codes),
            knowledge=label.knowledge,
            evidence=evidence_spans(attention[w, c], model_input.window_starts_s[w], options.evidence_spans,
                                    contract.segment_s, limit),
            window_probabilities=tuple(round(float(v), 6) for v in probs[:, c]) if options.include_windows else None,
            lead_effects=None if masked_agg is None else tuple(
                LeadEffect(lead, round(round(float(m), 6) - p, 6))
                for lead, m in zip(contract.lead_order, masked_agg[:, c], strict=True)),
        ))
        if options.top_k and len(out) >= options.top_k:
            break
    return tuple(out)


def describe_source(model_input: ModelInput, filename: str | None) -> SourceDescription:
    return SourceDescription(
        filename=filename,
        format=model_input.source_format,
        fs=model_input.fs_in,
        duration_s=round(model_input.duration_s, 3),
        leads_read=tuple(model_input.leads_read),
        derived_leads=tuple(model_input.derived_leads),
        windows=len(model_input.windows),
        window_starts_s=tuple(round(s, 3) for s in model_input.window_starts_s),
        padded=model_input.padded,
        acquired_at=model_input.acquired_at,
    )


def signal_warnings(model_input: ModelInput) -> tuple[ResultWarning, ...]:
    """The warnings reading and preprocessing raised about one ECG."""
    return tuple(ResultWarning(w.code, w.message, tuple(w.leads)) for w in model_input.warnings)
