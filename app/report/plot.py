"""The ECG printout of one result, drawn with matplotlib's object API (a ``Figure``; no pyplot and
its global figure state), saved as SVG, PNG or a PDF page.

The layout is ``app.report.paper``'s: A4 landscape, 25 mm/s, 10 mm/mV, a 1 mm / 5 mm grid, a
1 mV x 200 ms calibration pulse at each row's start, 3 x 4 leads of 2.5 s and a 10 s lead II
rhythm strip. The highlighted diagnosis's evidence spans are shaded, hatched and labelled
(``E1``, ``E2`` ... heaviest first) at their times in the record, over all four rows; spans
after the plotted first 10 s are listed below the grid instead.

Every element a test or a script looks for has a stable SVG id (``set_gid``; ``id_prefix``
prepended): ``trace-I`` ... ``trace-V6``, ``rhythm-II``, ``calibration-0`` ... ``calibration-3``,
``lead-label-<lead>``, ``grid-minor``, ``grid-major``, ``untrained-banner``, and per diagnosis a
group ``evidence-<rank>`` holding its spans ``evidence-<rank>-<i>``, their labels
``evidence-label-<rank>-<i>``, the caption ``evidence-caption-<rank>`` and the legend
``evidence-legend-<rank>``. With ``all_evidence`` every diagnosis's group is drawn (the HTML
report shows one at a time); otherwise only the highlighted one's.

matplotlib is not thread-safe where it reads its global settings, so every render takes
``RENDER_LOCK`` (rendering is CPU work under the GIL anyway).
"""

from __future__ import annotations

import io
import re
import textwrap
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backend_bases import RendererBase
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from app.report import paper
from app.report.text import (
    DERIVED_NOTE,
    SCALE_NOTE,
    UNTRAINED_BANNER,
    delta_text,
    diagnosis_heading,
    driving_leads,
    ecg_facts,
    ecg_title,
    model_line,
    outside_note,
    placed_spans,
    selected_diagnosis,
    span_description,
    span_name,
)
from app.usecases.results import DiagnoseResult, EcgResult, RankedDiagnosis, Tracing

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType  # matplotlib >= 3.9 names the keys

RENDER_LOCK = threading.RLock()
PNG_DPI = 150

TRACE_COLOUR = "#000000"
MINOR_COLOUR = "#f4c7c7"
MAJOR_COLOUR = "#e48f8f"
SPAN_FACE = (0.0, 0.33, 0.72, 0.14)
SPAN_EDGE = (0.0, 0.27, 0.6, 0.8)
SPAN_HATCH = "/"
BANNER_FACE = "#b00000"
CAPTION_Y_MM = paper.GRID_BOTTOM_MM + paper.GRID_H_MM + 5.4  # page y of the highlighted diagnosis's caption
FONT = "DejaVu Sans"  # ships with matplotlib: the same metrics everywhere
_SVG_METADATA = {"Format": None, "Type": None, "Creator": None, "Date": None}
_PNG_METADATA = {"Software": None}


class _Group(Artist):
    """Children drawn inside one SVG ``<g id=...>`` (other renderers ignore the grouping)."""

    def __init__(self, gid: str, children: Sequence[Artist], zorder: float) -> None:
        super().__init__()
        self.set_gid(gid)
        self.set_zorder(zorder)
        self.children = list(children)

    def draw(self, renderer: RendererBase) -> None:
        if not self.get_visible():
            return
        renderer.open_group("evidence", gid=self.get_gid())
        for child in sorted(self.children, key=lambda a: a.get_zorder()):
            child.draw(renderer)
        renderer.close_group("evidence")


@contextmanager
def rendering() -> Iterator[None]:
    """The report's matplotlib settings, one render at a time."""
    # read from matplotlib's global rcParams while drawing and saving, hence the lock
    settings: dict[RcKeyType, object] = {
        "svg.fonttype": "none",  # text stays text (searchable, small), not glyph outlines
        "svg.hashsalt": "ecgfm-ked-report",  # stable clip-path and hatch ids
        "hatch.linewidth": 0.5,
        "pdf.fonttype": 3,  # subset Type 3 fonts: a third of the time of TrueType (42), text still extractable
        "path.simplify": True,
        "font.family": FONT,
    }
    with RENDER_LOCK, matplotlib.rc_context(settings):
        yield


