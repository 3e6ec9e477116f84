"""FHIR an EHR can file, through real HTTP (the ASGI app, ONNX sessions, the real PDF report):
the request's context (query parameters and form fields), the file's acquisition time, errors
as OperationOutcome, and the patient reference kept out of the logs.

Everything the service answers is validated with the fhir.resources R4B models (and the
Reference target types they record; see tests/api/test_fhir.py)."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from app.api import errors as api_errors
from app.api.fhir import ERROR_CODE_SYSTEM, NO_PATIENT_NOTE
from app.api.main import create_app
from app.api.middleware import RequestObserver
from app.ops.settings import Settings

from .conftest import MakeSettings
from .helpers import ECG_DIR, upload, upload_bytes
from .test_fhir import ISSUE_TYPES, check_reference_types

FHIR = {"Accept": "application/fhir+json"}
CLIENT_LOGGERS = {"httpx", "httpx2", "httpcore"}
SECRET_PATIENT = "Patient/pt-4711-secret"
CONTEXT = {"patient": SECRET_PATIENT, "encounter": "Encounter/enc-1", "order": "ServiceRequest/ord-1",
           "accession_system": "urn:oid:1.2.840.99999.1", "accession": "ACC-0042"}


def _validate(bundle: dict) -> None:
    Bundle.model_validate(bundle)
    for entry in bundle.get("entry", []):
        get_fhir_model_class(entry["resource"]["resourceType"]).model_validate(entry["resource"])
    check_reference_types(bundle)


def _by_type(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == kind]


def _outcome(resp, status: int, code: str, issue: str) -> dict:
    """``resp`` is a valid FHIR OperationOutcome with the service's ``code`` and IssueType ``issue``."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].split(";")[0] == "application/fhir+json"
    body = resp.json()
    get_fhir_model_class("OperationOutcome").model_validate(body)
    first = body["issue"][0]
    assert first["severity"] == "error" and first["code"] == issue and issue in ISSUE_TYPES
    assert first["details"]["coding"] == [{"system": ERROR_CODE_SYSTEM, "code": code}]
    assert first["diagnostics"].strip()
    request_id = resp.headers["x-request-id"]
    assert body["extension"] == [{"url": "urn:ecgfm-ked:fhir:extension:request-id", "valueString": request_id}]
    return body


