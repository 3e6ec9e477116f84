"""The PDF report (app/report/pdf.py ``report_pdf``) opened by poppler: ``pdftoppm`` renders every
page (printout pages A4 landscape, text pages A4 portrait, none blank) and ``pdftotext`` finds
the diagnoses, their knowledge, the versions, the intended use and the UNTRAINED banner.
poppler-utils is installed by scripts/setup.sh (as root); without it these tests are skipped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from app.errors import InvalidInput
from app.report.pdf import report_pdf
from app.usecases.explain import INTENDED_USE

from .results import diagnose_result, diagnosis, ecg_result


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} (poppler-utils) is not installed; scripts/setup.sh installs it as root")
    return found


def render_pages(pdf: bytes, folder: Path) -> list[Image.Image]:
    """Every page of ``pdf`` as an image, by poppler's pdftoppm (it fails on a broken PDF)."""
    source = folder / "report.pdf"
    source.write_bytes(pdf)
    subprocess.run([_tool("pdftoppm"), "-r", "40", "-png", str(source), str(folder / "page")], check=True,
                   capture_output=True, timeout=120)
    return [Image.open(p) for p in sorted(folder.glob("page-*.png"))]


def pdf_text(pdf: bytes, folder: Path) -> str:
    source = folder / "text.pdf"
    source.write_bytes(pdf)
    out = subprocess.run([_tool("pdftotext"), "-layout", str(source), "-"], check=True, capture_output=True,
                         timeout=120)
    return " ".join(out.stdout.decode("utf-8").split())


def _not_blank(image: Image.Image) -> bool:
    low, high = image.convert("L").getextrema()
    return high - low > 100


def test_the_pdf_opens_with_a_printout_page_then_text_pages(tmp_path: Path) -> None:
    result = diagnose_result(ecg_result("E07500"))
    pdf = report_pdf(result)
    assert pdf.startswith(b"%PDF-")
    pages = render_pages(pdf, tmp_path)
    assert len(pages) >= 2
    printout, *text_pages = pages
    assert printout.width > printout.height  # A4 landscape
    assert abs(printout.width / printout.height - 297 / 210) < 0.01
    for page in text_pages:
        assert page.height > page.width  # A4 portrait
    assert all(_not_blank(p) for p in pages)


def test_the_pdf_says_what_the_report_says(tmp_path: Path) -> None:
    result = diagnose_result(ecg_result("E07500"))
    text = pdf_text(report_pdf(result), tmp_path)
    assert "UNTRAINED DEMO MODEL" in text
    for d in result.results[0].diagnoses:
        assert d.label in text and d.knowledge in text
    assert "report-test-1" in text and "0123abcd" in text  # model and label-set versions
    assert " ".join(INTENDED_USE.split()[:12]) in text
    assert "Lead evidence" in text and "25 mm/s, 10 mm/mV" in text
    trained = pdf_text(report_pdf(diagnose_result(ecg_result("E07500"), untrained=False)), tmp_path)
    assert "UNTRAINED" not in trained


def test_every_ecg_or_the_one_asked_for(tmp_path: Path) -> None:
    result = diagnose_result(ecg_result("E07500"), ecg_result("A0001", [diagnosis(1, [(14.0, 14.3, 0.9)])]))
    both = tmp_path / "both"
    both.mkdir()
    assert len(render_pages(report_pdf(result), both)) >= 3  # two printouts, then text
    one = tmp_path / "one"
    one.mkdir()
    text = pdf_text(report_pdf(result, ecg_index=1), one)
    assert "A0001" in text and "E07500" not in text
    assert "after the plotted first 10 s" in text  # A0001 lasts 15 s; its span at 14 s is listed
    with pytest.raises(InvalidInput):
        report_pdf(result, ecg_index=2)


def test_a_long_report_continues_on_more_text_pages(tmp_path: Path) -> None:
    many = [diagnosis(r, [(1.0, 1.3, 0.5)], label=f"diagnosis number {r}") for r in range(1, 41)]
    result = diagnose_result(ecg_result("E07500", many))
    pages = render_pages(report_pdf(result), tmp_path)
    assert len(pages) >= 4
    text = pdf_text(report_pdf(result), tmp_path)
    assert "diagnosis number 40" in text and f"page {len(pages)} of {len(pages)}" in text
