"""FHIR rendering of a diagnose result (the use-case's typed result), validated with the fhir.resources R4B models.

fhir.resources 8 ships R5 at its root and R4B (4.3.0) as ``fhir.resources.R4B``; it has no
4.0.1 package. DiagnosticReport, Observation, Device and Bundle are the same in R4 and R4B
for every element the renderer uses, and R5-only elements (e.g. DiagnosticReport.note) are
rejected by the R4B models, so validating with R4B catches non-R4 output.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from app.api.fhir import SNOMED, UCUM, to_fhir_bundle
from app.api.schemas import DiagnoseResponse
from app.usecases.results import (
    DiagnoseResult,
    EcgResult,
    EvidenceSpan,
    LabelSetRef,
    ModelInfo,
    RankedDiagnosis,
    ResultWarning,
    SourceDescription,
)

INTENDED = "Decision support only: not for autonomous diagnosis. Findings must be confirmed by a clinician."
MODEL = ModelInfo(name="ECGFM-KED", version="1.2.0+abc123", provider="CPUExecutionProvider", precision="fp32",
                  untrained=False, checkpoint_sha256=None, bundle="/srv/model_store/bundle")


def _source(filename: str, fmt: str, fs: float, duration_s: float, windows: int,
            derived: tuple[str, ...] = ()) -> SourceDescription:
    starts = tuple(float(min(10 * i, duration_s - 10)) for i in range(windows))
    return SourceDescription(filename=filename, format=fmt, fs=fs, duration_s=duration_s, leads_read=(),
                             derived_leads=derived, windows=windows, window_starts_s=starts, padded=False)


def _diagnosis(rank: int, label: str, label_id: int | None, probability: float, aggregation: str,
               codes: dict[str, str], knowledge: str, *evidence: EvidenceSpan) -> RankedDiagnosis:
    return RankedDiagnosis(rank=rank, label=label, label_id=label_id, probability=probability,
                           aggregation=aggregation, codes=codes, knowledge=knowledge, evidence=evidence)


def _result(**over: object) -> DiagnoseResult:
    """Three ECGs: two diagnoses (one without codes), one diagnosis, none."""
    first = EcgResult(
        ecg_index=0, ref=None, source=_source("Doe_John_1957.hea", "wfdb", 500.0, 10.0, 1, ("III", "aVF")),
        diagnoses=(
            _diagnosis(1, "atrial fibrillation", 3, 0.87, "max", {"SNOMED CT": "164889003"},
                       "Irregularly irregular rhythm without distinct P waves.",
                       EvidenceSpan(1.2, 1.5, 0.21), EvidenceSpan(4.0, 4.3, 0.12)),
            _diagnosis(2, "early repolarisation pattern", 40, 0.31, "max", {}, "J-point elevation with notching."),
        ),
        warnings=(ResultWarning("derived_leads", "leads derived from I and II", ("III", "aVF")),),
    )
    second = EcgResult(
        ecg_index=1, ref="visit-2", source=_source("second.csv", "csv", 1000.0, 12.0, 2),
        diagnoses=(_diagnosis(1, "sinus rhythm", 0, 0.95, "mean", {"SNOMED CT": "426783006"}, "Normal sinus rhythm.",
                              EvidenceSpan(0.4, 0.6, 0.3)),),
        warnings=(),
    )
    third = EcgResult(ecg_index=2, ref=None, source=_source("third.edf", "edf", 250.0, 10.0, 1), diagnoses=(),
                      warnings=())
    values: dict[str, object] = {
        "request_id": "0b8f3c2e-5d1a-4c7e-9a43-2f6f0d1e7a55",
        "model": MODEL,
        "label_set": LabelSetRef("cinc2021", "3f2a9c1d"),
        "intended_use": INTENDED,
        "results": (first, second, third),
        "warnings": (ResultWarning("slow_queue", "batch waited 2 s"),),
        "timings_ms": {"parse": 1.0, "preprocess": 2.0, "queue": 0.1, "inference": 50.0, "total": 60.0},
    }
    values.update(over)
    return DiagnoseResult(**values)  # type: ignore[arg-type]


def _validate(bundle: dict) -> None:
    Bundle.model_validate(bundle)
    for entry in bundle.get("entry", []):
        res = entry["resource"]
        get_fhir_model_class(res["resourceType"]).model_validate(res)


def _by_type(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == kind]


def test_bundle_is_valid_r4_collection_with_linked_resources():
    result = _result()
    bundle = to_fhir_bundle(result)
    json.dumps(bundle)  # JSON-ready
    _validate(bundle)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    assert bundle["identifier"]["value"] == "urn:uuid:" + result.request_id

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

    first, second, _third = reports
    assert [by_url[r["reference"]]["code"]["text"] for r in first["result"]] == [
        "atrial fibrillation", "early repolarisation pattern"]
    assert len(second["result"]) == 1
    # per-result and request-wide warnings travel with the report
    warnings = [x["valueString"] for x in first["extension"] if x["url"].endswith(":warning")]
    assert any("derived" in w and "III" in w for w in warnings) and any("batch waited" in w for w in warnings)


def test_observations_carry_code_probability_knowledge_and_versions():
    bundle = to_fhir_bundle(_result())
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
    bundle = to_fhir_bundle(_result())
    third = _by_type(bundle, "DiagnosticReport")[2]
    assert "result" not in third
    assert "no diagnoses" in third["conclusion"]


def test_no_file_names_or_timings_leak():
    text = json.dumps(to_fhir_bundle(_result()))
    assert "Doe_John" not in text and "second.csv" not in text and "timings" not in text


def test_pure_and_deterministic():
    a, b = to_fhir_bundle(_result()), to_fhir_bundle(_result())
    assert a == b
    report = a["entry"][1]["resource"]
    assert report["resourceType"] == "DiagnosticReport"
    report["code"]["coding"].clear()  # editing one bundle changes no other (nothing shared, constants included)
    assert to_fhir_bundle(_result()) == b
    other = to_fhir_bundle(_result(request_id="5c1d2b6e-0000-4000-8000-000000000001"))
    assert {e["fullUrl"] for e in a["entry"]}.isdisjoint(e["fullUrl"] for e in other["entry"])


def test_untrained_model_is_flagged_and_no_results_still_valid():
    bundle = to_fhir_bundle(_result(model=replace(MODEL, version="0.0.0", untrained=True)))
    _validate(bundle)
    for report in _by_type(bundle, "DiagnosticReport"):
        assert "untrained" in report["conclusion"]
    empty = to_fhir_bundle(_result(results=()))
    _validate(empty)
    assert "entry" not in empty and empty["type"] == "collection"


def test_odd_inputs_still_render_valid_resources():
    base = _result()
    first = base.results[0]
    af, er = first.diagnoses
    first = replace(first, diagnoses=(replace(af, codes={"SNOMED CT": "164889003,195080001", "local": "X1"}),
                                      replace(er, knowledge="")))
    result = replace(base, request_id="not-a-uuid", label_set=LabelSetRef("custom", ""), intended_use="",
                     results=(first, *base.results[1:]))
    bundle = to_fhir_bundle(result)
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


def test_json_and_fhir_render_the_same_typed_result():
    result = _result()
    body = DiagnoseResponse.from_result(result).model_dump(mode="json")
    assert body["request_id"] == result.request_id and body["label_set"] == {"name": "cinc2021", "version": "3f2a9c1d"}
    assert "bundle" not in body["model"] and body["model"]["version"] == MODEL.version  # the bundle path stays inside
    assert [r["id"] for r in body["results"]] == [None, "visit-2", None]
    first = body["results"][0]
    assert first["source"]["filename"] == "Doe_John_1957.hea"  # the JSON names the file; FHIR never does
    assert first["source"]["derived_leads"] == ["III", "aVF"]
    assert first["diagnoses"][0]["evidence"] == [{"start_s": 1.2, "end_s": 1.5, "weight": 0.21},
                                                 {"start_s": 4.0, "end_s": 4.3, "weight": 0.12}]
    assert first["warnings"] == [{"code": "derived_leads", "message": "leads derived from I and II",
                                  "leads": ["III", "aVF"]}]
    assert body["warnings"] == [{"code": "slow_queue", "message": "batch waited 2 s", "leads": []}]

    bundle = to_fhir_bundle(result)
    observations = {o["code"]["text"]: o["valueQuantity"]["value"] for o in _by_type(bundle, "Observation")}
    in_json = {d["label"]: d["probability"] for r in body["results"] for d in r["diagnoses"]}
    assert observations == in_json