@pytest.fixture(scope="module")
def dated_record(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """E07500 with a WFDB base time and date on its record line (no zone: WFDB has none)."""
    folder = tmp_path_factory.mktemp("dated")
    header = (ECG_DIR / "E07500.hea").read_text().splitlines()
    assert header[0] == "E07500 12 500 5000"
    header[0] += " 12:33:59 12/05/2020"
    (folder / "E07500.hea").write_text("\n".join(header) + "\n")
    (folder / "E07500.mat").write_bytes((ECG_DIR / "E07500.mat").read_bytes())
    return [folder / "E07500.hea", folder / "E07500.mat"]


@pytest.fixture(scope="module")
def probabilities(client: TestClient, dated_record: list[Path]) -> list[float]:
    """The JSON answer for the dated record: its acquisition time, and the probabilities."""
    resp = client.post("/diagnose", files=upload(*dated_record))
    assert resp.status_code == 200, resp.text[:500]
    [result] = resp.json()["results"]
    assert result["source"]["acquired_at"] == "2020-05-12T12:33:59"  # ISO 8601, naive as the file says it
    return [d["probability"] for d in result["diagnoses"]]


@pytest.fixture(scope="module")
def filing(small_bundle: Path, tmp_path_factory: pytest.TempPathFactory, probabilities: list[float]
           ) -> Iterator[TestClient]:
    """A service configured for filing: recorders in Europe/Berlin, a performer, and an
    interpretation threshold between the top two probabilities (so both POS and NEG occur)."""
    top, second = probabilities[0], probabilities[1]
    assert top > second, probabilities
    settings = Settings(bundle_dir=small_bundle, data_dir=tmp_path_factory.mktemp("filing"), provider="cpu",
                        intra_op_threads=2, auth="disabled", recorder_timezone="Europe/Berlin",
                        fhir_performer="Organization/cardiology", fhir_positive_threshold=(top + second) / 2)
    with TestClient(create_app(settings)) as c:
        yield c


# --- the Bundle ---------------------------------------------------------------------------------------


def test_fhir_with_context_has_every_field(filing: TestClient, dated_record: list[Path],
                                           probabilities: list[float]) -> None:
    """END TO END with the real PDF report (app/report/pdf.py) in presentedForm."""
    before = datetime.now(UTC) - timedelta(seconds=1)
    form = {k: CONTEXT[k] for k in ("patient", "encounter", "accession_system", "accession")}  # form fields ...
    resp = filing.post("/diagnose", files=upload(*dated_record), data=form,
                       params={"order": CONTEXT["order"]}, headers=FHIR)  # ... and a query parameter
    assert resp.status_code == 200, resp.text[:800]
    assert resp.headers["content-type"].startswith("application/fhir+json")
    bundle = resp.json()
    _validate(bundle)
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    [report] = _by_type(bundle, "DiagnosticReport")
    [device] = _by_type(bundle, "Device")
    [document] = _by_type(bundle, "DocumentReference")

    assert report["subject"] == {"reference": SECRET_PATIENT}
    assert report["encounter"] == {"reference": "Encounter/enc-1"}
    assert report["basedOn"] == [{"reference": "ServiceRequest/ord-1"}]
    [identifier] = report["identifier"]
    assert (identifier["system"], identifier["value"]) == ("urn:oid:1.2.840.99999.1", "ACC-0042")
    assert identifier["type"]["coding"][0]["code"] == "ACSN"
    # the file's naive time, placed in ECGFM_RECORDER_TIMEZONE (Berlin, summer time in May)
    assert report["effectiveDateTime"] == "2020-05-12T12:33:59+02:00"
    issued = datetime.fromisoformat(report["issued"])
    assert report["issued"].endswith("Z") and before <= issued <= datetime.now(UTC)
    assert report["performer"] == [{"reference": "Organization/cardiology"}]
    [coded] = report["conclusionCode"]  # only the top diagnosis is at or above the threshold
    observations = [by_url[r["reference"]] for r in report["result"]]
    assert coded["text"] == observations[0]["code"]["text"]
    assert coded.get("coding") == observations[0]["code"].get("coding")
    [form_pdf] = report["presentedForm"]
    pdf = base64.b64decode(form_pdf["data"])
    assert form_pdf["contentType"] == "application/pdf" and pdf.startswith(b"%PDF")
    assert form_pdf["size"] == len(pdf) and form_pdf["hash"] == base64.b64encode(hashlib.sha1(pdf).digest()).decode()
    assert NO_PATIENT_NOTE not in report["conclusion"]

    assert [o["valueQuantity"]["value"] for o in observations] == probabilities
    assert [o["interpretation"][0]["coding"][0]["code"] for o in observations] == ["POS"] + ["NEG"] * (
        len(observations) - 1)
    for obs in observations:
        assert obs["subject"] == report["subject"] and obs["encounter"] == report["encounter"]
        assert obs["basedOn"] == report["basedOn"] and obs["issued"] == report["issued"]
        assert obs["effectiveDateTime"] == report["effectiveDateTime"]
        assert obs["device"]["reference"] == f"urn:uuid:{device['id']}"
        assert obs["derivedFrom"] == [{"reference": f"urn:uuid:{document['id']}", "display": "the ECG recording"}]
    assert document["subject"] == report["subject"] and "wfdb, 500 Hz, 10 s" in document["description"]
    assert "E07500" not in resp.text  # the file name never travels in FHIR


def test_fhir_without_context_is_valid_and_leaves_the_patient_to_the_caller(client: TestClient,
                                                                            dated_record: list[Path]) -> None:
    resp = client.post("/diagnose", files=upload(*dated_record), headers=FHIR)
    assert resp.status_code == 200, resp.text[:500]
    bundle = resp.json()
    _validate(bundle)
    [report] = _by_type(bundle, "DiagnosticReport")
    assert NO_PATIENT_NOTE in report["conclusion"]
    assert "subject" not in report and "presentedForm" not in report and "identifier" not in report
    assert report["effectiveDateTime"] == "2020-05-12"  # naive file time, no recorder zone set: the date only
    assert all("subject" not in o for o in _by_type(bundle, "Observation"))


def test_the_callers_acquisition_time_overrides_the_files(client: TestClient, dated_record: list[Path]) -> None:
    resp = client.post("/diagnose", files=upload(*dated_record), headers=FHIR,
                       params={"patient": "Patient/1", "acquired_at": "2021-01-02T03:04:05Z"})
    assert resp.status_code == 200, resp.text[:500]
    bundle = resp.json()
    _validate(bundle)
    [report] = _by_type(bundle, "DiagnosticReport")
    assert report["effectiveDateTime"] == "2021-01-02T03:04:05+00:00"
    assert report["presentedForm"][0]["contentType"] == "application/pdf"


# --- bad context values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("patient", "Encounter/1"), ("patient", "Patient/a b"), ("patient", "Patient/" + "x" * 65),
    ("encounter", "Patient/1"), ("order", "Order/1"), ("accession", "ACC-1"),
    ("acquired_at", "2020-05-12T12:33:59"), ("acquired_at", "not a time"),
])
@pytest.mark.parametrize("where", ["query", "form"])
def test_bad_context_values_are_422(client: TestClient, name: str, value: str, where: str) -> None:
    kwargs = {"params": {name: value}} if where == "query" else {"data": {name: value}}
    resp = client.post("/diagnose", files=upload(ECG_DIR / "E07500.hea", ECG_DIR / "E07500.mat"), **kwargs)
    assert resp.status_code == 422, resp.text[:500]
    error = resp.json()["error"]
    assert error["code"] == "invalid_request"
    field = "accession_system" if name == "accession" else name  # an accession needs its system
    assert [where, field] in [p["location"] for p in error["details"]["problems"]], error
    assert value not in error["message"] or len(value) < 12


