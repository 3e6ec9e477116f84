"""The HTML report (app/report/html.py): self-contained (no URL of any kind, one inline script
allowed by its hash), every diagnosis's evidence group in the SVG with CSS showing the selected
one, the knowledge, the lead evidence, versions, intended use and the UNTRAINED banner; text
from the result escaped."""

from __future__ import annotations

import base64
import hashlib
import re
from collections import Counter
from html.parser import HTMLParser

import pytest

from app.errors import InvalidInput
from app.report.html import CONTENT_SECURITY_POLICY, report_html
from app.report.script import SELECT_SCRIPT
from app.usecases.explain import INTENDED_USE

from .results import diagnose_result, diagnosis, ecg_result


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.attributes: list[tuple[str, str, str | None]] = []  # (tag, name, value)
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes += [(tag, k, v) for k, v in attrs]
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def collect(page: str) -> _Collect:
    parser = _Collect()
    parser.feed(page)
    return parser


@pytest.fixture(scope="module")
def result():  # type: ignore[no-untyped-def]
    return diagnose_result(ecg_result("E07500"))


@pytest.fixture(scope="module")
def page(result) -> str:  # type: ignore[no-untyped-def]
    return report_html(result)


def test_the_report_refers_to_no_other_host_and_loads_nothing(page: str) -> None:
    assert re.search(r"https?:", page, re.I) is None
    assert "//" not in re.sub(r"<script>.*?</script>", "", page, flags=re.S)  # no protocol-relative URL either
    parsed = collect(page)
    linking = [(tag, name, value) for tag, name, value in parsed.attributes
               if name in ("src", "href", "xlink:href", "srcset", "action", "formaction", "poster", "data")]
    assert linking == [], linking
    assert "@import" not in page and "url(" not in page.replace("url(#", "")  # CSS loads nothing either


def test_its_one_inline_script_is_the_one_its_policy_allows(page: str) -> None:
    parsed = collect(page)
    assert parsed.scripts == [SELECT_SCRIPT]
    digest = base64.b64encode(hashlib.sha256(SELECT_SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY and "unsafe-eval" not in CONTENT_SECURITY_POLICY
    meta = [v for t, k, v in parsed.attributes if t == "meta" and k == "content" and v and "default-src" in v]
    assert meta == [CONTENT_SECURITY_POLICY]
    assert not [k for _t, k, _v in parsed.attributes if k.startswith("on")]  # no inline event handlers


def test_it_shows_the_plot_the_ranked_diagnoses_and_what_they_mean(result, page: str) -> None:  # type: ignore[no-untyped-def]
    ecg = result.results[0]
    assert page.count("<svg") == 1
    for lead in ("I", "aVR", "V6"):
        assert f'id="ecg0-trace-{lead}"' in page
    assert 'id="ecg0-rhythm-II"' in page
    for d in ecg.diagnoses:
        assert f'data-rank="{d.rank}"' in page and f'id="ecg0-evidence-{d.rank}"' in page
        assert f'id="ecg0-detail-{d.rank}"' in page and d.knowledge in page
        assert f"{100 * d.probability:.1f} %" in page
        # CSS shows this diagnosis's evidence group and details when it is the selected one
        assert f'#ecg0[data-selected="{d.rank}"] #ecg0-evidence-{d.rank}{{display:inline}}' in page
        assert f'#ecg0[data-selected="{d.rank}"] #ecg0-detail-{d.rank}{{display:block}}' in page
    assert 'data-selected="1"' in page  # the top one first
    pressed = re.findall(r'data-rank="(\d+)"[^>]*aria-pressed="(true|false)"', page)
    assert pressed == [("1", "true"), ("2", "false"), ("3", "false")]
    assert "Leads that drove it" in page and page.count("<tr><th scope='row'>") == 12 * len(ecg.diagnoses)


def test_highlight_chooses_the_first_selected_diagnosis(result) -> None:  # type: ignore[no-untyped-def]
    page = report_html(result, highlight=3)
    assert 'data-selected="3"' in page
    assert re.findall(r'data-rank="(\d+)"[^>]*aria-pressed="true"', page) == ["3"]


def test_versions_intended_use_and_the_untrained_banner(result, page: str) -> None:  # type: ignore[no-untyped-def]
    assert "report-test-1" in page and "0123abcd" in page and result.request_id in page
    assert page.count(INTENDED_USE) >= 1
    assert 'class="untrained"' in page and "UNTRAINED DEMO MODEL" in page
    trained = report_html(diagnose_result(ecg_result("E07500"), untrained=False))
    assert 'class="untrained"' not in trained and "UNTRAINED" not in trained


def test_without_lead_evidence_it_says_so() -> None:
    ecg = ecg_result("E07500", [diagnosis(1, [(1.0, 1.3, 0.5)], with_leads=False)])
    page = report_html(diagnose_result(ecg))
    assert "Lead evidence was not computed" in page and "<tr><th scope='row'>" not in page


def test_text_from_the_result_is_escaped() -> None:
    hostile = "<img src=x onerror=alert(1)>"
    ecg = ecg_result("E07500", [diagnosis(1, [(1.0, 1.3, 0.5)], label=hostile)])
    page = report_html(diagnose_result(ecg))
    assert hostile not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert not [k for _t, k, _v in collect(page).attributes if k.startswith("on")]


def test_several_ecgs_each_get_a_section_with_ids_of_their_own() -> None:
    result = diagnose_result(ecg_result("E07500"), ecg_result("A0001"))
    page = report_html(result)
    assert page.count('<section class="ecg"') == 2 and page.count("<svg") == 2
    ids = Counter(re.findall(r'\bid="([^"]+)"', page))
    assert [i for i, n in ids.items() if n > 1] == []
    one = report_html(result, ecg_index=1)
    assert one.count('<section class="ecg"') == 1 and 'id="ecg1"' in one and "A0001" in one
    with pytest.raises(InvalidInput, match="ecg=2"):
        report_html(result, ecg_index=2)


def test_a_result_without_a_tracing_still_reports_the_diagnoses() -> None:
    from dataclasses import replace

    ecg = replace(ecg_result("E07500"), tracing=None)
    page = report_html(diagnose_result(ecg))
    assert "<svg" not in page and "No tracing was kept" in page and "sinus rhythm" in page
