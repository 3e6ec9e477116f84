"""What every report output says in words: titles, probabilities, evidence spans, lead evidence,
the UNTRAINED banner. Shared by the plot, the HTML and the PDF so they never disagree."""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import InvalidInput
from app.report.paper import PLOT_SECONDS
from app.usecases.results import DiagnoseResult, EcgResult, EvidenceSpan, LeadEffect, RankedDiagnosis

UNTRAINED_BANNER = "UNTRAINED DEMO MODEL (random weights): these outputs mean nothing"
EVIDENCE_NOTE = ("Shaded and hatched: where the model attended for the highlighted diagnosis (its evidence spans); "
                 "attention is not a measurement.")
SCALE_NOTE = ("25 mm/s, 10 mm/mV; small squares 1 mm (0.04 s, 0.1 mV), large squares 5 mm (0.2 s, 0.5 mV); "
              "each lead's median removed, no other filtering")
DERIVED_NOTE = "* derived from the other leads"


def select_ecgs(result: DiagnoseResult, ecg_index: int | None) -> tuple[EcgResult, ...]:
    """Every ECG of the result (``None``) or the one at ``ecg_index``."""
    if ecg_index is None:
        return result.results
    if not 0 <= ecg_index < len(result.results):
        raise InvalidInput(f"ecg={ecg_index} is not an ECG of this request: it has {len(result.results)} "
                           f"(numbered from 0)", details={"ecg": ecg_index, "ecgs": len(result.results)})
    return (result.results[ecg_index],)


def selected_diagnosis(ecg: EcgResult, highlight: int | None) -> RankedDiagnosis | None:
    """The diagnosis with rank ``highlight``; the top one when it is None or not among those returned."""
    if not ecg.diagnoses:
        return None
    for d in ecg.diagnoses:
        if d.rank == highlight:
            return d
    return ecg.diagnoses[0]


def ecg_title(ecg: EcgResult) -> str:
    name = ecg.source.filename or ecg.ref or f"ECG {ecg.ecg_index + 1}"
    return f"ECG {ecg.ecg_index + 1}: {name}"


def ecg_facts(ecg: EcgResult) -> str:
    s = ecg.source
    parts = [f"{s.duration_s:g} s at {s.fs:g} Hz", f"format {s.format}"]
    if s.acquired_at is not None:
        parts.append(f"acquired {s.acquired_at.isoformat()}")
    if s.derived_leads:
        parts.append(f"derived leads {', '.join(s.derived_leads)}")
    if s.padded:
        parts.append("zero-padded to 10 s for scoring")
    return "; ".join(parts)


def model_line(result: DiagnoseResult) -> str:
    m = result.model
    return (f"model {m.name} {m.version} ({m.precision}, {m.provider}); label set {result.label_set.name} "
            f"version {result.label_set.version}; request {result.request_id}")


def percent(p: float) -> str:
    return f"{100.0 * p:.1f} %"


def span_times(span: EvidenceSpan) -> str:
    return f"{span.start_s:.2f}\u2013{span.end_s:.2f} s"


def span_name(index: int) -> str:
    """The label a span carries on the tracing (1-based, heaviest first)."""
    return f"E{index}"


@dataclass(frozen=True)
class PlacedSpan:
    index: int  # 1-based, as in the evidence list (heaviest first)
    span: EvidenceSpan
    shown_to_s: float | None  # where the drawn part ends; None: entirely past what is plotted

    @property
    def outside(self) -> bool:
        return self.shown_to_s is None

    @property
    def clipped(self) -> bool:
        return self.shown_to_s is not None and self.shown_to_s < self.span.end_s


def placed_spans(diagnosis: RankedDiagnosis, plotted_s: float = PLOT_SECONDS) -> tuple[PlacedSpan, ...]:
    """The evidence spans against what the page plots (the record's first ``plotted_s`` seconds)."""
    return tuple(PlacedSpan(i, s, None if s.start_s >= plotted_s else min(s.end_s, plotted_s))
                 for i, s in enumerate(diagnosis.evidence, start=1))


def span_description(p: PlacedSpan) -> str:
    where = ""
    if p.outside:
        where = f" (after the plotted {PLOT_SECONDS:g} s)"
    elif p.clipped:
        where = f" (plotted up to {PLOT_SECONDS:g} s)"
    return f"{span_name(p.index)} {span_times(p.span)}, {percent(p.span.weight)} of the attention{where}"


def outside_note(diagnosis: RankedDiagnosis) -> str | None:
    outside = [p for p in placed_spans(diagnosis) if p.outside]
    if not outside:
        return None
    listed = "; ".join(f"{span_name(p.index)} {span_times(p.span)}" for p in outside)
    return f"Evidence after the plotted first {PLOT_SECONDS:g} s (not shaded): {listed}"


def lead_effects_ranked(effects: tuple[LeadEffect, ...]) -> list[LeadEffect]:
    """Strongest support first (most negative delta: masking the lead lowers the probability most)."""
    return sorted(effects, key=lambda e: e.delta)


def delta_text(effect: LeadEffect) -> str:
    """The probability change as printed: 4 decimals, signed, and 0 without a sign."""
    shown = round(effect.delta, 4)
    return "0.0000" if shown == 0 else f"{shown:+.4f}"


def lead_effect_meaning(effect: LeadEffect) -> str:
    """In words, at the precision the reports print (4 decimals)."""
    shown = round(effect.delta, 4)
    if shown < 0:
        return "supports"
    if shown > 0:
        return "argues against"
    return "no effect"


def driving_leads(diagnosis: RankedDiagnosis, n: int = 3) -> list[LeadEffect]:
    """The leads whose masking lowered the probability most (supporting leads only)."""
    if not diagnosis.lead_effects:
        return []
    return [e for e in lead_effects_ranked(diagnosis.lead_effects) if lead_effect_meaning(e) == "supports"][:n]


def diagnosis_heading(d: RankedDiagnosis) -> str:
    return f"#{d.rank} {d.label}: {percent(d.probability)}"


def codes_text(d: RankedDiagnosis) -> str:
    return ", ".join(f"{system} {code}" for system, code in d.codes.items())
