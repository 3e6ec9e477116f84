"""The report's media types and the one rule about them that needs no rendering (importable
without matplotlib: the API checks a request before it is scored)."""

from __future__ import annotations

from app.errors import InvalidInput

HTML = "text/html"
PDF = "application/pdf"
SVG = "image/svg+xml"
PNG = "image/png"
MEDIA_TYPES = (HTML, PDF, SVG, PNG)
PLOT_ONLY = (SVG, PNG)  # the printout of one ECG


def check_report_request(media_type: str, ecgs: int, ecg_index: int | None) -> None:
    """``ecg_index`` names an ECG of the request; the printout alone (SVG, PNG) shows one ECG, so
    a request with several must name it."""
    if ecg_index is not None and not 0 <= ecg_index < ecgs:
        raise InvalidInput(f"ecg={ecg_index} is not an ECG of this request: it has {ecgs} (numbered from 0)",
                           details={"ecg": ecg_index, "ecgs": ecgs})
    if media_type in PLOT_ONLY and ecgs > 1 and ecg_index is None:
        raise InvalidInput(f"{media_type} shows one ECG and this request has {ecgs}: choose one with the query "
                           f"parameter ecg=0..{ecgs - 1}, or ask for text/html or application/pdf (every ECG)",
                           details={"ecgs": ecgs})
