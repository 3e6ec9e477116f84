"""The printed ECG layout, in millimetres of paper (no drawing here: ``app.report.plot`` draws it).

An A4 landscape page (297 x 210 mm) holding the standard 12-lead printout: a grid of 260 x 160 mm,
four rows of 40 mm. Rows 1-3 hold four columns of 2.5 s (I, II, III | aVR, aVL, aVF | V1, V2, V3 |
V4, V5, V6): each column shows its three leads over the same 2.5 s of the record, at the time
positions a real printout gives them, so a vertical line crosses every lead at one instant. Row 4
is a 10 s lead II rhythm strip. Each row starts with a 1 mV x 200 ms calibration pulse (10 mm x
5 mm) in the first 10 mm; the signal starts at 10 mm. Scales: 25 mm/s, 10 mm/mV, exactly: the
figure is made the page's size in inches and the grid's axes placed in millimetres, so 1 mm of
paper is 1 mm of the SVG, PDF and PNG (at its stated resolution).
"""

from __future__ import annotations

from dataclasses import dataclass

MM_PER_INCH = 25.4
PT_PER_MM = 72.0 / MM_PER_INCH

PAPER_SPEED_MM_PER_S = 25.0
GAIN_MM_PER_MV = 10.0

PAGE_W_MM = 297.0
PAGE_H_MM = 210.0
GRID_LEFT_MM = 18.5  # page x of the grid's left edge
GRID_BOTTOM_MM = 24.0  # page y (from the bottom) of the grid's lower edge
LEAD_IN_MM = 10.0  # the calibration pulse's room at each row's start; t = 0 s is at x = LEAD_IN_MM
PLOT_SECONDS = 10.0  # what one page shows of a record (its first 10 s)
COLUMN_SECONDS = 2.5
ROW_PITCH_MM = 40.0
ROWS = 4
GRID_W_MM = LEAD_IN_MM + PLOT_SECONDS * PAPER_SPEED_MM_PER_S  # 260
GRID_H_MM = ROWS * ROW_PITCH_MM  # 160
MINOR_MM = 1.0
MAJOR_MM = 5.0

CALIBRATION_MV = 1.0
CALIBRATION_S = 0.2
CALIBRATION_START_MM = 2.5  # the pulse's rising edge, grid x

# columns of the 3 x 4 part, each top to bottom
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6"),
)
RHYTHM_LEAD = "II"


@dataclass(frozen=True)
class Segment:
    """One lead's stretch of the printout: its row and its time span in the record."""

    lead: str
    row: int  # 0 = top
    start_s: float
    end_s: float


def baseline_mm(row: int) -> float:
    """Grid y (from the grid's lower edge) of a row's 0 mV line: the middle of its 40 mm band."""
    return GRID_H_MM - (row + 0.5) * ROW_PITCH_MM


def x_mm(t_s: float) -> float:
    """Grid x of the instant ``t_s`` (seconds from the record's start)."""
    return LEAD_IN_MM + t_s * PAPER_SPEED_MM_PER_S


def y_mm(row: int, mv: float) -> float:
    return baseline_mm(row) + mv * GAIN_MM_PER_MV


def segments() -> tuple[Segment, ...]:
    """The 12 lead segments of rows 1-3 and the rhythm strip (last)."""
    found = [Segment(lead, row, c * COLUMN_SECONDS, (c + 1) * COLUMN_SECONDS)
             for c, column in enumerate(COLUMNS) for row, lead in enumerate(column)]
    found.append(Segment(RHYTHM_LEAD, len(COLUMNS[0]), 0.0, PLOT_SECONDS))
    return tuple(found)


def calibration_points(row: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The calibration pulse of ``row`` as a polyline (grid x, grid y): 1 mV tall, 200 ms wide."""
    b = baseline_mm(row)
    top = b + CALIBRATION_MV * GAIN_MM_PER_MV
    x0 = CALIBRATION_START_MM
    x1 = x0 + CALIBRATION_S * PAPER_SPEED_MM_PER_S
    return (0.5, x0, x0, x1, x1, LEAD_IN_MM - 0.5), (b, b, top, top, b, b)


def page_fraction(x_page_mm: float, y_page_mm: float, w_mm: float, h_mm: float) -> tuple[float, float, float, float]:
    """A rectangle of the page (mm, y from the bottom) as figure fractions for ``Figure.add_axes``."""
    return x_page_mm / PAGE_W_MM, y_page_mm / PAGE_H_MM, w_mm / PAGE_W_MM, h_mm / PAGE_H_MM


def grid_rect() -> tuple[float, float, float, float]:
    return page_fraction(GRID_LEFT_MM, GRID_BOTTOM_MM, GRID_W_MM, GRID_H_MM)


def page_size_inches() -> tuple[float, float]:
    return PAGE_W_MM / MM_PER_INCH, PAGE_H_MM / MM_PER_INCH