def _display_signals(tracing: Tracing) -> dict[str, np.ndarray]:
    """Each lead's first 10 s in mV, its median over them removed (the printout's baseline)."""
    n = min(tracing.signals.shape[1], round(paper.PLOT_SECONDS * tracing.fs) + 1)
    shown = np.asarray(tracing.signals[:, :n], dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for lead, row in zip(tracing.leads, shown, strict=True):
        finite = row[np.isfinite(row)]
        out[lead] = row - (float(np.median(finite)) if finite.size else 0.0)
    return out


def _grid(ax: Axes, gid: str) -> None:
    def kept(extent: float, step: float, skip: float | None) -> list[float]:
        """Multiples of ``step`` up to ``extent``, less those on the ``skip`` lines."""
        return [float(v) for v in np.arange(0.0, extent + 1e-9, step)
                if skip is None or abs(v / skip - round(v / skip)) > 1e-6]

    def lines(step: float, skip: float | None) -> list[list[tuple[float, float]]]:
        return ([[(x, 0.0), (x, paper.GRID_H_MM)] for x in kept(paper.GRID_W_MM, step, skip)]
                + [[(0.0, y), (paper.GRID_W_MM, y)] for y in kept(paper.GRID_H_MM, step, skip)])

    minor = LineCollection(lines(paper.MINOR_MM, paper.MAJOR_MM), colors=MINOR_COLOUR, linewidths=0.3, zorder=0.5)
    major = LineCollection(lines(paper.MAJOR_MM, None), colors=MAJOR_COLOUR, linewidths=0.6, zorder=0.6)
    minor.set_gid(f"{gid}grid-minor")
    major.set_gid(f"{gid}grid-major")
    ax.add_collection(minor)
    ax.add_collection(major)


def _traces(ax: Axes, ecg: EcgResult, gid: str) -> None:
    tracing = ecg.tracing
    assert tracing is not None
    signals = _display_signals(tracing)
    derived = set(ecg.source.derived_leads)
    fs = tracing.fs
    for seg in paper.segments():
        rhythm = seg.row == paper.ROWS - 1
        signal = signals[seg.lead]
        first = round(seg.start_s * fs)
        last = min(len(signal) - 1, round(seg.end_s * fs))
        if last <= first:
            continue
        t = np.arange(first, last + 1) / fs
        x = paper.LEAD_IN_MM + t * paper.PAPER_SPEED_MM_PER_S
        y = paper.baseline_mm(seg.row) + signal[first:last + 1] * paper.GAIN_MM_PER_MV
        line = Line2D(x, y, color=TRACE_COLOUR, linewidth=0.75, solid_joinstyle="round", zorder=3)
        line.set_gid(f"{gid}rhythm-{seg.lead}" if rhythm else f"{gid}trace-{seg.lead}")
        ax.add_line(line)
        name = seg.lead + ("*" if seg.lead in derived else "")
        label = ax.text(paper.x_mm(seg.start_s) + 1.2, paper.baseline_mm(seg.row) + 14.0,
                        name + (" (rhythm)" if rhythm else ""), fontsize=8.5, fontweight="bold",
                        ha="left", va="bottom", zorder=4, color=TRACE_COLOUR)
        label.set_gid(f"{gid}lead-label-{'rhythm-' if rhythm else ''}{seg.lead}")
    # lead-change marks where one column's leads end and the next begin
    marks = [[(paper.x_mm(c * paper.COLUMN_SECONDS), paper.baseline_mm(r) - 3.0),
              (paper.x_mm(c * paper.COLUMN_SECONDS), paper.baseline_mm(r) + 3.0)]
             for c in range(1, len(paper.COLUMNS)) for r in range(len(paper.COLUMNS[0]))]
    changes = LineCollection(marks, colors=TRACE_COLOUR, linewidths=0.9, zorder=3)
    changes.set_gid(f"{gid}lead-changes")
    ax.add_collection(changes)


def _calibration(ax: Axes, gid: str) -> None:
    for row in range(paper.ROWS):
        xs, ys = paper.calibration_points(row)
        pulse = Line2D(xs, ys, color=TRACE_COLOUR, linewidth=0.9, zorder=3, solid_joinstyle="miter")
        pulse.set_gid(f"{gid}calibration-{row}")
        ax.add_line(pulse)


def _evidence_group(fig: Figure, ax: Axes, d: RankedDiagnosis, gid: str) -> _Group:
    children: list[Artist] = []
    for p in placed_spans(d):
        if p.shown_to_s is None:
            continue
        x0, x1 = paper.x_mm(p.span.start_s), paper.x_mm(p.shown_to_s)
        # the tint, and over it the outline and hatching (one patch would fade the hatching with the tint)
        tint = Rectangle((x0, 0.0), x1 - x0, paper.GRID_H_MM, facecolor=SPAN_FACE, edgecolor="none",
                         transform=ax.transData, zorder=1.9)
        tint.set_gid(f"{gid}evidence-tint-{d.rank}-{p.index}")
        rect = Rectangle((x0, 0.0), x1 - x0, paper.GRID_H_MM, facecolor="none", edgecolor=SPAN_EDGE,
                         linewidth=0.6, hatch=SPAN_HATCH, transform=ax.transData, zorder=2)
        rect.set_gid(f"{gid}evidence-{d.rank}-{p.index}")
        children.append(tint)
        label = Text((x0 + x1) / 2, paper.GRID_H_MM + 0.6, span_name(p.index) + ("\u2192" if p.clipped else ""),
                     fontsize=7, fontweight="bold", ha="center", va="bottom", color=SPAN_EDGE,
                     transform=ax.transData, zorder=2)
        label.set_gid(f"{gid}evidence-label-{d.rank}-{p.index}")
        children += [rect, label]
    leads = driving_leads(d)
    if d.lead_effects is None:
        lead_text = "lead evidence not computed"
    elif leads:
        lead_text = "leads that drove it: " + ", ".join(f"{e.lead} ({delta_text(e)})" for e in leads)
    else:
        lead_text = "no lead lowered its probability when masked"
    spans = f"evidence {span_name(1)}\u2013{span_name(len(d.evidence))} shaded" if d.evidence else "no evidence spans"
    caption = _page_text(fig, paper.GRID_LEFT_MM, CAPTION_Y_MM,
                         f"Highlighted: {diagnosis_heading(d)} ({spans}; {lead_text})", size=8.5, weight="bold")
    caption.set_gid(f"{gid}evidence-caption-{d.rank}")
    legend_lines = ["Evidence for " + diagnosis_heading(d) + ": "
                    + ("; ".join(span_description(p) for p in placed_spans(d)) or "none")]
    note = outside_note(d)
    if note:
        legend_lines.append(note)
    legend = _page_text(fig, paper.GRID_LEFT_MM, paper.GRID_BOTTOM_MM - 9.0,
                        "\n".join(_wrap(line, 190) for line in legend_lines), size=6.8, va="top")
    legend.set_gid(f"{gid}evidence-legend-{d.rank}")
    children += [caption, legend]
    for child in children:
        child.set_figure(fig)
    return _Group(f"{gid}evidence-{d.rank}", children, zorder=2)


def _wrap(text: str, width: int, max_lines: int = 2) -> str:
    return "\n".join(textwrap.wrap(text, width, max_lines=max_lines, placeholder=" \u2026"))


def _page_text(fig: Figure, x_mm: float, y_mm: float, text: str, *, size: float = 7.5, weight: str = "normal",
               va: str = "baseline", ha: str = "left", colour: str = TRACE_COLOUR) -> Text:
    return Text(x_mm / paper.PAGE_W_MM, y_mm / paper.PAGE_H_MM, text, fontsize=size, fontweight=weight,
                va=va, ha=ha, color=colour, transform=fig.transFigure, linespacing=1.25)


def tracing_figure(result: DiagnoseResult, ecg: EcgResult, *, highlight: int | None = None,
                   all_evidence: bool = False, id_prefix: str = "") -> Figure:
    """The printout page of ``ecg`` (one of ``result``'s) as a matplotlib Figure, A4 landscape."""
    if ecg.tracing is None:
        raise ValueError("this result kept no tracing: score with DiagnoseOptions(keep_tracing=True)")
    fig = Figure(figsize=paper.page_size_inches(), dpi=72, facecolor="white")
    ax = fig.add_axes(paper.grid_rect())
    ax.set_xlim(0.0, paper.GRID_W_MM)
    ax.set_ylim(0.0, paper.GRID_H_MM)
    ax.set_axis_off()
    _grid(ax, id_prefix)
    border = Rectangle((0.0, 0.0), paper.GRID_W_MM, paper.GRID_H_MM, fill=False, edgecolor=MAJOR_COLOUR,
                       linewidth=0.8, zorder=0.7)
    border.set_gid(f"{id_prefix}grid-border")
    ax.add_patch(border)
    _calibration(ax, id_prefix)
    _traces(ax, ecg, id_prefix)

    top = paper.PAGE_H_MM
    if result.model.untrained:
        banner = _page_text(fig, paper.PAGE_W_MM / 2, top - 4.6, UNTRAINED_BANNER.upper(), size=10, weight="bold",
                            ha="center", va="center", colour="white")
        banner.set_bbox({"boxstyle": "square,pad=0.35", "facecolor": BANNER_FACE, "edgecolor": "black",
                         "linewidth": 1.2})
        banner.set_gid(f"{id_prefix}untrained-banner")
        fig.add_artist(banner)
        watermark = ax.text(paper.GRID_W_MM / 2, paper.GRID_H_MM / 2, "UNTRAINED", fontsize=72, fontweight="bold",
                            color=(0.7, 0.0, 0.0, 0.10), ha="center", va="center", rotation=18, zorder=1)
        watermark.set_gid(f"{id_prefix}untrained-watermark")
    title = _page_text(fig, paper.GRID_LEFT_MM, top - 11.7,
                       f"{ecg_title(ecg)}   ({ecg_facts(ecg)})", size=10, weight="bold")
    title.set_gid(f"{id_prefix}page-title")
    fig.add_artist(title)
    fig.add_artist(_page_text(fig, paper.GRID_LEFT_MM, top - 15.8, model_line(result), size=7))

    chosen = selected_diagnosis(ecg, highlight)
    drawn = list(ecg.diagnoses) if all_evidence else ([chosen] if chosen is not None else [])
    for d in drawn:
        ax.add_artist(_evidence_group(fig, ax, d, id_prefix))
    if chosen is None:
        fig.add_artist(_page_text(fig, paper.GRID_LEFT_MM, CAPTION_Y_MM,
                                  "No diagnosis above the threshold: nothing highlighted", size=8.5))

    derived = f"; {DERIVED_NOTE}" if ecg.source.derived_leads else ""
    longer = (f"; the record lasts {ecg.source.duration_s:g} s: its first {paper.PLOT_SECONDS:g} s are plotted"
              if ecg.source.duration_s > paper.PLOT_SECONDS + 1e-6 else "")
    scale = _page_text(fig, paper.GRID_LEFT_MM, paper.GRID_BOTTOM_MM - 4.6, SCALE_NOTE + derived + longer, size=7)
    scale.set_gid(f"{id_prefix}scale-note")
    fig.add_artist(scale)
    fig.add_artist(_page_text(fig, paper.GRID_LEFT_MM, 3.5, _wrap(result.intended_use, 200), size=6.3,
                              va="bottom"))
    return fig


def _svg(fig: Figure, title: str) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={**_SVG_METADATA, "Title": title})
    return buffer.getvalue()


