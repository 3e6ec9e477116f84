"""The report as a PDF (matplotlib's PDF backend, no pyplot): per ECG its printout page (A4
landscape, ``app.report.plot``, the top diagnosis's evidence shaded), then A4 portrait pages of
text: the model and label-set versions, the intended use, the warnings, and per ECG the ranked
diagnoses with their knowledge text, evidence spans and lead evidence. With an untrained model
every page carries the UNTRAINED banner.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from app import __version__
from app.report import paper, plot
from app.report.text import (
    UNTRAINED_BANNER,
    codes_text,
    delta_text,
    diagnosis_heading,
    ecg_facts,
    ecg_title,
    lead_effects_ranked,
    placed_spans,
    select_ecgs,
    span_description,
)
from app.usecases.results import DiagnoseResult, EcgResult, RankedDiagnosis

A4_PORTRAIT_MM = (210.0, 297.0)
MARGIN_MM = 18.0
TOP_MM = 24.0  # below the banner
BOTTOM_MM = 16.0
MM_PER_PT = 25.4 / 72.0
CHAR_MM = 0.52 * MM_PER_PT  # DejaVu Sans's average advance per pt of size, with room to spare


@dataclass(frozen=True)
class _Line:
    text: str
    size: float = 9.0
    weight: str = "normal"
    gap_before: float = 0.0  # mm

    @property
    def height_mm(self) -> float:
        return self.size * 1.38 * MM_PER_PT


def _wrapped(text: str, *, size: float = 9.0, weight: str = "normal", gap_before: float = 0.0,
             indent: str = "") -> list[_Line]:
    width = int((A4_PORTRAIT_MM[0] - 2 * MARGIN_MM) / (CHAR_MM * size * (1.08 if weight == "bold" else 1.0)))
    lines = textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent) or [""]
    return [_Line(t, size, weight, gap_before if i == 0 else 0.0) for i, t in enumerate(lines)]


def _diagnosis_lines(d: RankedDiagnosis) -> list[_Line]:
    out = _wrapped(diagnosis_heading(d), size=10.5, weight="bold", gap_before=3.0)
    codes = codes_text(d)
    out += _wrapped(f"aggregation {d.aggregation}" + (f"; codes {codes}" if codes else ""), size=8.5)
    out += _wrapped(d.knowledge, size=9.0, gap_before=1.0)
    spans = placed_spans(d)
    out += _wrapped("Evidence (where the model attended; not a measurement): "
                    + ("; ".join(span_description(p) for p in spans) if spans else "none"), size=8.5, gap_before=1.0)
    if d.lead_effects is None:
        out += _wrapped("Lead evidence: not computed for this answer.", size=8.5)
    else:
        ranked = lead_effects_ranked(d.lead_effects)
        out += _wrapped("Lead evidence (probability change with the lead masked; negative = the lead supported it): "
                        + ", ".join(f"{e.lead} {delta_text(e)}" for e in ranked), size=8.5)
    return out


def _ecg_lines(ecg: EcgResult) -> list[_Line]:
    out = _wrapped(ecg_title(ecg), size=13, weight="bold", gap_before=6.0)
    out += _wrapped(ecg_facts(ecg) + (f"; your reference {ecg.ref}" if ecg.ref else ""), size=8.5)
    for w in ecg.warnings:
        out += _wrapped(f"Warning {w.code}: {w.message}" + (f" (leads {', '.join(w.leads)})" if w.leads else ""),
                        size=8.5, indent="  ")
    if not ecg.diagnoses:
        out += _wrapped("No diagnosis reached the threshold.", gap_before=2.0)
    for d in ecg.diagnoses:
        out += _diagnosis_lines(d)
    return out


def _text_lines(result: DiagnoseResult, ecgs: tuple[EcgResult, ...]) -> list[_Line]:
    m, ls = result.model, result.label_set
    out = _wrapped("ECG report: ranked diagnoses", size=15, weight="bold")
    out += _wrapped(f"Model {m.name} {m.version} ({m.precision}, {m.provider})"
                    + ("; UNTRAINED (random weights)" if m.untrained else ""), size=9.5, gap_before=2.0)
    out += _wrapped(f"Label set {ls.name}, version {ls.version}", size=9.5)
    out += _wrapped(f"Request {result.request_id}; rendered by ecgfm-ked {__version__}", size=9.5)
    out += _wrapped("Intended use", size=11, weight="bold", gap_before=4.0)
    out += _wrapped(result.intended_use, size=9.5)
    for w in result.warnings:
        out += _wrapped(f"Warning {w.code}: {w.message}", size=9.0, gap_before=1.0)
    for ecg in ecgs:
        out += _ecg_lines(ecg)
    return out


def _paginate(lines: list[_Line]) -> list[list[_Line]]:
    room = A4_PORTRAIT_MM[1] - TOP_MM - BOTTOM_MM
    pages: list[list[_Line]] = [[]]
    used = 0.0
    for line in lines:
        need = line.height_mm + (line.gap_before if pages[-1] else 0.0)
        if pages[-1] and used + need > room:
            pages.append([])
            used = 0.0
            need = line.height_mm
        pages[-1].append(line)
        used += need
    return pages


def _text_page(result: DiagnoseResult, lines: list[_Line], number: int, count: int) -> Figure:
    w, h = A4_PORTRAIT_MM
    fig = Figure(figsize=(w / paper.MM_PER_INCH, h / paper.MM_PER_INCH), dpi=72, facecolor="white")
    if result.model.untrained:
        fig.text(0.5, 1 - 10.0 / h, UNTRAINED_BANNER.upper(), ha="center", va="center", fontsize=10,
                 fontweight="bold", color="white",
                 bbox={"boxstyle": "square,pad=0.4", "facecolor": plot.BANNER_FACE, "edgecolor": "black",
                       "linewidth": 1.2})
    y = h - TOP_MM
    for i, line in enumerate(lines):
        if i:
            y -= line.gap_before
        y -= line.height_mm
        fig.text(MARGIN_MM / w, y / h, line.text, fontsize=line.size, fontweight=line.weight, va="bottom", ha="left")
    fig.text(1 - MARGIN_MM / w, 8.0 / h, f"page {number} of {count}; request {result.request_id}", fontsize=7,
             ha="right", va="bottom")
    return fig


def report_pdf(result: DiagnoseResult, *, ecg_index: int | None = None) -> bytes:
    """The PDF report of ``result``: every ECG (``ecg_index`` None) or the one at ``ecg_index``.
    Each ECG's printout (when the result kept its tracing) comes first, then the text pages."""
    ecgs = select_ecgs(result, ecg_index)
    buffer = io.BytesIO()
    title = ecg_title(ecgs[0]) if len(ecgs) == 1 else f"{len(ecgs)} ECGs"
    metadata = {"Title": f"ECG report: {title}", "Creator": f"ecgfm-ked {__version__}", "Producer": "matplotlib",
                "CreationDate": None}
    with plot.rendering():
        tracings = [plot.tracing_figure(result, ecg) for ecg in ecgs if ecg.tracing is not None]
        text_pages = _paginate(_text_lines(result, ecgs))
        count = len(tracings) + len(text_pages)
        with PdfPages(buffer, metadata=metadata) as pdf:
            for fig in tracings:
                pdf.savefig(fig)
            for n, lines in enumerate(text_pages, start=len(tracings) + 1):
                pdf.savefig(_text_page(result, lines, n, count))
    return buffer.getvalue()
