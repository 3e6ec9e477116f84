"""Diagnose results for the report tests, built from real records (tests/data/ecg) read and
preprocessed as the service does, with scores and evidence chosen by the test (so the drawing
can be checked against known times), and SVG reading helpers.

The HTTP tests (tests/api/test_report_http.py) check the same drawing against what the real
model answers."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from app.contract import PRETRAINING
from app.ecg.preprocess import preprocess
from app.ecg.readers import read_any
from app.report import paper
from app.serving.runtime import ModelInfo
from app.usecases.explain import INTENDED_USE, describe_source
from app.usecases.results import (
    DiagnoseResult,
    EcgResult,
    EvidenceSpan,
    LabelSetRef,
    LeadEffect,
    RankedDiagnosis,
    ResultWarning,
    Tracing,
)

ECG_DIR = Path(__file__).resolve().parents[1] / "data" / "ecg"
SVG_NS = "{http://www.w3.org/2000/svg}"
PT_PER_MM = paper.PT_PER_MM
LEADS = PRETRAINING.lead_order
LABELS = ("sinus rhythm", "atrial fibrillation", "left bundle branch block")


def lead_effects(seed: int) -> tuple[LeadEffect, ...]:
    deltas = np.random.default_rng(seed).uniform(-0.08, 0.03, len(LEADS))
    return tuple(LeadEffect(lead, round(float(d), 6)) for lead, d in zip(LEADS, deltas, strict=True))


def diagnosis(rank: int, spans: Sequence[tuple[float, float, float]], *, label: str | None = None,
              with_leads: bool = True) -> RankedDiagnosis:
    name = label or LABELS[(rank - 1) % len(LABELS)]
    return RankedDiagnosis(rank=rank, label=name, label_id=rank, probability=round(0.9 / rank, 6),
                           aggregation="single_window", codes={"SNOMED CT": f"4268{rank}"},
                           knowledge=f"What {name} means, in words a clinician reads.",
                           evidence=tuple(EvidenceSpan(a, b, w) for a, b, w in spans),
                           lead_effects=lead_effects(rank) if with_leads else None)


def ecg_result(record: str = "E07500", diagnoses: Sequence[RankedDiagnosis] | None = None, *, index: int = 0,
               signals: np.ndarray | None = None) -> EcgResult:
    """``record`` read and preprocessed with its tracing kept; ``signals`` replaces the tracing's."""
    model_input = preprocess(read_any(ECG_DIR / f"{record}.hea"), keep_tracing=True)
    assert model_input.tracing is not None
    tracing = Tracing(fs=model_input.fs_in, leads=LEADS,
                      signals=model_input.tracing if signals is None else signals)
    if diagnoses is None:
        diagnoses = [diagnosis(1, [(2.0, 2.3125, 0.4), (6.25, 6.875, 0.3)]),
                     diagnosis(2, [(0.5, 0.8125, 0.5)]),
                     diagnosis(3, [(8.125, 8.4375, 0.2)])]
    return EcgResult(ecg_index=index, ref=None, source=describe_source(model_input, f"{record}.hea"),
                     diagnoses=tuple(diagnoses), warnings=(ResultWarning("test_note", "a warning", ("V1",)),),
                     tracing=tracing)


def diagnose_result(*ecgs: EcgResult, untrained: bool = True) -> DiagnoseResult:
    model = ModelInfo(name="ecgfm-ked", version="report-test-1", provider="CPUExecutionProvider", precision="fp32",
                      untrained=untrained, checkpoint_sha256=None, bundle="/nowhere")
    results = tuple(replace(e, ecg_index=i) for i, e in enumerate(ecgs or (ecg_result(),)))
    return DiagnoseResult(request_id="req-report-test", model=model, label_set=LabelSetRef("default", "0123abcd"),
                          intended_use=INTENDED_USE, results=results,
                          warnings=(ResultWarning("untrained_model", "UNTRAINED"),) if untrained else (),
                          timings_ms={})


# --- reading the SVG ----------------------------------------------------------------------------


def parse_svg(svg: str | bytes) -> ET.Element:
    return ET.fromstring(svg)


def by_id(root: ET.Element) -> dict[str, ET.Element]:
    return {e.attrib["id"]: e for e in root.iter() if "id" in e.attrib}


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def points(group: ET.Element) -> np.ndarray:
    """Every vertex of the paths inside ``group`` (SVG user units = pt), as (n, 2)."""
    found: list[float] = []
    for path in group.iter(f"{SVG_NS}path"):
        found += [float(v) for v in _NUMBER.findall(path.attrib["d"])]
    assert found and len(found) % 2 == 0, group.attrib
    return np.asarray(found).reshape(-1, 2)


def size_mm(root: ET.Element) -> tuple[float, float]:
    w, h = root.attrib["width"], root.attrib["height"]
    assert w.endswith("pt") and h.endswith("pt"), (w, h)
    return float(w[:-2]) / PT_PER_MM, float(h[:-2]) / PT_PER_MM


def text_of(element: ET.Element) -> str:
    """The words of the ``<text>`` elements under ``element``, lines joined by spaces."""
    lines = [" ".join("".join(t.itertext()).split()) for t in element.iter(f"{SVG_NS}text")]
    return " ".join(line for line in lines if line)


def texts(root: ET.Element) -> str:
    return "\n".join("".join(t.itertext()) for t in root.iter(f"{SVG_NS}text"))


def t_of_x(x_pt: float, rhythm_x0_pt: float) -> float:
    """Seconds of the record at SVG x, from where the rhythm strip starts (t = 0)."""
    return (x_pt - rhythm_x0_pt) / PT_PER_MM / paper.PAPER_SPEED_MM_PER_S
