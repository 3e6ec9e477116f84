"""From model outputs to what a clinician reads: aggregate windows, rank, attach knowledge
and evidence. Pure functions shared by the API and the command line (no HTTP, no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from app.ecg.preprocess import ModelInput

INTENDED_USE = (
    "Decision support for qualified clinicians, not a diagnosis. ECGFM-KED ranks diagnostic statements "
    "by zero-shot probability; probabilities are uncalibrated model outputs, depend on the whole label set "
    "scored together, and this service has not measured their accuracy on your population. "
    "Every finding must be confirmed by a clinician reading the ECG."
)
SEGMENT_SECONDS = 10.0 / 32  # one TQN attention column per ~0.31 s of the 10 s window
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


def evidence_spans(attention: np.ndarray, window_start_s: float, n_spans: int, limit_s: float | None = None) -> list[dict[str, float]]:
    """The segments a label attended to most, adjacent ones merged, in seconds of the record.

    ``attention`` is one label's (32,) row of last-layer cross-attention (sums to 1); column i
    covers [i, i + 1) * SEGMENT_SECONDS of the window. The ``n_spans`` heaviest columns are
    kept; spans starting beyond ``limit_s`` (zero padding) are dropped.
    """
    columns = sorted(int(i) for i in np.argsort(-attention, kind="stable")[: max(n_spans, 0)])
    spans: list[dict[str, float]] = []
    last = -2
    for i in columns:
        start = window_start_s + i * SEGMENT_SECONDS
        if limit_s is not None and start >= limit_s:
            continue
        end = start + SEGMENT_SECONDS if limit_s is None else min(start + SEGMENT_SECONDS, limit_s)
        if spans and i == last + 1:
            spans[-1]["end_s"] = end
            spans[-1]["weight"] += float(attention[i])
        else:
            spans.append({"start_s": start, "end_s": end, "weight": float(attention[i])})
        last = i
    spans.sort(key=lambda s: -s["weight"])
    return [{k: round(v, 4) for k, v in s.items()} for s in spans]


def rank_diagnoses(
    model_input: ModelInput, probs: np.ndarray, attention: np.ndarray, panel: Panel, options: RankOptions
) -> list[dict[str, Any]]:
    """(N windows, C) probabilities and (N, C, 32) attention -> ranked diagnoses for one ECG."""
    agg = probs.mean(axis=0) if options.aggregation == "mean" else probs.max(axis=0)
    best_window = np.argmax(probs, axis=0)  # evidence comes from the window that scored highest
    order = np.argsort(-agg, kind="stable")
    limit = model_input.duration_s if model_input.padded else None
    out = []
    for rank, c in enumerate(order, start=1):
        p = round(float(agg[c]), 6)  # the value reported: the threshold applies to what the caller sees
        if p < options.threshold:
            continue
        w = int(best_window[c])
        label = panel.labels[c]
        item: dict[str, Any] = {
            "rank": rank,
            "label": label.name,
            "label_id": label.label_id,
            "probability": p,
            "aggregation": options.aggregation if len(probs) > 1 else "single_window",
            "codes": dict(label.codes),
            "knowledge": label.knowledge,
            "evidence": evidence_spans(attention[w, c], model_input.window_starts_s[w], options.evidence_spans, limit),
        }
        if options.include_windows:
            item["window_probabilities"] = [round(float(v), 6) for v in probs[:, c]]
        out.append(item)
        if options.top_k and len(out) >= options.top_k:
            break
    return out


def describe_source(model_input: ModelInput, filename: str | None) -> dict[str, Any]:
    return {
        "filename": filename,
        "format": model_input.source_format,
        "fs": model_input.fs_in,
        "duration_s": round(model_input.duration_s, 3),
        "leads_read": list(model_input.leads_read),
        "derived_leads": list(model_input.derived_leads),
        "windows": int(len(model_input.windows)),
        "window_starts_s": [round(s, 3) for s in model_input.window_starts_s],
        "padded": model_input.padded,
    }


def warnings_json(model_input: ModelInput) -> list[dict[str, Any]]:
    return [{"code": w.code, "message": w.message, "leads": list(w.leads)} for w in model_input.warnings]
