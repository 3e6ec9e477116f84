"""FHIR rendering of a /diagnose response, validated with the fhir.resources R4B models.

fhir.resources 8 ships R5 at its root and R4B (4.3.0) as ``fhir.resources.R4B``; it has no
4.0.1 package. DiagnosticReport, Observation, Device and Bundle are the same in R4 and R4B
for every element the renderer uses, and R5-only elements (e.g. DiagnosticReport.note) are
rejected by the R4B models, so validating with R4B catches non-R4 output.
"""

from __future__ import annotations

import copy
import json

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from app.api.fhir import SNOMED, UCUM, to_fhir_bundle

INTENDED = "Decision support only: not for autonomous diagnosis. Findings must be confirmed by a clinician."


def _response(**over):
    resp = {
        "request_id": "0b8f3c2e-5d1a-4c7e-9a43-2f6f0d1e7a55",
        "model": {"name": "ECGFM-KED", "version": "1.2.0+abc123", "provider": "CPUExecutionProvider",
                  "precision": "fp32", "untrained": False},
        "label_set": {"name": "cinc2021", "version": "3f2a9c1d"},
        "intended_use": INTENDED,
        "results": [
            {
                "ecg_index": 0,
                "source": {"filename": "Doe_John_1957.hea", "format": "wfdb", "fs": 500.0, "duration_s": 10.0,
                           "derived_leads": ["III", "aVF"], "windows": 1},
                "diagnoses": [
                    {"rank": 1, "label": "atrial fibrillation", "label_id": 3, "probability": 0.87,
                     "aggregation": "max", "codes": {"SNOMED CT": "164889003"},
                     "knowledge": "Irregularly irregular rhythm without distinct P waves.",
                     "evidence": [{"start_s": 1.2, "end_s": 1.5, "weight": 0.21},
                                  {"start_s": 4.0, "end_s": 4.3, "weight": 0.12}]},
                    {"rank": 2, "label": "early repolarisation pattern", "label_id": 40, "probability": 0.31,
                     "aggregation": "max", "codes": {}, "knowledge": "J-point elevation with notching.",
                     "evidence": []},
                ],
                "warnings": [{"code": "derived_leads", "message": "leads derived from I and II",
                              "leads": ["III", "aVF"]}],
            },
            {
                "ecg_index": 1,
                "source": {"filename": "second.csv", "format": "csv", "fs": 1000.0, "duration_s": 12.0,
                           "derived_leads": [], "windows": 2},
                "diagnoses": [
                    {"rank": 1, "label": "sinus rhythm", "label_id": 0, "probability": 0.95,
                     "aggregation": "mean", "codes": {"SNOMED CT": "426783006"}, "knowledge": "Normal sinus rhythm.",
                     "evidence": [{"start_s": 0.4, "end_s": 0.6, "weight": 0.3}]},
                ],
                "warnings": [],
            },
            {
                "ecg_index": 2,
                "source": {"filename": "third.edf", "format": "edf", "fs": 250.0, "duration_s": 10.0,
                           "derived_leads": [], "windows": 1},
                "diagnoses": [],
                "warnings": [],
            },
        ],
        "warnings": [{"code": "slow_queue", "message": "batch waited 2 s"}],
        "timings_ms": {"parse": 1.0, "preprocess": 2.0, "queue": 0.1, "inference": 50.0, "total": 60.0},
    }
    resp.update(over)
    return resp


def _validate(bundle: dict) -> None:
    Bundle.model_validate(bundle)
    for entry in bundle.get("entry", []):
        res = entry["resource"]
        get_fhir_model_class(res["resourceType"]).model_validate(res)


def _by_type(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == kind]


def test_bundle_is_valid_r4_collection_with_linked_resources():
    resp = _response()
    bundle = to_fhir_bundle(resp)
    json.dumps(bundle)  # JSON-ready
    _validate(bundle)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    assert bundle["identifier"]["value"] == "urn:uuid:" + resp["request_id"]

    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(urls)) == len(urls)
    for e in bundle["entry"]:
        assert e["fullUrl"] == "urn:uuid:" + e["resource"]["id"]
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}

    reports = _by_type(bundle, "DiagnosticReport")
    observations = _by_type(bundle, "Observation")
    devices = _by_type(bundle, "Device")
    assert len(reports) == 3 and len(observations) == 3 and len(devices) == 1

    for report in reports:
        assert report["status"] == "preliminary"
        assert report["code"]["coding"] == [{"system": "http://loinc.org", "code": "11524-6", "display": "EKG study"}]
        assert report["category"][0]["coding"][0]["system"] == "http://terminology.hl7.org/CodeSystem/v2-0074"
        assert INTENDED in report["conclusion"]
        model_ext = next(x for x in report["extension"] if x["url"].endswith(":model"))
        sub = {x["url"]: next(v for k, v in x.items() if k.startswith("value")) for x in model_ext["extension"]}
        assert sub["name"] == "ECGFM-KED" and sub["version"] == "1.2.0+abc123" and sub["untrained"] is False
        ls_ext = next(x for x in report["extension"] if x["url"].endswith(":label-set"))
        assert {x["url"]: x["valueString"] for x in ls_ext["extension"]} == {"name": "cinc2021", "version": "3f2a9c1d"}
        for ref in report.get("result", []):
            assert by_url[ref["reference"]]["resourceType"] == "Observation"

    first, second, third = reports
    assert [by_url[r["reference"]]["code"]["text"] for r in first["result"]] == [
        "atrial fibrillation", "early repolarisation pattern"]
    assert len(second["result"]) == 1
    # per-result and request-wide warnings travel with the report
    warnings = [x["valueString"] for x in first["extension"] if x["url"].endswith(":warning")]
    assert any("derived" in w and "III" in w for w in warnings) and any("batch waited" in w for w in warnings)


