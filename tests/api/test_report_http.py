"""POST /diagnose answering with the report, and GET /, through the real app (ASGI, the session's
small untrained bundle): each report ``Accept`` type gets its content type while JSON stays the
default; the shaded evidence of the SVG sits at the evidence times of the JSON answer to the same
request; the UNTRAINED banner; one ECG for SVG/PNG; the policies of the page and the HTML report."""

from __future__ import annotations

import io
import re

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api.report_response import report_type
from tests.report.results import by_id, parse_svg, points, t_of_x, text_of

from .helpers import assert_error, record_files, upload

HTML, PDF, SVG, PNG = "text/html", "application/pdf", "image/svg+xml", "image/png"
S_TOL = 0.005  # seconds: the drawing is exact to a few micro-metres of paper


def _post(client: TestClient, accept: str | None, *records: str, **params: object):  # type: ignore[no-untyped-def]
    files = upload(*(p for r in (records or ("E07500",)) for p in record_files(r)))
    headers = {"accept": accept} if accept is not None else {}
    return client.post("/diagnose", files=files, headers=headers, params=params)


@pytest.mark.parametrize("accept", [None, "", "*/*", "application/json", "application/json, text/html",
                                    "text/plain", "image/gif"])
def test_json_stays_the_default(client: TestClient, accept: str | None) -> None:
    r = _post(client, accept)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-type"] == "application/json"
    assert r.json()["results"][0]["diagnoses"]


def test_fhir_is_still_fhir(client: TestClient) -> None:
    r = _post(client, "application/fhir+json, text/html;q=0.9")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")


@pytest.mark.parametrize(("accept", "media_type"), [
    (HTML, HTML), (PDF, PDF), (SVG, SVG), (PNG, PNG),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", HTML),  # what a browser sends
    ("application/json;q=0.5, application/pdf", PDF),
])
def test_each_report_type_answers_with_its_content_type(client: TestClient, accept: str, media_type: str) -> None:
    r = _post(client, accept)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-type"].split(";")[0] == media_type
    assert re.fullmatch(r"render;dur=\d+(\.\d)?", r.headers["server-timing"])
    body = r.content
    if media_type == HTML:
        assert body.startswith(b"<!DOCTYPE html>") and b"ecg0-rhythm-II" in body
        assert re.search(rb"https?:", body) is None
    elif media_type == PDF:
        assert body.startswith(b"%PDF-")
    elif media_type == SVG:
        assert len(by_id(parse_svg(body)).keys() & {"trace-I", "trace-V6", "rhythm-II"}) == 3
    else:
        image = Image.open(io.BytesIO(body))
        assert image.format == "PNG" and image.width > image.height


def test_the_shaded_spans_sit_at_the_evidence_times_of_the_json_answer(client: TestClient) -> None:
    answer = _post(client, None, top_k=3).json()["results"][0]
    for d in answer["diagnoses"]:
        r = _post(client, SVG, top_k=3, highlight=d["rank"])
        assert r.status_code == 200
        ids = by_id(parse_svg(r.content))
        x0 = points(ids["rhythm-II"])[0, 0]
        assert d["evidence"], d
        for i, span in enumerate(d["evidence"], start=1):
            xy = points(ids[f"evidence-{d['rank']}-{i}"])
            assert t_of_x(xy[:, 0].min(), x0) == pytest.approx(span["start_s"], abs=S_TOL), (d["rank"], i)
            assert t_of_x(xy[:, 0].max(), x0) == pytest.approx(min(span["end_s"], 10.0), abs=S_TOL), (d["rank"], i)
        assert f"#{d['rank']} {d['label']}" in text_of(ids[f"evidence-caption-{d['rank']}"])


def test_the_report_carries_the_untrained_banner_versions_and_lead_evidence(client: TestClient) -> None:
    answer = _post(client, None).json()
    assert answer["model"]["untrained"] is True
    ids = by_id(parse_svg(_post(client, SVG).content))
    assert "UNTRAINED" in text_of(ids["untrained-banner"])
    page = _post(client, HTML).text
    assert 'class="untrained"' in page
    assert answer["model"]["version"] in page and answer["label_set"]["version"] in page
    assert "Leads that drove it" in page
    # the route asks for lead evidence for a report: each diagnosis has a row per lead
    assert page.count("<tr><th scope='row'>") == 12 * len(answer["results"][0]["diagnoses"])


