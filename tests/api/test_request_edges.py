"""The request's edges through the real ASGI app (lifespan, ONNX sessions, SQLite or PostgreSQL):
body limits counted while the body streams (no Content-Length), JSON that cannot be parsed
honestly (deep nesting, non-UTF-8, duplicate keys and leads), label ids and texts the databases
cannot hold, and the ``Allow`` header of a 405. Streaming over a real socket, stalls and
disconnects are in test_request_edges_server.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from tests.api.conftest import MakeSettings, leftover_uploads
from tests.api.helpers import ANY_REVISION, assert_error, ecg_json, read_record, record_files, upload

LIMIT_MB = 1.0
LIMIT_BYTES = int(LIMIT_MB * 1024 * 1024)
WELLENS = {
    "name": "wellens (request edges)",
    "description": "Biphasic or deeply inverted T waves in V2-V3.",
    "synonyms": ["wellens sign"],
    "codes": {},
    "encode_text": "description",
}


@pytest.fixture(scope="module")
def small_limit_client(small_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app whose body limit is 1 MB (so a test need not send 100 MB)."""
    from tests.api.conftest import make_settings

    settings = make_settings(small_bundle, tmp_path_factory.mktemp("edges-data"), max_request_mb=LIMIT_MB)
    with TestClient(create_app(settings)) as c:
        yield c