_PROLOG = re.compile(r"^\s*<\?xml[^>]*\?>\s*<!DOCTYPE[^>]*>\s*", re.S)
_NAMESPACES = re.compile(r'\s+xmlns(:xlink)?="[^"]*"')
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)


_ID = re.compile(r'\bid="([^"]+)"')


def inline_svg(svg: str, id_prefix: str = "") -> str:
    """An SVG document as an element for an HTML page: no XML prolog or DOCTYPE, no RDF metadata,
    no namespace declarations (HTML knows ``<svg>``; they would be the page's only URLs). With
    ``id_prefix``, matplotlib's own ids (``figure_1``, clip paths, hatch patterns) get it too, and
    the references to them, so several drawings share one page without a duplicate id."""
    head_end = svg.index(">", svg.index("<svg"))
    head = _NAMESPACES.sub("", svg[:head_end])
    out = _METADATA.sub("", _PROLOG.sub("", head) + svg[head_end:], count=1)
    if id_prefix:
        own = {i for i in _ID.findall(out) if not i.startswith(id_prefix)}
        out = _ID.sub(lambda m: f'id="{id_prefix}{m.group(1)}"' if m.group(1) in own else m.group(0), out)
        out = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{id_prefix}{m.group(1)})" if m.group(1) in own
                     else m.group(0), out)
    return out


def tracing_svg(result: DiagnoseResult, ecg: EcgResult, *, highlight: int | None = None, all_evidence: bool = False,
                id_prefix: str = "") -> str:
    """The printout as a standalone SVG document (pt units: 841.9 x 595.3 pt = 297 x 210 mm)."""
    with rendering():
        fig = tracing_figure(result, ecg, highlight=highlight, all_evidence=all_evidence, id_prefix=id_prefix)
        return _svg(fig, ecg_title(ecg))


def tracing_png(result: DiagnoseResult, ecg: EcgResult, *, highlight: int | None = None, dpi: int = PNG_DPI) -> bytes:
    """The printout as a PNG at ``dpi`` (stated in the file, so it prints at 25 mm/s)."""
    with rendering():
        fig = tracing_figure(result, ecg, highlight=highlight)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, metadata=_PNG_METADATA)
        return buffer.getvalue()
