"""The printout (app/report/plot.py) read back from its SVG with xml.etree: the standard layout,
its scales in real millimetres (SVG user units are pt: 1 mm = 72 / 25.4 pt), the calibration
pulses, the shaded evidence at its times, the UNTRAINED banner; and the PNG's size and resolution."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from app.report import paper
from app.report.plot import inline_svg, tracing_png, tracing_svg

from .results import (
    LEADS,
    PT_PER_MM,
    by_id,
    diagnose_result,
    diagnosis,
    ecg_result,
    parse_svg,
    points,
    size_mm,
    t_of_x,
    text_of,
    texts,
)

MM_TOL = 0.05  # drawing tolerance in mm (the SVG writes 6 decimals of a pt)
S_TOL = 0.005  # seconds


@pytest.fixture(scope="module")
def result():  # type: ignore[no-untyped-def]
    return diagnose_result(ecg_result("E07500"))


@pytest.fixture(scope="module")
def svg(result) -> str:  # type: ignore[no-untyped-def]
    return tracing_svg(result, result.results[0])


@pytest.fixture(scope="module")
def ids(svg: str):  # type: ignore[no-untyped-def]
    return by_id(parse_svg(svg))


def test_the_page_is_a4_landscape_in_real_millimetres(svg: str) -> None:
    root = parse_svg(svg)
    w, h = size_mm(root)
    assert w == pytest.approx(paper.PAGE_W_MM, abs=1e-4) and h == pytest.approx(paper.PAGE_H_MM, abs=1e-4)
    assert root.attrib["viewBox"].split() == ["0", "0", *(root.attrib[k][:-2] for k in ("width", "height"))]


def test_twelve_lead_traces_in_three_rows_of_four_columns_and_a_lead_ii_rhythm_strip(ids) -> None:  # type: ignore[no-untyped-def]
    for lead in LEADS:
        assert f"trace-{lead}" in ids, lead
        assert f"lead-label-{lead}" in ids, lead
    assert "rhythm-II" in ids and "lead-label-rhythm-II" in ids
    assert "grid-minor" in ids and "grid-major" in ids
    x0 = points(ids["rhythm-II"])[0, 0]
    rows: dict[float, list[str]] = {}
    for column, leads in enumerate(paper.COLUMNS):
        for lead in leads:
            xy = points(ids[f"trace-{lead}"])
            # each column shows its 2.5 s at the time positions of a printout: the same instants as
            # the rhythm strip below it
            assert t_of_x(xy[0, 0], x0) == pytest.approx(column * 2.5, abs=S_TOL), lead
            assert t_of_x(xy[-1, 0], x0) == pytest.approx((column + 1) * 2.5, abs=S_TOL), lead
            rows.setdefault(round(float(np.median(xy[:, 1])) / PT_PER_MM / paper.ROW_PITCH_MM), []).append(lead)
    assert sorted(rows.values()) == sorted([["I", "aVR", "V1", "V4"], ["II", "aVL", "V2", "V5"],
                                            ["III", "aVF", "V3", "V6"]])


def test_the_horizontal_scale_is_25_mm_per_second(result, ids) -> None:  # type: ignore[no-untyped-def]
    tracing = result.results[0].tracing
    xy = points(ids["rhythm-II"])
    span_mm = (xy[-1, 0] - xy[0, 0]) / PT_PER_MM
    seconds = (min(tracing.signals.shape[1], 5001) - 1) / tracing.fs  # 10 s of samples
    assert span_mm == pytest.approx(seconds * 25.0, abs=MM_TOL)
    # the signal starts 10 mm into the row, after the calibration pulse's room
    grid_left = points(ids["grid-border"])[:, 0].min()
    assert (xy[0, 0] - grid_left) / PT_PER_MM == pytest.approx(paper.LEAD_IN_MM, abs=MM_TOL)


def test_each_row_starts_with_a_1_mv_200_ms_calibration_pulse_10_mm_tall(ids) -> None:  # type: ignore[no-untyped-def]
    grid_left = points(ids["grid-border"])[:, 0].min()
    for row in range(paper.ROWS):
        xy = points(ids[f"calibration-{row}"])
        height_mm = (xy[:, 1].max() - xy[:, 1].min()) / PT_PER_MM
        assert height_mm == pytest.approx(10.0, abs=MM_TOL), row
        top = xy[xy[:, 1] == xy[:, 1].min()]
        assert (top[:, 0].max() - top[:, 0].min()) / PT_PER_MM == pytest.approx(5.0, abs=MM_TOL), row  # 200 ms
        assert (xy[:, 0].max() - grid_left) / PT_PER_MM <= paper.LEAD_IN_MM  # before the signal starts


def test_the_vertical_scale_is_10_mm_per_millivolt() -> None:
    """A 1 mV-amplitude sine on every lead is drawn 20 mm peak to peak (its median removed)."""
    base = ecg_result("E07500")
    n = base.tracing.signals.shape[1]
    t = np.arange(n) / base.tracing.fs
    sine = np.tile(np.sin(2 * np.pi * 1.0 * t), (12, 1))
    result = diagnose_result(ecg_result("E07500", signals=sine))
    ids = by_id(parse_svg(tracing_svg(result, result.results[0])))
    for name in ("rhythm-II", *(f"trace-{lead}" for lead in LEADS)):
        ys = points(ids[name])[:, 1]
        assert (ys.max() - ys.min()) / PT_PER_MM == pytest.approx(20.0, abs=0.1), name


def test_the_grid_is_1_mm_minor_and_5_mm_major(ids) -> None:  # type: ignore[no-untyped-def]
    def vertical_xs(group: str) -> np.ndarray:
        xy = points(ids[group]).reshape(-1, 2, 2)
        return np.unique(np.round(xy[xy[:, 0, 0] == xy[:, 1, 0]][:, 0, 0] / PT_PER_MM, 3))

    major = vertical_xs("grid-major")
    assert np.allclose(np.diff(major), 5.0, atol=1e-3) and len(major) == 53  # 260 mm
    minor = np.sort(np.concatenate([vertical_xs("grid-minor"), major]))
    assert np.allclose(np.diff(minor), 1.0, atol=1e-3) and len(minor) == 261


def test_the_highlighted_diagnosis_evidence_is_shaded_hatched_and_labelled_at_its_times(result, svg: str,
                                                                                      ids) -> None:  # type: ignore[no-untyped-def]
    x0 = points(ids["rhythm-II"])[0, 0]
    top = result.results[0].diagnoses[0]
    for i, span in enumerate(top.evidence, start=1):
        rect = ids[f"evidence-1-{i}"]
        xy = points(rect)
        assert t_of_x(xy[:, 0].min(), x0) == pytest.approx(span.start_s, abs=S_TOL)
        assert t_of_x(xy[:, 0].max(), x0) == pytest.approx(span.end_s, abs=S_TOL)
        # over all four rows: the whole grid's height
        assert (xy[:, 1].max() - xy[:, 1].min()) / PT_PER_MM == pytest.approx(paper.GRID_H_MM, abs=MM_TOL)
        style = rect.find(".//{http://www.w3.org/2000/svg}path").attrib["style"]
        pattern = re.search(r"fill: url\(#(\w+)\)", style)
        assert pattern and pattern.group(1) in ids, style  # hatched (an SVG pattern), not only tinted
        assert f"evidence-tint-1-{i}" in ids
        assert text_of(ids[f"evidence-label-1-{i}"]) == f"E{i}"  # readable without colour
    caption = text_of(ids["evidence-caption-1"])
    assert "#1 sinus rhythm" in caption and "E1" in caption
    # only the highlighted diagnosis's evidence is drawn
    assert "evidence-1" in ids and "evidence-2" not in ids and "evidence-3" not in ids


def test_highlight_picks_the_diagnosis_and_all_evidence_draws_every_group(result) -> None:  # type: ignore[no-untyped-def]
    ecg = result.results[0]
    second = by_id(parse_svg(tracing_svg(result, ecg, highlight=2)))
    assert "evidence-2-1" in second and "evidence-1" not in second
    assert "#2 atrial fibrillation" in text_of(second["evidence-caption-2"])
    unknown = by_id(parse_svg(tracing_svg(result, ecg, highlight=99)))  # not returned: the top one
    assert "evidence-1" in unknown
    every = by_id(parse_svg(tracing_svg(result, ecg, all_evidence=True, id_prefix="ecg0-")))
    for d in ecg.diagnoses:
        assert f"ecg0-evidence-{d.rank}" in every
        assert {f"ecg0-evidence-{d.rank}-{i}" for i in range(1, len(d.evidence) + 1)} <= every.keys()
    assert "ecg0-trace-V6" in every and "trace-V6" not in every


def test_a_record_longer_than_10_s_plots_its_first_10_s_and_lists_the_spans_after_them() -> None:
    spans = [(12.0, 12.3125, 0.5), (9.6875, 10.3125, 0.3), (1.0, 1.3125, 0.2)]
    ecg = ecg_result("S0001", [diagnosis(1, spans)])  # 38.4 s at 1000 Hz
    assert ecg.source.duration_s > 30
    result = diagnose_result(ecg)
    root = parse_svg(tracing_svg(result, ecg))
    ids = by_id(root)
    xy = points(ids["rhythm-II"])
    x0 = xy[0, 0]
    assert t_of_x(xy[-1, 0], x0) == pytest.approx(10.0, abs=S_TOL)
    assert "evidence-1-1" not in ids  # 12.0-12.3 s: not on the page
    clipped = points(ids["evidence-1-2"])
    assert t_of_x(clipped[:, 0].min(), x0) == pytest.approx(9.6875, abs=S_TOL)
    assert t_of_x(clipped[:, 0].max(), x0) == pytest.approx(10.0, abs=S_TOL)  # drawn up to the page's end
    assert text_of(ids["evidence-label-1-2"]) == "E2\u2192"
    assert "evidence-1-3" in ids
    legend = text_of(ids["evidence-legend-1"])
    assert "after the plotted first 10 s" in legend and "E1 12.00\u201312.31 s" in legend
    assert "its first 10 s are plotted" in text_of(ids["scale-note"])


def test_the_untrained_banner_is_on_the_page_only_for_an_untrained_model() -> None:
    untrained = diagnose_result(ecg_result("E07500"), untrained=True)
    ids = by_id(parse_svg(tracing_svg(untrained, untrained.results[0])))
    assert "UNTRAINED" in text_of(ids["untrained-banner"])
    assert "untrained-watermark" in ids
    trained = diagnose_result(ecg_result("E07500"), untrained=False)
    root = parse_svg(tracing_svg(trained, trained.results[0]))
    assert "untrained-banner" not in by_id(root) and "UNTRAINED" not in texts(root)


def test_derived_leads_are_marked() -> None:
    ecg = ecg_result("E07500")
    from dataclasses import replace

    ecg = replace(ecg, source=replace(ecg.source, derived_leads=("III", "aVR")))
    ids = by_id(parse_svg(tracing_svg(diagnose_result(ecg), ecg)))
    assert text_of(ids["lead-label-III"]) == "III*"
    assert text_of(ids["lead-label-I"]) == "I"
    assert "derived" in text_of(ids["scale-note"])


def test_the_inline_form_has_no_url_and_stays_the_same_drawing(result, svg: str) -> None:  # type: ignore[no-untyped-def]
    inline = inline_svg(svg)
    assert "http" not in inline and "<?xml" not in inline and "<!DOCTYPE" not in inline
    assert inline.lstrip().startswith("<svg")
    # the same elements, once the SVG namespace is declared again
    again = by_id(parse_svg(inline.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)))
    assert again.keys() == by_id(parse_svg(svg)).keys()


def test_png_is_the_a4_page_at_150_dpi(result) -> None:  # type: ignore[no-untyped-def]
    png = tracing_png(result, result.results[0])
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    width, height = image.size  # whole pixels of 297 x 210 mm at 150 dpi
    assert abs(width - 297 / 25.4 * 150) < 1 and abs(height - 210 / 25.4 * 150) < 1, image.size
    assert image.info["dpi"][0] == pytest.approx(150, abs=0.1)
    colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # a drawing, not a blank page


def test_a_result_without_a_tracing_is_refused_clearly(result) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    bare = replace(result.results[0], tracing=None)
    with pytest.raises(ValueError, match="keep_tracing"):
        tracing_svg(result, bare)
