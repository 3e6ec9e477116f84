"""Lead-level evidence (``DiagnoseOptions.explain_leads``, app/usecases/explain.py): masking,
the one model job per ECG, and the deltas, over the session's small bundle with real ONNX
sessions, real records and the real diagnose use-case (offline scorer, SQLite)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.ecg.readers import read_any
from app.ecg.recording import Recording
from app.ops.settings import Settings
from app.service import Service, build_service
from app.usecases.diagnose import DiagnoseOptions, EcgSource, Timings
from app.usecases.explain import LeadMasking, mask_leads
from app.usecases.offline import OfflineScorer
from app.usecases.results import DiagnoseResult, EcgResult
from app.usecases.scoring import Scorer

ECG_DIR = Path(__file__).resolve().parents[1] / "data" / "ecg"
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

pytestmark = pytest.mark.timeout(300)


# --- masking (pure) --------------------------------------------------------------------------


def test_a_masked_lead_is_held_at_its_mean_and_the_others_are_untouched() -> None:
    windows = np.random.default_rng(3).normal(0.2, 0.5, size=(2, 12, 1000)).astype(np.float32)
    masked = mask_leads(windows)
    assert masked.shape == (2, 12, 12, 1000) and masked.dtype == np.float32
    for w in range(2):
        for lead in range(12):
            variant = masked[w, lead]
            mean = np.float32(windows[w, lead].astype(np.float64).mean())
            assert np.all(variant[lead] == mean)  # a constant line at the lead's own level
            others = [i for i in range(12) if i != lead]
            assert np.array_equal(variant[others], windows[w, others])
    assert np.array_equal(mask_leads(windows), masked)  # deterministic


@pytest.mark.parametrize("level", [0.0, 0.3, -1.7])
def test_masking_a_flat_lead_leaves_it_exactly_as_it_was(level: float) -> None:
    windows = np.random.default_rng(4).normal(0, 0.4, size=(3, 12, 1000)).astype(np.float32)
    windows[:, 7] = np.float32(level)
    masked = mask_leads(windows)
    assert np.array_equal(masked[:, 7], windows)  # bit for bit: its mean is its value

    masking = LeadMasking.of(windows)
    # the flat lead's variants are not scored again: they are the windows' own rows
    assert len(masking.windows) == 3 + 3 * 11
    assert masking.rows[:, 7].tolist() == [0, 1, 2]
    assert np.array_equal(masking.windows[:3], windows)
    for w in range(3):
        for lead in range(12):
            assert np.array_equal(masking.windows[masking.rows[w, lead]], masked[w, lead])


def test_the_rows_are_split_back_into_originals_and_masked_probabilities() -> None:
    windows = np.random.default_rng(5).normal(0, 0.4, size=(2, 12, 1000)).astype(np.float32)
    masking = LeadMasking.of(windows)
    assert len(masking.windows) == 2 * 13
    probs = np.arange(26 * 3, dtype=np.float32).reshape(26, 3)
    attention = np.arange(26 * 3 * 4, dtype=np.float32).reshape(26, 3, 4)
    p, a, masked = masking.split(probs, attention)
    assert np.array_equal(p, probs[:2]) and np.array_equal(a, attention[:2])
    assert masked.shape == (2, 12, 3)
    assert np.array_equal(masked[1, 4], probs[2 + 12 + 4])  # window 1, lead 4: after the 12 variants of window 0


# --- through the diagnose use-case -------------------------------------------------------------


@pytest.fixture(scope="module")
def service(small_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    settings = Settings(bundle_dir=small_bundle, data_dir=tmp_path_factory.mktemp("lead-evidence-data"),
                        database_url=None, provider="cpu", intra_op_threads=2)
    built = build_service(settings)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture(scope="module")
def scorer(service: Service) -> Iterator[OfflineScorer]:
    with OfflineScorer(service.diagnose, service.model, service.limits) as opened:
        yield opened


def _record(name: str) -> EcgSource:
    return EcgSource(read_any(ECG_DIR / f"{name}.hea"), filename=f"{name}.hea")


def _without_lead_effects(result: DiagnoseResult) -> list[EcgResult]:
    return [dataclasses.replace(r, diagnoses=tuple(dataclasses.replace(d, lead_effects=None) for d in r.diagnoses))
            for r in result.results]


def _deltas(result: DiagnoseResult) -> list[dict[str, list[float]]]:
    out = []
    for r in result.results:
        per_label = {}
        for d in r.diagnoses:
            assert d.lead_effects is not None
            assert tuple(e.lead for e in d.lead_effects) == LEADS  # the contract's lead order
            per_label[d.label] = [e.delta for e in d.lead_effects]
        out.append(per_label)
    return out


@pytest.mark.parametrize("aggregation", ["max", "mean"])
def test_the_reported_result_is_the_same_with_lead_evidence(scorer: OfflineScorer, aggregation: str) -> None:
    sources = [_record("E07500"), _record("S0001")]  # one window; four windows
    plain = DiagnoseOptions(label_set="cinc2021", top_k=0, include_windows=True, aggregation=aggregation)  # type: ignore[arg-type]
    explained = dataclasses.replace(plain, explain_leads=True)
    without = scorer.diagnose_sources(sources, plain)
    first = scorer.diagnose_sources(sources, explained)
    second = scorer.diagnose_sources(sources, explained)

    assert all(d.lead_effects is None for r in without.results for d in r.diagnoses)
    # probabilities, ranks, evidence spans, window probabilities: exactly as without explain
    assert _without_lead_effects(first) == list(without.results)
    assert _deltas(first) == _deltas(second)  # deterministic
    deltas = [v for per_label in _deltas(first) for values in per_label.values() for v in values]
    assert len(deltas) == 2 * 26 * 12
    assert min(deltas) < 0 < max(deltas)  # signed: leads move the untrained model both ways
    for r in first.results:
        for d in r.diagnoses:
            assert d.lead_effects is not None
            assert all(0.0 <= d.probability + e.delta <= 1.0 + 1e-9 for e in d.lead_effects)
    assert "lead_masking" in first.timings_ms and "lead_masking" not in without.timings_ms


def _batched_and_separate(service: Service, windows: np.ndarray, vectors: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """The masked variants of ``windows`` scored as one job through the scorer, and each scored alone."""
    runtime = service.model.runtime
    masking = LeadMasking.of(windows)

    async def batched() -> np.ndarray:
        scorer = Scorer(runtime, max_batch_size=16, max_wait_s=0.0)
        scorer.start()
        try:
            return (await scorer.score("test:lead-evidence", masking.windows, vectors)).probabilities
        finally:
            await scorer.stop()

    together = asyncio.run(asyncio.wait_for(batched(), 120))
    assert len(together) == len(masking.windows)
    alone = np.concatenate([runtime.score(w[None], vectors)[0] for w in masking.windows])
    return together, alone


def test_one_model_job_of_13_windows_equals_each_variant_scored_alone(service: Service) -> None:
    model_input = service.diagnose.model_inputs([_record("E07500")], False, service.model.runtime.contract,
                                                Timings())[0]
    assert model_input.windows.shape == (1, 12, 1000)
    label_set = service.diagnose.label_set_for(DiagnoseOptions(label_set="cinc2021"))
    vectors = service.diagnose.panel_for(label_set, service.model.embedder).vectors
    together, alone = _batched_and_separate(service, model_input.windows, vectors)
    assert together.shape == (13, 26)
    assert np.abs(together - alone).max() <= 1e-6


def test_deltas_are_the_separately_scored_variants_aggregated(scorer: OfflineScorer, service: Service) -> None:
    """S0001 (4 windows, aggregation mean): each delta is the mean over windows of that lead's
    masked probability, scored window by window, minus the reported probability."""
    options = DiagnoseOptions(label_set="cinc2021", top_k=0, aggregation="mean", explain_leads=True)
    result = scorer.diagnose_sources([_record("S0001")], options)
    model_input = service.diagnose.model_inputs([_record("S0001")], False, service.model.runtime.contract,
                                                Timings())[0]
    label_set = service.diagnose.label_set_for(options)
    vectors = service.diagnose.panel_for(label_set, service.model.embedder).vectors
    names = [label.name for label in label_set.labels]
    variants = mask_leads(model_input.windows)  # (4, 12, 12, 1000)
    runtime = service.model.runtime
    masked = np.stack([[runtime.score(variants[w, lead][None], vectors)[0][0] for lead in range(12)]
                       for w in range(len(variants))])  # (4, 12, C)
    expected = masked.astype(np.float64).mean(axis=0)  # (12, C)
    [ecg] = result.results
    assert ecg.source.windows == 4
    for d in ecg.diagnoses:
        assert d.lead_effects is not None
        c = names.index(d.label)
        got = np.array([d.probability + e.delta for e in d.lead_effects])
        assert np.abs(got - expected[:, c]).max() <= 2e-6


@pytest.mark.parametrize("level", [0.0, 0.25])
def test_a_flat_lead_has_no_effect_on_any_diagnosis(scorer: OfflineScorer, real_windows: np.ndarray,
                                                    level: float) -> None:
    """A record at the model's own rate (no resampling) whose V3 is a constant line: masking V3
    changes nothing, so its delta is exactly 0 for every label."""
    signals = real_windows[0].astype(np.float64).copy()
    signals[LEADS.index("V3")] = level
    recording = Recording(signals=signals, fs=100.0, lead_names=LEADS, source_format="json")
    options = DiagnoseOptions(label_set="cinc2021", top_k=0, explain_leads=True)
    result = scorer.diagnose_sources([EcgSource(recording, ref="flat-v3")], options)
    [ecg] = result.results
    assert len(ecg.diagnoses) == 26
    for d in ecg.diagnoses:
        assert d.lead_effects is not None
        effects = {e.lead: e.delta for e in d.lead_effects}
        assert effects["V3"] == 0.0
    assert any(e.delta != 0.0 for d in ecg.diagnoses for e in d.lead_effects or () if e.lead != "V3")


def test_the_command_line_takes_explain_leads() -> None:
    from app.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["diagnose", "x.hea"]).explain == "none"
    assert parser.parse_args(["diagnose", "--explain", "leads", "x.hea"]).explain == "leads"
    with pytest.raises(SystemExit):
        parser.parse_args(["diagnose", "--explain", "noise", "x.hea"])

