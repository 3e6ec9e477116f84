"""From model outputs to what a clinician reads: aggregate windows, rank, attach knowledge
and evidence. Pure functions shared by the API and the command line (no HTTP, no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from app.contract import PRETRAINING, ModelContract
from app.ecg.preprocess import ModelInput
from app.usecases.results import EvidenceSpan, RankedDiagnosis, ResultWarning, SourceDescription

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


def rank_diagnoses(
    model_input: ModelInput, probs: np.ndarray, attention: np.ndarray, panel: Panel, options: RankOptions,
    contract: ModelContract = PRETRAINING,
) -> tuple[RankedDiagnosis, ...]:
    """(N windows, C) probabilities and (N, C, segments) attention -> ranked diagnoses for one ECG.

    ``contract`` is the served model's: it says how many seconds one attention column covers."""
    agg = probs.mean(axis=0) if options.aggregation == "mean" else probs.max(axis=0)
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