def test_form_and_query_context_must_agree(client: TestClient) -> None:
    files = upload(ECG_DIR / "E07500.hea", ECG_DIR / "E07500.mat")
    resp = client.post("/diagnose", files=files, data={"patient": "Patient/1"}, params={"patient": "Patient/2"})
    assert resp.status_code == 422 and resp.json()["error"]["details"]["problems"][0]["location"] == ["form", "patient"]
    same = client.post("/diagnose", files=files, data={"patient": "Patient/1"}, params={"patient": "Patient/1"})
    assert same.status_code == 200, same.text[:300]


def test_embeddings_take_no_context_fields(client: TestClient) -> None:
    resp = client.post("/embeddings", files=upload(ECG_DIR / "E07500.hea", ECG_DIR / "E07500.mat"),
                       data={"patient": "Patient/1"})
    assert resp.status_code == 400 and resp.json()["error"]["details"] == {"fields": ["patient"]}


# --- errors as OperationOutcome -----------------------------------------------------------------------------


def test_errors_asked_for_as_fhir_are_operation_outcomes(client: TestClient) -> None:
    bad_upload = client.post("/diagnose", files=upload_bytes("notes.txt", b"\x00 not an ecg " * 40), headers=FHIR)
    _outcome(bad_upload, 415, "unsupported_format", "not-supported")
    no_key = client.post("/diagnose", headers={**FHIR, "Authorization": ""})
    _outcome(no_key, 401, "unauthenticated", "login")
    assert no_key.headers["www-authenticate"].startswith("Bearer")
    files = upload(ECG_DIR / "E07500.hea", ECG_DIR / "E07500.mat")
    unknown_set = client.post("/diagnose", files=files, params={"label_set": "no-such-set"},
                              headers={**FHIR, "X-Request-ID": "fhir-err-1"})
    body = _outcome(unknown_set, 404, "not_found", "not-found")
    assert body["id"] == "fhir-err-1" and "no-such-set" in body["issue"][0]["diagnostics"]
    invalid = _outcome(client.post("/diagnose", files=files, params={"top_k": -1}, headers=FHIR), 422,
                       "invalid_request", "invalid")
    assert any("top_k" in i["diagnostics"] for i in invalid["issue"][1:])
    bad_patient = client.post("/diagnose", files=files, params={"patient": "Patient/"}, headers=FHIR)
    _outcome(bad_patient, 422, "invalid_request", "invalid")
    _outcome(client.get("/no-such-endpoint", headers=FHIR), 404, "not_found", "not-found")
    wrong_method = client.patch("/labels", headers=FHIR)
    _outcome(wrong_method, 405, "method_not_allowed", "not-supported")
    assert wrong_method.headers["allow"]
    # without FHIR in Accept, the service's own error body, as before
    plain = client.post("/diagnose", files=files, params={"label_set": "no-such-set"})
    assert plain.status_code == 404 and plain.json()["error"]["code"] == "not_found"


def test_an_unready_service_and_an_internal_error_as_operation_outcomes(app_settings: MakeSettings,
                                                                        tmp_path: Path) -> None:
    with TestClient(create_app(app_settings(bundle_dir=tmp_path / "no-bundle"))) as unready:
        _outcome(unready.post("/diagnose", headers=FHIR), 503, "model_not_ready", "transient")
    app = FastAPI()
    api_errors.install(app)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("patient Doe in the message")

    wrapped = RequestObserver(app, Settings())
    with TestClient(wrapped, raise_server_exceptions=False) as c:  # type: ignore[arg-type]
        body = _outcome(c.get("/boom", headers=FHIR), 500, "internal_error", "exception")
    assert "Doe" not in str(body)


# --- the patient reference is never logged ----------------------------------------------------------------


def test_the_patient_reference_never_reaches_the_logs(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    files = upload(ECG_DIR / "E07500.hea", ECG_DIR / "E07500.mat")
    ok = client.post("/diagnose", files=files, data={"patient": SECRET_PATIENT}, headers=FHIR)
    assert ok.status_code == 200, ok.text[:300]
    refused = client.post("/diagnose", files=files, params={"patient": SECRET_PATIENT + " x", "top_k": -1})
    assert refused.status_code == 422
    failed = client.post("/diagnose", files=files, params={"patient": SECRET_PATIENT, "label_set": "no-such-set"})
    assert failed.status_code == 404
    access = [r for r in caplog.records if r.name == "app.access" and "path=/diagnose" in r.getMessage()]
    assert len(access) >= 3
    for record in caplog.records:
        if record.name.split(".")[0] in CLIENT_LOGGERS:
            continue  # the test's own HTTP client logs the URL it calls: the caller's log, not the service's
        text = f"{record.getMessage()} {record.__dict__}"
        assert "pt-4711-secret" not in text, (record.name, record.getMessage())
