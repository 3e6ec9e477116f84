"""POST /diagnose's report answers: which one ``Accept`` asks for, and the rendered response.

JSON stays the default: a missing ``Accept``, ``*/*``, or one that names none of the report
types gets JSON, and ``application/fhir+json`` keeps its FHIR Bundle (the route checks it first).
A report type is answered when ``Accept`` prefers it (by q-value, the most specific range
deciding, ties going to JSON). The report is rendered on one thread of its own (CPU work under
the GIL, and matplotlib renders one figure at a time), never on the event loop and never on the
threads that read and preprocess requests; the route renders while the request is still
admitted, so a flood of report requests is refused (503) like any other. The render time goes
into the ``Server-Timing`` header (``render;dur=<ms>``).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi.responses import Response

from app.report.media import HTML, MEDIA_TYPES, PDF, PNG, SVG
from app.usecases.results import DiagnoseResult

JSON = "application/json"
# POST /diagnose's 200 answers besides JSON and FHIR, for its OpenAPI document
OPENAPI_CONTENT: dict[str, Any] = {
    HTML: {"schema": {"type": "string", "description": "a self-contained HTML report (inline SVG, CSS and one "
                                                       "script; no external URL): every ECG, or the one `ecg` names"}},
    PDF: {"schema": {"type": "string", "format": "binary",
                     "description": "the report as PDF: per ECG its printout page, then the diagnoses with their "
                                    "knowledge"}},
    SVG: {"schema": {"type": "string", "description": "the printout of one ECG (25 mm/s, 10 mm/mV, A4 landscape)"}},
    PNG: {"schema": {"type": "string", "format": "binary", "description": "the printout of one ECG at 150 dpi"}},
}
# the report page's policy plus what only a header can say
FRAME_ANCESTORS = "; frame-ancestors 'self'"


def _ranges(accept: str) -> list[tuple[str, str, float]]:
    found: list[tuple[str, str, float]] = []
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        kind, _, sub = fields[0].lower().partition("/")
        if not kind or not sub:
            continue
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        found.append((kind, sub, q))
    return found


def _quality(offer: str, ranges: list[tuple[str, str, float]]) -> float:
    """The q of the most specific range that matches ``offer`` (0 when none does)."""
    kind, _, sub = offer.partition("/")
    best: tuple[int, float] = (-1, 0.0)
    for r_kind, r_sub, q in ranges:
        if (r_kind, r_sub) == (kind, sub):
            specificity = 2
        elif r_kind == kind and r_sub == "*":
            specificity = 1
        elif (r_kind, r_sub) == ("*", "*"):
            specificity = 0
        else:
            continue
        if specificity > best[0]:
            best = (specificity, q)
    return best[1]


def report_type(accept: str | None) -> str | None:
    """The report media type ``accept`` prefers to JSON, or None: answer JSON, or FHIR when
    ``accept`` lists ``application/fhir+json`` at all (the route decides that, as before)."""
    if not accept:
        return None
    ranges = _ranges(accept)
    if any((kind, sub) == ("application", "fhir+json") and q > 0 for kind, sub, q in ranges):
        return None
    offers = (JSON, *MEDIA_TYPES)  # JSON first: it wins ties (``*/*``)
    best = max(offers, key=lambda o: (_quality(o, ranges), -offers.index(o)))
    if best == JSON or _quality(best, ranges) <= 0.0:
        return None
    return best


_renderer: ThreadPoolExecutor | None = None
_renderer_made = threading.Lock()


def _render_thread() -> ThreadPoolExecutor:
    """The one thread reports are rendered on (made with the first report)."""
    global _renderer
    with _renderer_made:
        if _renderer is None:
            _renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="report-render")
        return _renderer


async def report_response(result: DiagnoseResult, media_type: str, *, ecg: int | None,
                          highlight: int | None) -> Response:
    """The rendered report of ``result`` as the response (rendered in a worker thread)."""
    from app.report.html import content_security_policy
    from app.report.render import render  # matplotlib is loaded on the first report, not at start

    rendered = await asyncio.get_running_loop().run_in_executor(
        _render_thread(), functools.partial(render, result, media_type, ecg_index=ecg, highlight=highlight))
    headers = {"Server-Timing": f"render;dur={rendered.seconds * 1000:.1f}", "Vary": "Accept"}
    if media_type == HTML:
        headers["Content-Security-Policy"] = content_security_policy() + FRAME_ANCESTORS
    if media_type in (PDF, PNG, SVG):
        suffix = {PDF: "pdf", PNG: "png", SVG: "svg"}[media_type]
        which = "" if ecg is None else f"-ecg{ecg}"
        headers["Content-Disposition"] = f'inline; filename="ecg-report-{result.request_id}{which}.{suffix}"'
    return Response(rendered.content, media_type=media_type, headers=headers)