def _chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """A generator body: httpx sends it chunked, without Content-Length."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def _big_json() -> bytes:
    rec = read_record("E07500")
    entry = ecg_json(rec)
    body = json.dumps({"ecgs": [entry] * 8}).encode()
    assert len(body) > 2 * LIMIT_BYTES
    return body


# --- body size, counted while it streams ------------------------------------------------------


def test_chunked_json_over_the_limit_is_413(small_limit_client: TestClient) -> None:
    body = _big_json()
    resp = small_limit_client.post("/diagnose", content=_chunks(body), headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in resp.request.headers}
    err = assert_error(resp, 413, "upload_too_large")
    assert str(LIMIT_BYTES) in err["message"] and "ECGFM_MAX_REQUEST_MB" in err["message"]
    assert resp.headers["connection"] == "close"


def test_declared_length_over_the_limit_is_413_on_any_route(small_limit_client: TestClient) -> None:
    body = json.dumps({**WELLENS, "description": "x" * (2 * LIMIT_BYTES)}).encode()
    # a label body is parsed by FastAPI itself: the limit must still answer 413, not a parse error
    err = assert_error(small_limit_client.post("/labels", content=body, headers={"content-type": "application/json"}),
                       413, "upload_too_large")
    assert f"request body is {len(body)} bytes" in err["message"]
    chunked = small_limit_client.post("/labels", content=_chunks(body), headers={"content-type": "application/json"})
    assert_error(chunked, 413, "upload_too_large")
    assert all(item["name"] != WELLENS["name"] for item in small_limit_client.get("/labels").json())


def test_chunked_multipart_over_the_limit_is_413_and_leaves_nothing(small_limit_client: TestClient,
                                                                     upload_tmp: Path) -> None:
    boundary = "edge-boundary"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.csv\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    body = part + b"0.1,0.2\n" * (3 * LIMIT_BYTES // 8) + f"\r\n--{boundary}--\r\n".encode()
    resp = small_limit_client.post("/diagnose", content=_chunks(body),
                                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert_error(resp, 413, "upload_too_large")
    assert leftover_uploads(upload_tmp) == []


def test_bodies_under_the_limit_still_work(small_limit_client: TestClient) -> None:
    resp = small_limit_client.post("/diagnose", files=upload(*record_files("E07500")))
    assert resp.status_code == 200, resp.text[:300]
    entry = ecg_json(read_record("E07500"))
    chunked = small_limit_client.post("/diagnose", content=_chunks(json.dumps({"ecgs": [entry]}).encode()),
                                      headers={"content-type": "application/json"})
    assert chunked.status_code == 200, chunked.text[:300]


# --- JSON that cannot be read honestly ----------------------------------------------------------


def _post_raw(client: TestClient, body: bytes):
    return client.post("/diagnose", content=body, headers={"content-type": "application/json"})


def test_json_nested_100000_deep_is_400(client: TestClient) -> None:
    body = b'{"ecgs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    err = assert_error(_post_raw(client, body), 400, "invalid_input")
    assert "nested too deeply" in err["message"]
    assert client.get("/healthz").status_code == 200


def test_non_utf8_json_is_400_naming_the_byte(client: TestClient) -> None:
    body = '{"ecgs": [{"id": "caf\u00e9"}]}'.encode("latin-1")
    err = assert_error(_post_raw(client, body), 400, "invalid_input")
    assert "not UTF-8" in err["message"] and "0xe9" in err["message"]


def test_a_lead_given_twice_is_refused(client: TestClient) -> None:
    entry = ecg_json(read_record("E07500"))
    leads = entry["leads"]
    text = json.dumps({"ecgs": [entry]})
    # the same key twice in the raw JSON (the standard parser would keep the last silently)
    twice = text.replace('"leads": {', '"leads": {"II": ' + json.dumps(leads["I"]) + ", ", 1)
    assert twice.count('"II"') == 2
    err = assert_error(_post_raw(client, twice.encode()), 400, "invalid_input")
    assert "'II' twice" in err["message"] and err["details"] == {"key": "II"}
    # two spellings of one lead
    spelled = {**entry, "leads": {**leads, "lead ii": leads["II"]}}
    err = assert_error(client.post("/diagnose", json={"ecgs": [spelled]}), 400, "invalid_input")
    assert "'II' and 'lead ii' are the same lead" in err["message"]
    assert err["details"] == {"leads": ["II", "lead ii"]}
    chest = {**entry, "leads": {**leads, "C1": leads["V1"]}}
    assert_error(client.post("/diagnose", json={"ecgs": [chest]}), 400, "invalid_input")
    # and the same record with each lead once is scored
    assert client.post("/diagnose", json={"ecgs": [entry]}).status_code == 200


# --- labels: ids and texts the databases cannot hold --------------------------------------------


BAD_IDS = (0, -1, 2**31, 2**63, 2**64)
CONTROL_TEXTS = ("nul\x00inside", "bell\x07", "esc\x1b[31m", "del\x7f")


def _label_edges(client: TestClient) -> None:
    for label_id in BAD_IDS:
        assert_error(client.get(f"/labels/{label_id}"), 422, "invalid_request")
        assert_error(client.put(f"/labels/{label_id}", json=WELLENS, headers=ANY_REVISION), 422, "invalid_request")
        assert_error(client.delete(f"/labels/{label_id}"), 422, "invalid_request")
    assert_error(client.get(f"/labels/{2**31 - 1}"), 404, "not_found")
    for text in CONTROL_TEXTS:
        for field, value in (("name", text), ("description", text), ("synonyms", [text]),
                             ("codes", {"SNOMED CT": text}), ("codes", {text: "1"})):
            err = assert_error(client.post("/labels", json={**WELLENS, field: value}), 422, "invalid_request")
            assert field in err["message"]
        assert_error(client.post("/label-sets", json={"name": text, "labels": ["sinus rhythm"]}),
                     422, "invalid_request")
        assert_error(client.post("/label-sets", json={"name": "edges-set", "labels": [text]}),
                     422, "invalid_request")
        assert_error(client.get("/label-sets/default", params={"version": text}), 422, "invalid_request")
        path = f"/label-sets/{quote(text, safe='')}"  # percent-encoded: a URL cannot carry them raw
        assert_error(client.get(path), 422, "invalid_request")
        assert_error(client.delete(path), 422, "invalid_request")
        assert_error(client.put(path, json={"name": "x", "description": "", "labels": ["sinus rhythm"]}, headers=ANY_REVISION),
                     422, "invalid_request")
    err = assert_error(client.post("/labels", json={**WELLENS, "name": ""}), 422, "invalid_request")
    assert "name" in err["message"]
    assert_error(client.post("/label-sets", json={"name": "", "labels": ["sinus rhythm"]}), 422, "invalid_request")
    # line breaks and tabs belong in a description
    made = client.post("/labels", json={**WELLENS, "description": "line one\n\tline two"})
    assert made.status_code == 201, made.text
    assert made.json()["description"] == "line one\n\tline two"
    assert client.delete(f"/labels/{made.json()['id']}").status_code == 204
    assert all("\x00" not in item["name"] for item in client.get("/labels").json())


def test_label_edges_on_sqlite(client: TestClient) -> None:
    _label_edges(client)


def test_label_edges_on_postgresql(app_settings: MakeSettings, pg_database: str) -> None:
    with TestClient(create_app(app_settings(database_url=pg_database))) as client:
        _label_edges(client)


def test_openapi_declares_the_label_bounds(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    name = schemas["LabelIn"]["properties"]["name"]
    assert name["minLength"] == 1 and name["maxLength"] == 200 and name["pattern"] == r"^[^\x00-\x1f\x7f]*$"
    assert schemas["LabelIn"]["properties"]["description"]["pattern"] == r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
    assert schemas["LabelSetIn"]["properties"]["name"]["minLength"] == 1
    label_id = next(p for p in doc["paths"]["/labels/{label_id}"]["get"]["parameters"] if p["name"] == "label_id")
    assert label_id["schema"]["minimum"] == 1 and label_id["schema"]["maximum"] == 2**31 - 1
    set_name = next(p for p in doc["paths"]["/label-sets/{name}"]["get"]["parameters"] if p["name"] == "name")
    assert set_name["schema"]["pattern"] == r"^[^\x00-\x1f\x7f]*$"


# --- 405 names every method of the path ------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PATCH", "/labels/1", "DELETE, GET, PUT"),
    ("DELETE", "/labels", "GET, POST"),
    ("POST", "/label-sets/default", "DELETE, GET, PUT"),
    ("GET", "/diagnose", "POST"),
])
def test_405_lists_every_allowed_method(client: TestClient, method: str, path: str, allowed: str) -> None:
    resp = client.request(method, path)
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == allowed
