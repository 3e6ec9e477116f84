"""One entry point per report media type: what ``POST /diagnose`` answers with for ``Accept``
``text/html``, ``application/pdf``, ``image/svg+xml`` or ``image/png``. CPU work (a fraction of a
second to about a second per ECG): call it off the event loop."""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.report import html, pdf, plot
from app.report.media import HTML, PDF, PLOT_ONLY, SVG, check_report_request
from app.report.text import select_ecgs
from app.usecases.results import DiagnoseResult


@dataclass(frozen=True)
class Rendered:
    content: bytes
    media_type: str
    seconds: float


def render(result: DiagnoseResult, media_type: str, *, ecg_index: int | None = None,
           highlight: int | None = None) -> Rendered:
    """``result`` as ``media_type`` (one of ``app.report.media.MEDIA_TYPES``)."""
    started = time.perf_counter()
    if media_type == HTML:
        content = html.report_html(result, ecg_index=ecg_index, highlight=highlight).encode("utf-8")
    elif media_type == PDF:
        content = pdf.report_pdf(result, ecg_index=ecg_index)
    elif media_type in PLOT_ONLY:
        check_report_request(media_type, len(result.results), ecg_index)
        (ecg,) = select_ecgs(result, ecg_index or 0)
        if ecg.tracing is None:
            raise ValueError("this result kept no tracing: score with DiagnoseOptions(keep_tracing=True)")
        if media_type == SVG:
            content = plot.tracing_svg(result, ecg, highlight=highlight).encode("utf-8")
        else:
            content = plot.tracing_png(result, ecg, highlight=highlight)
    else:
        raise ValueError(f"not a report media type: {media_type!r}")
    return Rendered(content, media_type, time.perf_counter() - started)
