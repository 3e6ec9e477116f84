"""The OpenAPI document is the contract: real responses of every endpoint (successes and
errors, through the real app: ONNX sessions, SQLite, the built-in knowledge) validate
against the schema that ``/openapi.json`` declares for that operation, status and media type.

Schemas are checked with ``jsonschema`` (OpenAPI 3.1 schemas are JSON Schema 2020-12), with
``$ref``s resolved inside the served document itself, never a copy of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, File, UploadFile
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from app.api.errors import OFFLINE_ONLY_CODES, codes_for_status, service_error_classes
from app.api.main import create_app
from app.api.openapi import finish_document
from app.api.schemas import ErrorCode

from .conftest import make_settings
from .helpers import ANY_REVISION, ecg_json, read_record, record_files, upload, upload_bytes

DOCUMENT_URI = "urn:ecgfm-ked:openapi"
OUTCOME_REF = "#/components/schemas/FhirOperationOutcome"
FHIR_JSON = "application/fhir+json"
MY_OPERATION_IDS = {
    ("GET", "/healthz"): "healthz", ("GET", "/readyz"): "readyz", ("GET", "/model"): "getModel",
    ("GET", "/formats"): "listFormats", ("GET", "/metrics"): "metrics",
    ("GET", "/labels"): "listLabels", ("POST", "/labels"): "createLabel",
    ("GET", "/labels/{label_id}"): "getLabel", ("PUT", "/labels/{label_id}"): "updateLabel",
    ("DELETE", "/labels/{label_id}"): "deleteLabel",
    ("GET", "/label-sets"): "listLabelSets", ("POST", "/label-sets"): "createLabelSet",
    ("GET", "/label-sets/{name}"): "getLabelSet", ("PUT", "/label-sets/{name}"): "updateLabelSet",
    ("DELETE", "/label-sets/{name}"): "deleteLabelSet",
    ("POST", "/keys"): "createKey", ("GET", "/keys"): "listKeys", ("DELETE", "/keys/{name}"): "revokeKey",
    ("GET", "/audit"): "listAudit",
}


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class Contract:
    """What /openapi.json declares, and a check of one real response against it."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self.registry: Registry = Registry().with_resource(DOCUMENT_URI, resource)

    def operations(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for path, item in self.document["paths"].items():
            for method, operation in item.items():
                yield method.upper(), path, operation

    def errors_against(self, schema_pointer: str, instance: Any) -> list[str]:
        validator = Draft202012Validator({"$ref": f"{DOCUMENT_URI}#/{schema_pointer}"}, registry=self.registry)
        return [f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
                for e in validator.iter_errors(instance)]

    def check(self, resp: httpx.Response, method: str, path: str, status: int) -> Any:
        """``resp`` has ``status``, which the operation declares, with a media type it declares
        for that status and a body valid against that schema; returns the parsed body."""
        assert resp.status_code == status, (method, path, resp.status_code, resp.text[:500])
        operation = self.document["paths"][path][method.lower()]
        responses = operation["responses"]
        assert str(status) in responses, f"{method} {path} answered {status}, which it does not declare"
        content = responses[str(status)].get("content", {})
        if status == 204:
            assert resp.content == b"" and not content, (resp.content[:200], content)
            return None
        media_type = resp.headers["content-type"].split(";")[0].strip()
        assert media_type in content, f"{method} {path} {status}: {media_type} is not among {sorted(content)}"
        pointer = _pointer("paths", path, method.lower(), "responses", str(status), "content", media_type, "schema")
        body: Any = resp.json() if media_type.endswith("json") else resp.text
        problems = self.errors_against(pointer, body)
        assert not problems, f"{method} {path} {status} {media_type} does not match its schema:\n" + "\n".join(problems)
        return body


@pytest.fixture(scope="module")
def contract(client: TestClient) -> Contract:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    return Contract(resp.json())


@pytest.fixture(scope="module")
def unready(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The service started without a model bundle (it stays up and says why)."""
    base = tmp_path_factory.mktemp("unready")
    with TestClient(create_app(make_settings(base / "no-bundle-here", base / "data"))) as c:
        yield c


Scenario = Callable[[TestClient, TestClient, Contract], None]
SCENARIOS: dict[tuple[str, str], Scenario] = {}


def scenario(method: str, path: str) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        SCENARIOS[(method, path)] = fn
        return fn

    return register


def _label(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": "Contract-test diagnosis: a QRS duration of at least 120 ms with an rSR' "
                                         "pattern in V1-V2 and a wide slurred S wave in I and V6.",
            "synonyms": [], "codes": {}, "encode_text": "description", **extra}


def _check_error(contract: Contract, resp: httpx.Response, method: str, path: str, status: int, code: str) -> None:
    body = contract.check(resp, method, path, status)
    assert body["error"]["code"] == code, body


# --- operations -------------------------------------------------------------------------------


@scenario("GET", "/healthz")
def _healthz(client: TestClient, unready: TestClient, contract: Contract) -> None:
    assert contract.check(client.get("/healthz"), "GET", "/healthz", 200) == {"status": "ok"}
    contract.check(unready.get("/healthz"), "GET", "/healthz", 200)


@scenario("GET", "/readyz")
def _readyz(client: TestClient, unready: TestClient, contract: Contract) -> None:
    assert contract.check(client.get("/readyz"), "GET", "/readyz", 200)["status"] == "ready"
    body = contract.check(unready.get("/readyz"), "GET", "/readyz", 503)
    assert body["status"] == "not_ready" and body["reason"]


@scenario("GET", "/model")
def _model(client: TestClient, unready: TestClient, contract: Contract) -> None:
    body = contract.check(client.get("/model"), "GET", "/model", 200)
    assert body["model"]["version"] == body["manifest"]["model_version"]
    _check_error(contract, unready.get("/model"), "GET", "/model", 503, "model_not_ready")


@scenario("GET", "/formats")
def _formats(client: TestClient, unready: TestClient, contract: Contract) -> None:
    body = contract.check(client.get("/formats"), "GET", "/formats", 200)
    assert body["formats"] and body["json"]["content_type"] == "application/json"
    _check_error(contract, unready.get("/formats"), "GET", "/formats", 503, "model_not_ready")


@scenario("POST", "/keys")
def _create_key(client: TestClient, unready: TestClient, contract: Contract) -> None:
    body = contract.check(client.post("/keys", json={"name": "contract-key", "scope": "labels"}), "POST", "/keys", 201)
    assert body["key"].startswith("ekd_") and body["active"]
    _check_error(contract, client.post("/keys", json={"name": "CONTRACT-key", "scope": "labels"}), "POST", "/keys",
                 409, "conflict")
    _check_error(contract, client.post("/keys", json={"name": "x", "scope": "root"}), "POST", "/keys", 422,
                 "invalid_request")
    diagnose_only = client.post("/keys", json={"name": "contract-diagnose", "scope": "diagnose"}).json()["key"]
    _check_error(contract, client.post("/keys", json={"name": "y", "scope": "admin"},
                                       headers={"Authorization": f"Bearer {diagnose_only}"}),
                 "POST", "/keys", 403, "forbidden")
    _check_error(contract, client.post("/keys", json={"name": "y", "scope": "admin"}, headers={"Authorization": ""}),
                 "POST", "/keys", 401, "unauthenticated")
    _check_error(contract, unready.post("/keys", json={"name": "y", "scope": "admin"}), "POST", "/keys", 503,
                 "model_not_ready")


@scenario("GET", "/keys")
def _list_keys(client: TestClient, unready: TestClient, contract: Contract) -> None:
    body = contract.check(client.get("/keys"), "GET", "/keys", 200)
    assert body and all("key" not in k for k in body)


@scenario("DELETE", "/keys/{name}")
def _revoke_key(client: TestClient, unready: TestClient, contract: Contract) -> None:
    client.post("/keys", json={"name": "contract-revoked", "scope": "diagnose"})
    assert client.delete("/keys/contract-revoked").status_code == 204
    _check_error(contract, client.delete("/keys/no-such-key"), "DELETE", "/keys/{name}", 404, "not_found")


@scenario("GET", "/audit")
def _audit(client: TestClient, unready: TestClient, contract: Contract) -> None:
    client.post("/keys", json={"name": "contract-audited", "scope": "diagnose"})
    body = contract.check(client.get("/audit", params={"limit": 5}), "GET", "/audit", 200)
    assert body["events"] and body["events"][0]["action"].startswith("key.")
    _check_error(contract, client.get("/audit", params={"limit": 0}), "GET", "/audit", 422, "invalid_request")


@scenario("GET", "/metrics")
def _metrics(client: TestClient, unready: TestClient, contract: Contract) -> None:
    text = contract.check(client.get("/metrics"), "GET", "/metrics", 200)
    assert "ecgfm_ready" in text
    contract.check(unready.get("/metrics"), "GET", "/metrics", 200)


# --- labels -----------------------------------------------------------------------------------


@scenario("GET", "/labels")
def _list_labels(client: TestClient, unready: TestClient, contract: Contract) -> None:
    assert contract.check(client.get("/labels"), "GET", "/labels", 200)
    _check_error(contract, unready.get("/labels"), "GET", "/labels", 503, "model_not_ready")


@scenario("POST", "/labels")
def _create_label(client: TestClient, unready: TestClient, contract: Contract) -> None:
    m, p = "POST", "/labels"
    body = contract.check(client.post(p, json=_label("contract rbbb", label_sets=["default"])), m, p, 201)
    assert body["embedded"] is True and body["label_sets"] == ["default"]
    _check_error(contract, client.post(p, json=_label("contract rbbb")), m, p, 409, "conflict")
    _check_error(contract, client.post(p, json=_label("   ")), m, p, 400, "invalid_input")
    _check_error(contract, client.post(p, json=_label("contract x", label_sets=["no-such-set"])), m, p, 404,
                 "not_found")
    _check_error(contract, client.post(p, json={"name": "no description"}), m, p, 422, "invalid_request")
    _check_error(contract, unready.post(p, json=_label("contract unready")), m, p, 503, "model_not_ready")


@scenario("GET", "/labels/{label_id}")
def _get_label(client: TestClient, unready: TestClient, contract: Contract) -> None:
    m, p = "GET", "/labels/{label_id}"
    created = client.post("/labels", json=_label("contract get")).json()
    assert contract.check(client.get(f"/labels/{created['id']}"), m, p, 200)["name"] == "contract get"
    _check_error(contract, client.get("/labels/987654"), m, p, 404, "not_found")
    _check_error(contract, client.get("/labels/not-a-number"), m, p, 422, "invalid_request")


@scenario("PUT", "/labels/{label_id}")
def _update_label(client: TestClient, unready: TestClient, contract: Contract) -> None:
    m, p = "PUT", "/labels/{label_id}"
    created = client.post("/labels", json=_label("contract put")).json()
    client.post("/labels", json=_label("contract put other"))
    url = f"/labels/{created['id']}"
    body = contract.check(client.put(url, json=_label("contract put", synonyms=["rsr prime"]), headers=ANY_REVISION), m, p, 200)
    assert body["synonyms"] == ["rsr prime"]
    _check_error(contract, client.put(url, json=_label("contract put other"), headers=ANY_REVISION), m, p, 409, "conflict")
    _check_error(contract, client.put(url, json=_label("contract put", description=""), headers=ANY_REVISION), m, p, 400, "invalid_input")
    _check_error(contract, client.put("/labels/987654", json=_label("contract put"), headers=ANY_REVISION), m, p, 404, "not_found")
    _check_error(contract, client.put(url, json={"name": "contract put"}, headers=ANY_REVISION), m, p, 422, "invalid_request")
    _check_error(contract, client.put(url, json=_label("contract put")), m, p, 428, "precondition_required")
    _check_error(contract, client.put(url, json=_label("contract put"), headers={"If-Match": '"1"'}), m, p, 409,
                 "version_conflict")


@scenario("DELETE", "/labels/{label_id}")
def _delete_label(client: TestClient, unready: TestClient, contract: Contract) -> None:
    m, p = "DELETE", "/labels/{label_id}"
    in_set = client.post("/labels", json=_label("contract delete", label_sets=["default"])).json()
    url = f"/labels/{in_set['id']}"
    _check_error(contract, client.delete(url), m, p, 409, "conflict")
    _check_error(contract, client.delete(url, params={"force": "perhaps"}), m, p, 422, "invalid_request")
    contract.check(client.delete(url, params={"force": "true"}), m, p, 204)
    _check_error(contract, client.delete(url), m, p, 404, "not_found")


@scenario("GET", "/label-sets")
def _list_label_sets(client: TestClient, unready: TestClient, contract: Contract) -> None:
    names = {s["name"] for s in contract.check(client.get("/label-sets"), "GET", "/label-sets", 200)}
    assert {"default", "cinc2021"} <= names
    _check_error(contract, unready.get("/label-sets"), "GET", "/label-sets", 503, "model_not_ready")


def _two_label_names(client: TestClient) -> list[str]:
    return [label["name"] for label in client.get("/labels").json()[:2]]


@scenario("POST", "/label-sets")
def _create_label_set(client: TestClient, unready: TestClient, contract: Contract) -> None:
    m, p = "POST", "/label-sets"
    names = _two_label_names(client)
    body = contract.check(client.post(p, json={"name": "contract-set", "labels": names}), m, p, 201)
    assert body["labels"] == names and body["version"]
    _check_error(contract, client.post(p, json={"name": "contract-set", "labels": names}), m, p, 409, "conflict")
    _check_error(contract, client.post(p, json={"name": "contract-x", "labels": [names[0], names[0]]}), m, p, 400,
                 "invalid_input")
    _check_error(contract, client.post(p, json={"name": "contract-x", "labels": ["no such label"]}), m, p, 404,
                 "not_found")
    _check_error(contract, client.post(p, json={"name": "contract-x", "labels": []}), m, p, 422, "invalid_request")


@scenario("GET", "/label-sets/{name}")
def _get_label_set(client: TestClient, unready: TestClient, contract: Contract) -> None:
    m, p = "GET", "/label-sets/{name}"
    current = contract.check(client.get("/label-sets/default"), m, p, 200)
    pinned = contract.check(client.get("/label-sets/default", params={"version": current["version"]}), m, p, 200)
    assert pinned["version"] == current["version"]
    _check_error(contract, client.get("/label-sets/no-such-set"), m, p, 404, "not_found")
    _check_error(contract, client.get("/label-sets/default", params={"version": "0000000000000000"}), m, p, 404,
                 "not_found")


@scenario("PUT", "/label-sets/{name}")
def _update_label_set(client: TestClient, unready: TestClient, contract: Contract) -> None:
    m, p = "PUT", "/label-sets/{name}"
    names = _two_label_names(client)
    client.post("/label-sets", json={"name": "contract-put-set", "labels": names})
    body = contract.check(client.put("/label-sets/contract-put-set", json={"name": "contract-put-set", "description": "",
                                                                           "labels": names[::-1]}, headers=ANY_REVISION), m, p, 200)
    assert body["labels"] == names[::-1]
    _check_error(contract, client.put("/label-sets/no-such-set", json={"name": "no-such-set", "description": "", "labels": names}, headers=ANY_REVISION),
                 m, p, 404, "not_found")
    _check_error(contract, client.put("/label-sets/contract-put-set", json={"name": "contract-put-set"}, headers=ANY_REVISION), m, p, 422,
                 "invalid_request")
    same = {"name": "contract-put-set", "description": "", "labels": names}
    _check_error(contract, client.put("/label-sets/contract-put-set", json=same), m, p, 428, "precondition_required")
    _check_error(contract, client.put("/label-sets/contract-put-set", json=same, headers={"If-Match": '"1"'}), m, p,
                 409, "version_conflict")


@scenario("POST", "/labels/{label_id}/restore")
def _restore_label(client: TestClient, unready: TestClient, contract: Contract) -> None:
    m, p = "POST", "/labels/{label_id}/restore"
    builtin = next(label for label in client.get("/labels").json() if label["builtin"] and label["label_sets"])
    assert client.delete(f"/labels/{builtin['id']}", params={"force": "true"}).status_code == 204
    body = contract.check(client.post(f"/labels/{builtin['id']}/restore"), m, p, 200)
    assert body["deleted_at"] is None and body["revision"] == builtin["revision"] + 2
    assert sorted(body["label_sets"]) == sorted(builtin["label_sets"])  # back in its sets
    _check_error(contract, client.post("/labels/987654/restore"), m, p, 404, "not_found")
    _check_error(contract, client.post("/labels/not-a-number/restore"), m, p, 422, "invalid_request")


@scenario("POST", "/label-sets/{name}/restore")
def _restore_label_set(client: TestClient, unready: TestClient, contract: Contract) -> None:
    m, p = "POST", "/label-sets/{name}/restore"
    builtin = next(s for s in client.get("/label-sets").json() if s["builtin"] and s["name"] != "default")
    assert client.delete(f"/label-sets/{builtin['name']}").status_code == 204
    body = contract.check(client.post(f"/label-sets/{builtin['name']}/restore"), m, p, 200)
    assert body["labels"] == builtin["labels"] and body["deleted_at"] is None
    _check_error(contract, client.post("/label-sets/no-such-set/restore"), m, p, 404, "not_found")


@scenario("DELETE", "/label-sets/{name}")
def _delete_label_set(client: TestClient, unready: TestClient, contract: Contract) -> None:
    m, p = "DELETE", "/label-sets/{name}"
    client.post("/label-sets", json={"name": "contract-delete-set", "labels": _two_label_names(client)})
    contract.check(client.delete("/label-sets/contract-delete-set"), m, p, 204)
    _check_error(contract, client.delete("/label-sets/contract-delete-set"), m, p, 404, "not_found")


# --- diagnose ---------------------------------------------------------------------------------


@scenario("GET", "/models")
def _models(client: TestClient, unready: TestClient, contract: Contract) -> None:
    body = contract.check(client.get("/models"), "GET", "/models", 200)
    assert body["active"] in {m["version"] for m in body["models"] if m["state"] == "active"}
    _check_error(contract, unready.get("/models"), "GET", "/models", 503, "model_not_ready")


@scenario("POST", "/models/{version}/activate")
def _activate(client: TestClient, unready: TestClient, contract: Contract) -> None:
    m, p = "POST", "/models/{version}/activate"
    active = client.get("/models").json()["active"]
    body = contract.check(client.post(f"/models/{active}/activate"), m, p, 200)
    assert body["active"] == active and body["switched"] is False
    _check_error(contract, client.post("/models/no-such-version/activate"), m, p, 404, "not_found")


@scenario("POST", "/embeddings")
def _embeddings(client: TestClient, unready: TestClient, contract: Contract) -> None:
    m, p = "POST", "/embeddings"
    body = contract.check(client.post(p, files=upload(*record_files("E07500"))), m, p, 200)
    assert len(body["results"][0]["pooled"]) == body["dimension"]
    _check_error(contract, client.post(p, files=upload(*record_files("E07500")), params={"model": "nope"}), m, p,
                 404, "not_found")
    _check_error(contract, client.post(p, files=upload_bytes("notes.txt", b"\x00 not an ecg " * 40)), m, p, 415,
                 "unsupported_format")


@scenario("POST", "/diagnose")
def _diagnose(client: TestClient, unready: TestClient, contract: Contract) -> None:
    m, p = "POST", "/diagnose"
    files = upload(*record_files("E07500"))
    body = contract.check(client.post(p, files=files, params={"label_set": "cinc2021", "top_k": 3}), m, p, 200)
    assert [d["rank"] for d in body["results"][0]["diagnoses"]] == [1, 2, 3]
    short = ecg_json(read_record("E07500"), samples=2000)  # 4 s at 500 Hz
    body = contract.check(client.post(p, json={"ecgs": [short]}, params={"pad": "true", "include_windows": "true"}),
                          m, p, 200)
    assert body["results"][0]["source"]["padded"] is True
    fhir = contract.check(client.post(p, files=files, headers={"accept": FHIR_JSON}), m, p, 200)
    assert fhir["resourceType"] == "Bundle"
    for report in ("text/html", "application/pdf", "image/svg+xml", "image/png"):  # the report (app/report)
        contract.check(client.post(p, files=files, headers={"accept": report}), m, p, 200)
    two = upload(*record_files("E07500"), *record_files("A0001"))
    _check_error(contract, client.post(p, files=two, headers={"accept": "image/png"}), m, p, 400, "invalid_input")
    context = {"patient": "Patient/contract-1", "accession_system": "urn:oid:1.2.3", "accession": "A-1",
               "acquired_at": "2020-05-12T12:33:59+02:00"}
    filed = contract.check(client.post(p, files=files, params=context, headers={"accept": FHIR_JSON}), m, p, 200)
    assert any(e["resource"].get("subject") == {"reference": "Patient/contract-1"} for e in filed["entry"])
    # errors asked for as FHIR: OperationOutcome, declared beside ErrorBody
    outcome = contract.check(client.post(p, files=upload_bytes("notes.txt", b"\x00 not an ecg " * 40),
                                         headers={"accept": FHIR_JSON}), m, p, 415)
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "not-supported"
    contract.check(client.post(p, files=files, params={"patient": "Encounter/1"}, headers={"accept": FHIR_JSON}),
                   m, p, 422)
    contract.check(client.post(p, files=files, headers={"accept": FHIR_JSON, "Authorization": ""}), m, p, 401)
    _check_error(contract, client.post(p, json={"ecgs": [short]}), m, p, 422, "signal_too_short")
    _check_error(contract, client.post(p, files=upload_bytes("notes.txt", b"\x00 not an ecg " * 40)), m, p, 415,
                 "unsupported_format")
    _check_error(contract, client.post(p, content=b"hello", headers={"content-type": "text/plain"}), m, p, 415,
                 "unsupported_format")
    _check_error(contract, client.post(p, json={"ecgs": [short]}, params={"label_set": "no-such-set", "pad": "true"}),
                 m, p, 404, "not_found")
    _check_error(contract, client.post(p, json={"ecgs": [short]}, params={"top_k": -1}), m, p, 422, "invalid_request")
    _check_error(contract, client.post(p, json={"ecgs": [short] * 33}, params={"pad": "true"}), m, p, 400,
                 "invalid_input")
    too_large = {"content-type": "application/json", "content-length": str(101 * 1024 * 1024)}
    _check_error(contract, client.post(p, content=b"{}", headers=too_large), m, p, 413, "upload_too_large")
    _check_error(contract, unready.post(p, files=files), m, p, 503, "model_not_ready")


# --- the tests --------------------------------------------------------------------------------


def test_every_operation_has_a_scenario(contract: Contract) -> None:
    declared = {(method, path) for method, path, _op in contract.operations()}
    assert declared == set(SCENARIOS), {"without a scenario": declared - set(SCENARIOS),
                                        "not in the document": set(SCENARIOS) - declared}


@pytest.mark.parametrize("operation", sorted(SCENARIOS), ids=lambda op: f"{op[0]} {op[1]}")
def test_real_responses_match_the_document(operation: tuple[str, str], client: TestClient, unready: TestClient,
                                           contract: Contract, upload_tmp: Path) -> None:
    SCENARIOS[operation](client, unready, contract)


def test_operation_ids_are_meaningful(contract: Contract) -> None:
    ids = {(method, path): op.get("operationId") for method, path, op in contract.operations()}
    assert {k: ids.get(k) for k in MY_OPERATION_IDS} == MY_OPERATION_IDS
    generated = {k: v for k, v in ids.items() if not (v and re.fullmatch(r"[a-z][A-Za-z]*", v))}
    assert not generated, f"operation ids FastAPI made up (set operation_id=...): {generated}"
    assert len(set(ids.values())) == len(ids)


def test_fastapis_validation_schema_is_not_advertised(contract: Contract) -> None:
    schemas = contract.document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    for method, path, op in contract.operations():
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")) and not (path == "/readyz" and status == "503"):
                assert response["content"] == {"application/json": response["content"]["application/json"],
                                               FHIR_JSON: {"schema": {"$ref": OUTCOME_REF}}}, (method, path, status)
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


def test_every_operation_declares_its_errors(contract: Contract) -> None:
    for method, path, op in contract.operations():
        assert "500" in op["responses"], (method, path)
        if path not in ("/healthz", "/readyz", "/metrics"):
            assert "503" in op["responses"], (method, path)  # the model may not be loaded
        if "{" in path or op.get("parameters") or op.get("requestBody"):
            assert "422" in op["responses"], (method, path)


def test_error_examples_name_every_code_of_their_status(contract: Contract) -> None:
    for method, path, op in contract.operations():
        for status, response in op["responses"].items():
            content = response.get("content", {}).get("application/json", {})
            if content.get("schema") != {"$ref": "#/components/schemas/ErrorBody"}:
                continue
            examples = content["examples"]
            assert sorted(examples) == codes_for_status(int(status)), (method, path, status)
            for code, example in examples.items():
                assert not contract.errors_against(_pointer("components", "schemas", "ErrorBody"), example["value"])
                assert example["value"]["error"]["code"] == code


def test_error_code_enum_lists_every_code_the_service_answers_with(contract: Contract) -> None:
    declared = contract.document["components"]["schemas"]["ErrorCode"]["enum"]
    assert declared == [c.value for c in ErrorCode]
    domain = {cls.code for cls in service_error_classes()} - OFFLINE_ONLY_CODES
    assert domain <= set(declared), f"domain error codes missing from ErrorCode: {domain - set(declared)}"
    answered = {code for status in range(400, 600) for code in codes_for_status(status)}
    assert answered <= set(declared), answered - set(declared)


def test_label_schemas_and_errors_carry_examples(contract: Contract) -> None:
    schemas = contract.document["components"]["schemas"]
    for name in ("LabelIn", "LabelOut", "LabelSetIn", "LabelSetOut", "ErrorBody", "ReadinessOut", "FormatsOut",
                 "ModelDescriptionOut", "FhirOperationOutcome"):
        examples = schemas[name].get("examples")
        assert examples, f"{name} has no example"
        for example in examples:  # an example that does not validate would mislead a reader
            assert not contract.errors_against(_pointer("components", "schemas", name), example), name


def test_error_bodies_carry_the_request_id(client: TestClient, contract: Contract) -> None:
    resp = client.get("/labels/987654", headers={"x-request-id": "contract-test-0001"})
    body = contract.check(resp, "GET", "/labels/{label_id}", 404)
    assert body["request_id"] == "contract-test-0001"
    assert resp.headers["x-request-id"] == "contract-test-0001"
    made = client.get("/label-sets/no-such-set").json()["request_id"]
    assert isinstance(made, str) and made, "the service makes an id when the caller sends none"


def test_framework_errors_use_the_error_schema(client: TestClient, contract: Contract) -> None:
    schema = _pointer("components", "schemas", "ErrorBody")
    unknown = client.get("/no-such-endpoint")
    assert unknown.status_code == 404 and not contract.errors_against(schema, unknown.json())
    assert unknown.json()["error"]["code"] == "not_found"
    wrong_method = client.patch("/labels")
    assert wrong_method.status_code == 405 and not contract.errors_against(schema, wrong_method.json())
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


def _resolve(contract: Contract, schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = contract.document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def test_diagnose_declares_both_request_bodies_with_files_as_binary(contract: Contract) -> None:
    body = contract.document["paths"]["/diagnose"]["post"].get("requestBody")
    assert body, "POST /diagnose declares no request body"
    assert {"multipart/form-data", "application/json"} <= set(body["content"]), sorted(body["content"])
    form = _resolve(contract, body["content"]["multipart/form-data"]["schema"])
    files = _resolve(contract, form["properties"]["files"])
    assert files["type"] == "array" and _resolve(contract, files["items"])["format"] == "binary", files
    ecgs = _resolve(contract, body["content"]["application/json"]["schema"])
    assert "ecgs" in ecgs["properties"], ecgs


def test_finishing_fastapis_own_document_of_a_file_upload_route() -> None:
    """What FastAPI itself writes for an UploadFile list and its validation error, finished:
    files become ``format: binary`` (what Swagger UI and generators read as a file) and the 422
    names ErrorBody instead of HTTPValidationError."""
    probe = FastAPI()

    @probe.post("/upload")
    def upload_files(files: list[UploadFile] = File(...)) -> dict[str, int]:
        return {"files": len(files)}

    raw = probe.openapi()
    assert "HTTPValidationError" in raw["components"]["schemas"]  # what is being fixed
    document = finish_document(raw)
    [form] = [s for name, s in document["components"]["schemas"].items() if name.startswith("Body_")]
    assert form["properties"]["files"]["items"] == {"type": "string", "contentMediaType": "application/octet-stream",
                                                   "format": "binary"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
    invalid = document["paths"]["/upload"]["post"]["responses"]["422"]["content"]
    assert invalid["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "invalid_request" in invalid["application/json"]["examples"]
