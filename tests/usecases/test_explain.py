"""From model outputs to typed diagnoses (app/usecases/explain.py): pure functions on arrays,
checked against what each one promises (ranking, filtering, evidence in seconds of the record
under the model contract)."""

from __future__ import annotations

import numpy as np
import pytest

from app.contract import PRETRAINING, ModelContract
from app.ecg.preprocess import ModelInput
from app.ecg.recording import SignalWarning
from app.usecases.explain import (
    Panel,
    PanelLabel,
    RankOptions,
    describe_source,
    evidence_spans,
    rank_diagnoses,
    signal_warnings,
)
from app.usecases.results import EvidenceSpan, RankedDiagnosis, ResultWarning, SourceDescription

LABELS = ("sinus rhythm", "atrial fibrillation", "left bundle branch block")


def _model_input(windows: int, *, duration_s: float | None = None, padded: bool = False) -> ModelInput:
    starts = [10.0 * i for i in range(windows)]
    return ModelInput(
        windows=np.zeros((windows, 12, 1000), dtype=np.float32), window_starts_s=starts, derived_leads=["III"],
        warnings=[SignalWarning("derived_leads", "lead III derived from I and II", ("III",))], source_format="wfdb",
        fs_in=500.0, duration_s=duration_s if duration_s is not None else 10.0 * windows, padded=padded,
        leads_read=["I", "II"],
    )


def _panel() -> Panel:
    labels = tuple(PanelLabel(name=n, knowledge=f"about {n}", codes={"SNOMED CT": str(100 + i)}, label_id=i)
                   for i, n in enumerate(LABELS))
    return Panel("test", "v1", labels, np.zeros((len(labels), 8), dtype=np.float32))


def _attention(windows: int, segments: int, rng: np.random.Generator) -> np.ndarray:
    raw = rng.random((windows, len(LABELS), segments))
    return raw / raw.sum(axis=-1, keepdims=True)


def test_evidence_spans_use_the_contracts_segment_length() -> None:
    contract = ModelContract(sampling_rate_hz=250, window_samples=2500, segments=50)  # 0.2 s per column
    attention = np.full(50, 0.01)
    attention[[7, 8, 30]] = [0.2, 0.15, 0.1]  # 7 and 8 adjacent: one span
    spans = evidence_spans(attention, 20.0, 3, contract.segment_s)
    assert all(isinstance(s, EvidenceSpan) for s in spans)
    merged, single = spans
    assert merged.start_s == pytest.approx(20.0 + 7 * 0.2) and merged.end_s == pytest.approx(20.0 + 9 * 0.2)
    assert merged.weight == pytest.approx(0.35)
    assert single.start_s == pytest.approx(26.0) and single.end_s == pytest.approx(26.2)
    # the published model's columns are 10 s / 32 long
    [one] = evidence_spans(attention, 0.0, 1, PRETRAINING.segment_s)
    assert one.start_s == pytest.approx(round(7 * 10 / 32, 4)) and one.end_s == pytest.approx(round(8 * 10 / 32, 4))


def test_evidence_spans_stop_at_the_end_of_a_padded_record() -> None:
    attention = np.zeros(32)
    attention[[2, 20, 31]] = [0.5, 0.3, 0.2]
    spans = evidence_spans(attention, 0.0, 3, PRETRAINING.segment_s, limit_s=6.4)
    assert [s.start_s for s in spans] == [round(2 * 10 / 32, 4), round(20 * 10 / 32, 4)]
    assert all(s.end_s <= 6.4 for s in spans)


def test_rank_diagnoses_returns_typed_ranked_labels() -> None:
    rng = np.random.default_rng(3)
    probs = np.array([[0.2, 0.9, 0.4], [0.6, 0.5, 0.1]])  # two windows
    attention = _attention(2, 32, rng)
    mi = _model_input(2)
    out = rank_diagnoses(mi, probs, attention, _panel(), RankOptions(top_k=0, include_windows=True))
    assert all(isinstance(d, RankedDiagnosis) for d in out)
    assert [d.label for d in out] == ["atrial fibrillation", "sinus rhythm", "left bundle branch block"]
    assert [d.rank for d in out] == [1, 2, 3]
    assert [d.probability for d in out] == [0.9, 0.6, 0.4] and {d.aggregation for d in out} == {"max"}
    af = out[0]
    assert af.window_probabilities == (0.9, 0.5)
    assert af.codes == {"SNOMED CT": "101"} and af.knowledge == "about atrial fibrillation" and af.label_id == 1
    # evidence comes from the window that scored highest (window 0 for AF), in seconds of the record
    expected = evidence_spans(attention[0, 1], 0.0, 3, PRETRAINING.segment_s)
    assert af.evidence == expected and all(0.0 <= e.start_s < 10.0 for e in af.evidence)
    sinus = out[1]
    assert all(10.0 <= e.start_s < 20.0 for e in sinus.evidence)  # its best window is the second

    mean = rank_diagnoses(mi, probs, attention, _panel(), RankOptions(top_k=2, threshold=0.45, aggregation="mean"))
    assert [(d.label, d.probability, d.rank) for d in mean] == [("atrial fibrillation", 0.7, 1)]
    assert mean[0].window_probabilities is None


def test_rank_diagnoses_maps_attention_with_the_contract() -> None:
    contract = ModelContract(segments=16)  # a model with 16 attention columns of 0.625 s
    attention = _attention(1, 16, np.random.default_rng(9))
    [top] = rank_diagnoses(_model_input(1), np.array([[0.1, 0.3, 0.2]]), attention, _panel(),
                           RankOptions(top_k=1, evidence_spans=16), contract)
    assert top.aggregation == "single_window"
    covered = sum(e.end_s - e.start_s for e in top.evidence)
    assert covered == pytest.approx(10.0, abs=1e-3)  # 16 columns of 0.625 s cover the whole window


def test_source_and_warnings_are_typed() -> None:
    mi = _model_input(1, duration_s=6.25, padded=True)
    source = describe_source(mi, "rec.hea")
    assert source == SourceDescription(filename="rec.hea", format="wfdb", fs=500.0, duration_s=6.25,
                                       leads_read=("I", "II"), derived_leads=("III",), windows=1,
                                       window_starts_s=(0.0,), padded=True)
    assert signal_warnings(mi) == (ResultWarning("derived_leads", "lead III derived from I and II", ("III",)),)