def test_observations_carry_code_probability_knowledge_and_versions():
    bundle = to_fhir_bundle(_response())
    obs = {o["code"]["text"]: o for o in _by_type(bundle, "Observation")}
    af = obs["atrial fibrillation"]
    assert af["status"] == "preliminary"
    assert af["code"]["coding"] == [{"system": SNOMED, "code": "164889003", "display": "atrial fibrillation"}]
    assert af["valueQuantity"] == {"value": 0.87, "unit": "1", "system": UCUM, "code": "1"}
    notes = [n["text"] for n in af["note"]]
    assert "Irregularly irregular rhythm without distinct P waves." in notes
    assert any("1.20-1.50 s" in n and "0.210" in n for n in notes)
    comps = {c["code"]["text"]: c["valueString"] for c in af["component"]}
    assert comps["model version"] == "1.2.0+abc123" and comps["label set version"] == "3f2a9c1d"
    assert "derivedFrom" not in af and "subject" not in af
    device = _by_type(bundle, "Device")[0]
    assert af["device"]["reference"] == "urn:uuid:" + device["id"]
    assert device["version"] == [{"value": "1.2.0+abc123"}]

    er = obs["early repolarisation pattern"]  # no codes: text only
    assert "coding" not in er["code"] and er["code"]["text"] == "early repolarisation pattern"
    assert er["valueQuantity"]["value"] == 0.31


def test_empty_diagnoses_give_a_report_without_results():
    bundle = to_fhir_bundle(_response())
    third = _by_type(bundle, "DiagnosticReport")[2]
    assert "result" not in third
    assert "no diagnoses" in third["conclusion"]


def test_no_file_names_or_timings_leak():
    text = json.dumps(to_fhir_bundle(_response()))
    assert "Doe_John" not in text and "second.csv" not in text and "timings" not in text


def test_pure_and_deterministic():
    resp = _response()
    before = copy.deepcopy(resp)
    a, b = to_fhir_bundle(resp), to_fhir_bundle(resp)
    assert resp == before and a == b
    other = to_fhir_bundle(_response(request_id="5c1d2b6e-0000-4000-8000-000000000001"))
    assert {e["fullUrl"] for e in a["entry"]}.isdisjoint(e["fullUrl"] for e in other["entry"])


def test_untrained_model_is_flagged_and_no_results_still_valid():
    bundle = to_fhir_bundle(_response(model={"name": "ECGFM-KED", "version": "0.0.0", "untrained": True}))
    _validate(bundle)
    for report in _by_type(bundle, "DiagnosticReport"):
        assert "untrained" in report["conclusion"]
    empty = to_fhir_bundle(_response(results=[]))
    _validate(empty)
    assert "entry" not in empty and empty["type"] == "collection"


def test_odd_inputs_still_render_valid_resources():
    resp = _response(request_id="not-a-uuid", label_set={"name": "custom"}, intended_use="")
    resp["results"][0]["diagnoses"][0]["codes"] = {"SNOMED CT": "164889003,195080001", "local": "X1"}
    resp["results"][0]["diagnoses"][1]["knowledge"] = ""
    bundle = to_fhir_bundle(resp)
    _validate(bundle)
    af = next(o for o in _by_type(bundle, "Observation") if o["code"]["text"] == "atrial fibrillation")
    assert [c["code"] for c in af["code"]["coding"]] == ["164889003", "195080001"]
    assert bundle["identifier"]["value"] == "not-a-uuid"


def test_validator_has_teeth():
    """The R4B models reject what R4 forbids, so _validate above is a real check.

    (They do not check code values against value sets, e.g. status "guessed" passes; the
    tests above assert status, codes and systems themselves.)
    """
    obs = get_fhir_model_class("Observation")
    with pytest.raises(ValidationError):  # status is required
        obs.model_validate({"resourceType": "Observation", "code": {"text": "x"}})
    with pytest.raises(ValidationError):  # FHIR strings are never empty
        obs.model_validate({"resourceType": "Observation", "status": "final", "code": {"text": ""}})
    with pytest.raises(ValidationError):  # value[x] is a choice: one only
        obs.model_validate({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                            "valueQuantity": {"value": 1}, "valueString": "a"})
    with pytest.raises(ValidationError):  # note is R5-only on DiagnosticReport
        get_fhir_model_class("DiagnosticReport").model_validate(
            {"resourceType": "DiagnosticReport", "status": "preliminary", "code": {"text": "x"},
             "note": [{"text": "n"}]})
    with pytest.raises(ValidationError):
        Bundle.model_validate({"resourceType": "Bundle", "type": "collection",
                               "entry": [{"fullUrl": "urn:uuid:x", "resource": {"resourceType": "Observation"}}]})
