"""POST /diagnose?explain=leads through the real app (small bundle, real ONNX sessions): lead
evidence per diagnosis, in the model's lead order, the reported result unchanged, and the
parameter validated."""

from __future__ import annotations

import pytest

from .helpers import assert_error, record_files, upload

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _diagnose(client, **params) -> dict:
    resp = client.post("/diagnose", files=upload(*record_files("E07500")),
                       params={"label_set": "cinc2021", "top_k": 0, **params})
    assert resp.status_code == 200, resp.text[:500]
    return resp.json()


@pytest.fixture(scope="module")
def plain(client) -> dict:
    return _diagnose(client)


def test_explain_leads_gives_12_signed_deltas_per_diagnosis(client, plain, upload_tmp) -> None:
    body = _diagnose(client, explain="leads")
    [result] = body["results"]
    [without] = plain["results"]
    assert len(result["diagnoses"]) == 26
    deltas = []
    for d in result["diagnoses"]:
        evidence = d["lead_evidence"]
        assert [e["lead"] for e in evidence] == LEADS
        assert all(set(e) == {"lead", "delta"} and isinstance(e["delta"], float) for e in evidence)
        deltas += [e["delta"] for e in evidence]
    assert min(deltas) < 0 < max(deltas)
    # the reported result is the one without explain
    strip = [{k: v for k, v in d.items() if k != "lead_evidence"} for d in result["diagnoses"]]
    assert strip == [{k: v for k, v in d.items() if k != "lead_evidence"} for d in without["diagnoses"]]
    assert "lead_masking" in body["timings_ms"]


def test_lead_evidence_is_null_unless_asked(client, plain, upload_tmp) -> None:
    assert all(d["lead_evidence"] is None for d in plain["results"][0]["diagnoses"])
    assert "lead_masking" not in plain["timings_ms"]
    none = _diagnose(client, explain="none")
    assert all(d["lead_evidence"] is None for d in none["results"][0]["diagnoses"])


def test_an_unknown_explain_value_is_422(client, upload_tmp) -> None:
    resp = client.post("/diagnose", files=upload(*record_files("E07500")), params={"explain": "noise"})
    err = assert_error(resp, 422, "invalid_request")
    assert any("explain" in str(p.get("location")) for p in err["details"]["problems"]), err


def test_openapi_declares_the_explain_parameter_and_lead_evidence(client) -> None:
    doc = client.get("/openapi.json").json()
    [param] = [p for p in doc["paths"]["/diagnose"]["post"]["parameters"] if p["name"] == "explain"]
    assert param["schema"]["enum"] == ["none", "leads"] and param["schema"]["default"] == "none"
    assert "12 extra model passes per window" in param["description"]
    schemas = doc["components"]["schemas"]
    assert "lead_evidence" in schemas["Diagnosis"]["properties"]
    assert set(schemas["LeadEvidence"]["required"]) == {"lead", "delta"}