def test_the_html_report_is_sent_with_its_content_security_policy(client: TestClient) -> None:
    r = _post(client, HTML)
    policy = r.headers["content-security-policy"]
    assert "default-src 'none'" in policy and re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'", policy)
    assert "unsafe-eval" not in policy and "frame-ancestors 'self'" in policy
    pdf = _post(client, PDF)
    assert pdf.headers["content-disposition"].startswith('inline; filename="ecg-report-')


def test_svg_and_png_show_one_ecg_so_a_request_with_several_names_it(client: TestClient) -> None:
    for media_type in (SVG, PNG):
        err = assert_error(_post(client, media_type, "E07500", "A0001"), 400, "invalid_input")
        assert "ecg=0..1" in err["message"] and err["details"] == {"ecgs": 2}
        r = _post(client, media_type, "E07500", "A0001", ecg=1)
        assert r.status_code == 200 and r.headers["content-type"] == media_type
    names = [e["source"]["filename"] for e in _post(client, None, "E07500", "A0001").json()["results"]]
    svg = _post(client, SVG, "E07500", "A0001", ecg=1).text
    assert names[1] in svg and names[0] not in svg
    assert_error(_post(client, HTML, "E07500", ecg=3), 400, "invalid_input")
    page = _post(client, HTML, "E07500", "A0001").text  # HTML and PDF: every ECG
    assert page.count('<section class="ecg"') == 2
    one = _post(client, HTML, "E07500", "A0001", ecg=1).text
    assert one.count('<section class="ecg"') == 1 and 'id="ecg1"' in one
    assert len(_post(client, None, "E07500", "A0001", ecg=1).json()["results"]) == 2  # JSON ignores ecg


def test_errors_stay_json_for_a_report_request(client: TestClient) -> None:
    r = client.post("/diagnose", files=upload(record_files("E07500")[0]), headers={"accept": HTML})
    assert r.headers["content-type"].startswith("application/json") and r.status_code >= 400
    r = client.post("/diagnose", files=upload(*record_files("E07500")), headers={"accept": PDF, "Authorization": ""})
    assert_error(r, 401, "unauthenticated")


def test_the_operation_declares_the_report_types(client: TestClient) -> None:
    content = client.get("/openapi.json").json()["paths"]["/diagnose"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "application/fhir+json", HTML, PDF, SVG, PNG} <= content.keys()
    params = {p["name"] for p in client.get("/openapi.json").json()["paths"]["/diagnose"]["post"]["parameters"]}
    assert {"ecg", "highlight"} <= params


def test_the_page_is_public_self_contained_and_allows_only_its_own_script(client: TestClient) -> None:
    r = client.get("/", headers={"Authorization": ""})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert re.search(r"https?:", page) is None
    assert not re.findall(r'\b(?:src|href|action)="(?!data:,)[^"]*"', page)
    policy = r.headers["content-security-policy"]
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    assert "connect-src 'self'" in policy and "default-src 'none'" in policy and "unsafe-eval" not in policy
    for control in ("api-key", "files", "label-set", "top-k"):
        assert f'<label for="{control}">' in page or f'<label for="{control}"' in page, control
    assert "sessionStorage" in scripts[0] and "localStorage" not in scripts[0]


@pytest.mark.parametrize(("accept", "expected"), [
    (None, None), ("", None), ("*/*", None), ("text/*", HTML), ("image/*", SVG), ("image/png;q=0.9, */*;q=0.1", PNG),
    ("text/html;q=0", None), ("text/html;q=oops", None), ("application/fhir+json", None),
    ("application/fhir+json;q=0, text/html", HTML), ("TEXT/HTML", HTML), ("garbage", None),
])
def test_accept_negotiation(accept: str | None, expected: str | None) -> None:
    assert report_type(accept) == expected
