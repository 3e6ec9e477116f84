"""Request ids and the access log through the real app (lifespan, ONNX sessions, database) behind
``TestClient``: app/api/middleware.py and app/ops/logging.py."""

from __future__ import annotations

import logging
import re

import pytest

from app.ops.logging import ACCESS_LOGGER
from tests.api.helpers import record_files, upload, upload_bytes

HEX_ID = re.compile(r"[0-9a-f]{32}")


CLIENT_LOGGERS = ("httpx", "httpx2", "httpcore")  # the test's own HTTP client, in this process


def service_log(caplog: pytest.LogCaptureFixture) -> str:
    """Everything the service logged (every logger but the test client's, which logs the URLs it sent)."""
    return "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records
                     if r.name.split(".")[0] not in CLIENT_LOGGERS)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == ACCESS_LOGGER]


def test_a_request_without_an_id_gets_one_echoed_and_logged(client, caplog) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        response = client.get("/labels")
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert HEX_ID.fullmatch(request_id)
    [line] = access_lines(caplog)
    assert line.getMessage() == (f"method=GET path=/labels status=200 duration_ms={line.duration_ms:.1f} "
                                 f'request_id={request_id} actor="tests-admin"')  # the key's name, never the key
    assert line.actor == "tests-admin"
    assert line.levelno == logging.INFO and line.duration_ms >= 0
    assert client.get("/labels").headers["x-request-id"] != request_id  # one per request


@pytest.mark.parametrize("given", ["req-1", "a" * 128, "2026-12-02T10:00:00.123Z:gateway_7", "0"])
def test_an_acceptable_caller_id_is_kept_echoed_and_given_to_error_bodies(client, caplog, given) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        response = client.get("/labels/999999999", headers={"X-Request-ID": given})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == given
    assert response.json()["request_id"] == given  # request.state.request_id, read by the error handler
    [line] = access_lines(caplog)
    assert line.request_id == given and "path=/labels/{label_id} status=404" in line.getMessage()


@pytest.mark.parametrize("given", ["", "a" * 129, "has space", "semi;colon", "new\u00e9line", "<script>"])
def test_an_unacceptable_caller_id_is_replaced_and_never_logged(client, caplog, given) -> None:
    with caplog.at_level(logging.DEBUG):
        response = client.get("/labels", headers={"X-Request-ID": given.encode("utf-8")})
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert HEX_ID.fullmatch(request_id) and request_id != given
    if given:
        assert given not in service_log(caplog)
    assert access_lines(caplog)[-1].request_id == request_id


def test_the_log_holds_no_file_name_query_string_or_body(client, caplog) -> None:
    """A real upload with an identifying file name and query, and one refused: the log (every logger,
    every level) names the route template and the outcome, nothing the caller sent."""
    name = "DOE_JANE_MRN0042.hea"
    files = upload(*record_files("E07500"))
    files[0] = ("files", (name, files[0][1][1], "application/octet-stream"))
    with caplog.at_level(logging.DEBUG):
        ok = client.post("/diagnose", files=files, params={"top_k": 3, "threshold": 0.0})
        refused = client.post("/diagnose?label_set=ward7-mrn0042", files=upload_bytes("DOE_JANE.bin", b"\x00" * 64))
    assert refused.status_code in (400, 404, 415, 422)
    lines = [r.getMessage() for r in access_lines(caplog)]
    assert len(lines) == 2 and all("path=/diagnose " in line for line in lines), lines
    assert f"status={refused.status_code}" in lines[1]
    assert f"request_id={refused.headers['x-request-id']}" in lines[1]
    for sent in ("DOE", "JANE", "MRN0042", "mrn0042", "ward7", "top_k", "threshold", "E07500", ".hea", ".bin"):
        assert sent not in service_log(caplog), sent
    if ok.status_code == 200:  # A's typed body carries the id too
        assert f"request_id={ok.headers['x-request-id']}" in lines[0]


def test_unmatched_paths_are_not_logged_verbatim(client, caplog) -> None:
    with caplog.at_level(logging.DEBUG):
        response = client.get("/patients/Jane-Doe-1970-01-01")
    assert response.status_code == 404
    [line] = access_lines(caplog)
    assert "path=<unmatched> status=404" in line.getMessage()
    assert "Jane" not in service_log(caplog)


def test_probes_and_scrapes_log_at_debug_only(client, caplog) -> None:
    with caplog.at_level(logging.DEBUG, logger=ACCESS_LOGGER):
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200
        client.get("/formats")
    levels = {r.endpoint: r.levelno for r in access_lines(caplog)}
    assert levels == {"/healthz": logging.DEBUG, "/readyz": logging.DEBUG, "/metrics": logging.DEBUG,
                      "/formats": logging.INFO}
