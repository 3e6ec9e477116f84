"""FHIR rendering of a diagnose result (the use-case's typed result), validated with the fhir.resources R4B models.

fhir.resources 8 ships R5 at its root and R4B (4.3.0) as ``fhir.resources.R4B``; it has no
4.0.1 package. DiagnosticReport, Observation, Device and Bundle are the same in R4 and R4B
for every element the renderer uses, and R5-only elements (e.g. DiagnosticReport.note) are
rejected by the R4B models, so validating with R4B catches non-R4 output.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from app.api.fhir import (
    ISSUE_TYPES_BY_CODE,
    NO_PATIENT_NOTE,
    SNOMED,
    UCUM,
    Accession,
    ContextError,
    FhirContext,
    FhirOptions,
    accepts_fhir,
    fhir_context,
    interpretation_threshold,
    issue_type,
    operation_outcome,
    to_fhir_bundle,
)
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
    assert "subject" not in af and "encounter" not in af  # no context: no patient
    [source] = af["derivedFrom"]
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    assert by_url[source["reference"]]["resourceType"] == "DocumentReference"
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
    report = a["entry"][2]["resource"]
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


# --- context, times, interpretation, the PDF (issue 12: FHIR an EHR can file) ----------------------

ISSUED = datetime(2026, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)
PDF = b"%PDF-1.4 test bytes, not a real report\n"
CONTEXT = FhirContext(patient="Patient/123", encounter="Encounter/enc-9", order="ServiceRequest/ord.7",
                      accession=Accession("urn:oid:1.2.840.99999.1", "ACC-0042"))
# IssueType (http://hl7.org/fhir/issue-type, R4)
ISSUE_TYPES = {"invalid", "structure", "required", "value", "invariant", "security", "login", "unknown", "expired",
               "forbidden", "suppressed", "processing", "not-supported", "duplicate", "multiple-matches",
               "not-found", "deleted", "too-long", "code-invalid", "extension", "too-costly", "business-rule",
               "conflict", "transient", "lock-error", "no-store", "exception", "timeout", "incomplete", "throttled",
               "informational"}


def check_reference_types(bundle: dict) -> None:
    """Every top-level Reference of every entry points at a resource type its element allows
    (fhir.resources records the allowed types; model_validate does not check them)."""
    types = {e["fullUrl"]: e["resource"]["resourceType"] for e in bundle.get("entry", [])}
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        model = get_fhir_model_class(resource["resourceType"])
        for name, value in resource.items():
            field = model.model_fields.get(name)
            allowed = (field.json_schema_extra or {}).get("enum_reference_types") if field else None
            if not allowed:
                continue
            for ref in value if isinstance(value, list) else [value]:
                if not isinstance(ref, dict) or "reference" not in ref:
                    continue
                target = types.get(ref["reference"]) or ref["reference"].split("/")[0]
                assert target in allowed or "Resource" in allowed, (resource["resourceType"], name, target, allowed)


def _with_times(file_time: datetime | None) -> DiagnoseResult:
    base = _result()
    first = replace(base.results[0], source=replace(base.results[0].source, acquired_at=file_time))
    return replace(base, results=(first, *base.results[1:]))


def test_context_fills_every_field_an_ehr_files() -> None:
    result = _with_times(datetime(2020, 5, 12, 12, 33, 59, tzinfo=timezone(timedelta(hours=2))))
    calls: list[int] = []

    def pdf(index: int) -> bytes:
        calls.append(index)
        return PDF

    options = FhirOptions(positive_threshold=0.5, performer="Organization/cardiology")
    bundle = to_fhir_bundle(result, CONTEXT, options=options, issued=ISSUED, presented_form=pdf)
    _validate(bundle)
    check_reference_types(bundle)
    assert calls == [0, 1, 2]  # one PDF per ECG, by its index
    assert bundle["timestamp"] == "2026-03-04T05:06:07.891Z"
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    device_url = next(u for u, r in by_url.items() if r["resourceType"] == "Device")
    report = _by_type(bundle, "DiagnosticReport")[0]
    assert report["subject"] == {"reference": "Patient/123"}
    assert report["encounter"] == {"reference": "Encounter/enc-9"}
    assert report["basedOn"] == [{"reference": "ServiceRequest/ord.7"}]
    assert report["identifier"] == [{
        "use": "usual", "system": "urn:oid:1.2.840.99999.1", "value": "ACC-0042",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN",
                             "display": "Accession ID"}], "text": "Accession ID"}}]
    assert report["effectiveDateTime"] == "2020-05-12T12:33:59+02:00"  # the file's own zone
    assert report["issued"] == "2026-03-04T05:06:07.891Z"
    assert report["performer"] == [{"reference": "Organization/cardiology"}]  # never the Device: R4 forbids it
    assert device_url not in json.dumps(report["performer"])
    # conclusionCode: the findings at or above 0.5 (0.87 af; not 0.31 early repolarisation), with SNOMED CT
    assert report["conclusionCode"] == [{"text": "atrial fibrillation", "coding": [
        {"system": SNOMED, "code": "164889003", "display": "atrial fibrillation"}]}]
    assert "atrial fibrillation (0.87)" in report["conclusion"] and "uncalibrated" in report["conclusion"]
    assert NO_PATIENT_NOTE not in report["conclusion"]
    [form] = report["presentedForm"]
    assert form["contentType"] == "application/pdf" and base64.b64decode(form["data"]) == PDF
    assert form["size"] == len(PDF) and form["hash"] == base64.b64encode(hashlib.sha1(PDF).digest()).decode()
    assert form["creation"] == report["issued"]

    observations = [by_url[r["reference"]] for r in report["result"]]
    for obs in observations:
        assert obs["subject"] == {"reference": "Patient/123"} and obs["encounter"] == {"reference": "Encounter/enc-9"}
        assert obs["basedOn"] == [{"reference": "ServiceRequest/ord.7"}]
        assert obs["effectiveDateTime"] == "2020-05-12T12:33:59+02:00" and obs["issued"] == report["issued"]
        assert obs["performer"] == [{"reference": "Organization/cardiology"}]
        assert obs["device"]["reference"] == device_url
        [source] = obs["derivedFrom"]
        document = by_url[source["reference"]]
        assert document["resourceType"] == "DocumentReference" and document["status"] == "current"
        assert document["subject"] == {"reference": "Patient/123"}
        assert document["context"]["encounter"] == [{"reference": "Encounter/enc-9"}]
        assert document["content"][0]["attachment"]["contentType"] == "application/octet-stream"  # WFDB
    interpretations = {o["code"]["text"]: o["interpretation"][0]["coding"][0]["code"] for o in observations}
    assert interpretations == {"atrial fibrillation": "POS", "early repolarisation pattern": "NEG"}
    for obs in observations:
        coding = obs["interpretation"][0]["coding"][0]
        assert coding["system"] == "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
        assert "uncalibrated" in obs["interpretation"][0]["text"]
    assert "Doe_John" not in json.dumps(bundle)  # the file name never travels, not even in the DocumentReference


def test_without_context_the_bundle_says_the_caller_links_the_patient() -> None:
    bundle = to_fhir_bundle(_result(), issued=ISSUED)
    _validate(bundle)
    check_reference_types(bundle)
    text = json.dumps(bundle)
    assert '"subject"' not in text and '"encounter"' not in text and "presentedForm" not in text
    for report in _by_type(bundle, "DiagnosticReport"):
        assert NO_PATIENT_NOTE in report["conclusion"] and report["issued"] == "2026-03-04T05:06:07.891Z"
        assert "effectiveDateTime" not in report  # the files gave no time
        assert "identifier" not in report and "basedOn" not in report and "performer" not in report
    for obs in _by_type(bundle, "Observation"):
        assert obs["interpretation"][0]["coding"][0]["code"] in ("POS", "NEG") and obs["derivedFrom"]


@pytest.mark.parametrize(("file_time", "zone", "expected"), [
    (datetime(2020, 5, 12, 12, 33, 59), None, "2020-05-12"),  # naive, no recorder zone: the date only  # noqa: DTZ001 -- a file's time without a zone
    (datetime(2020, 5, 12, 12, 33, 59), ZoneInfo("Europe/Berlin"), "2020-05-12T12:33:59+02:00"),  # summer time  # noqa: DTZ001 -- a file's time without a zone
    (datetime(2020, 1, 12, 12, 33, 59), ZoneInfo("Europe/Berlin"), "2020-01-12T12:33:59+01:00"),  # noqa: DTZ001 -- a file's time without a zone
    (datetime(2020, 5, 12, 12, 33, 59, 250000, tzinfo=UTC), ZoneInfo("Europe/Berlin"),
     "2020-05-12T12:33:59.250000+00:00"),  # the file's zone wins
    (datetime(1920, 1, 12, 12, 0, tzinfo=ZoneInfo("Europe/Amsterdam")), None,
     "1920-01-12T11:40:28+00:00"),  # a local mean time offset (+00:19:32) FHIR cannot write: UTC
])
def test_effective_time_rules(file_time: datetime, zone: ZoneInfo | None, expected: str) -> None:
    bundle = to_fhir_bundle(_with_times(file_time), options=FhirOptions(recorder_timezone=zone))
    _validate(bundle)
    report = _by_type(bundle, "DiagnosticReport")[0]
    assert report["effectiveDateTime"] == expected
    assert {o["effectiveDateTime"] for o in _by_type(bundle, "Observation")[:2]} == {expected}


def test_the_callers_time_overrides_the_files() -> None:
    file_time = datetime(2020, 5, 12, 12, 33, 59)  # noqa: DTZ001 -- a file's time without a zone
    for given, expected in ((datetime(2021, 1, 2, 3, 4, 5, tzinfo=UTC), "2021-01-02T03:04:05+00:00"),
                            (date(2021, 1, 2), "2021-01-02")):
        bundle = to_fhir_bundle(_with_times(file_time), FhirContext(acquired_at=given))
        _validate(bundle)
        assert {r["effectiveDateTime"] for r in _by_type(bundle, "DiagnosticReport")} == {expected}


def test_interpretation_threshold_choice() -> None:
    assert interpretation_threshold(0.0, 0.5) == (0.5, "the service's default")
    assert interpretation_threshold(0.9, 0.5) == (0.9, "the request's threshold")
    bundle = to_fhir_bundle(_result(), options=FhirOptions(positive_threshold=0.9,
                                                           threshold_source="the request's threshold"))
    codes = {o["code"]["text"]: o["interpretation"][0]["coding"][0]["code"] for o in _by_type(bundle, "Observation")}
    assert codes == {"atrial fibrillation": "NEG", "early repolarisation pattern": "NEG", "sinus rhythm": "POS"}
    first = _by_type(bundle, "DiagnosticReport")[0]
    assert "conclusionCode" not in first and "No diagnosis reached" in first["conclusion"]


@pytest.mark.parametrize(("fields", "field"), [
    ({"patient": "Encounter/1"}, "patient"),
    ({"patient": "Patient/"}, "patient"),
    ({"patient": "Patient/a b"}, "patient"),
    ({"patient": "Patient/" + "x" * 65}, "patient"),
    ({"patient": "https://ehr.example/fhir/Patient/1"}, "patient"),
    ({"encounter": "Patient/1"}, "encounter"),
    ({"order": "Order/1"}, "order"),
    ({"accession": "A1"}, "accession_system"),
    ({"accession_system": "urn:oid:1.2"}, "accession"),
    ({"accession_system": "not a uri", "accession": "A1"}, "accession_system"),
    ({"accession_system": "urn:oid:1.2", "accession": "A\x071"}, "accession"),
    ({"accession_system": "urn:oid:1.2", "accession": "A" * 65}, "accession"),
    ({"acquired_at": "2020-05-12T12:33:59"}, "acquired_at"),  # no zone
    ({"acquired_at": "yesterday"}, "acquired_at"),
    ({"acquired_at": "1800-01-01"}, "acquired_at"),
    ({"acquired_at": "2020-02-30"}, "acquired_at"),
])
def test_bad_context_values_are_refused(fields: dict[str, str], field: str) -> None:
    with pytest.raises(ContextError) as caught:
        fhir_context(fields)
    assert caught.value.field == field
    for value in fields.values():
        if len(value) > 8:
            assert value not in caught.value.message  # the value is never repeated (it may identify a patient)


def test_good_context_values() -> None:
    ctx = fhir_context({"patient": " Patient/123 ", "encounter": "Encounter/e.1", "order": "ServiceRequest/x-1",
                        "accession_system": "urn:oid:1.2.3", "accession": "ACC 1",
                        "acquired_at": "2020-05-12T10:33:59Z", "unused": None})
    assert ctx == FhirContext(patient="Patient/123", encounter="Encounter/e.1", order="ServiceRequest/x-1",
                              accession=Accession("urn:oid:1.2.3", "ACC 1"),
                              acquired_at=datetime(2020, 5, 12, 10, 33, 59, tzinfo=UTC))
    assert fhir_context({"acquired_at": "2020-05-12"}).acquired_at == date(2020, 5, 12)
    assert fhir_context({"patient": "  "}).empty


def test_operation_outcome_shape() -> None:
    outcome = operation_outcome(422, "invalid_request", "the request is not valid: query.top_k: too small",
                                request_id="req-1", problems=["query.top_k: too small"])
    get_fhir_model_class("OperationOutcome").model_validate(outcome)
    issue = outcome["issue"][0]
    assert issue["severity"] == "error" and issue["code"] == "invalid"
    assert issue["details"]["coding"] == [{"system": "urn:ecgfm-ked:error-code", "code": "invalid_request"}]
    assert issue["diagnostics"].startswith("the request is not valid")
    assert outcome["id"] == "req-1" and outcome["extension"][0]["valueString"] == "req-1"
    assert outcome["issue"][1]["diagnostics"] == "query.top_k: too small"
    odd = operation_outcome(503, "some_new_code", "", request_id="a:b_c")
    get_fhir_model_class("OperationOutcome").model_validate(odd)
    assert "id" not in odd and odd["issue"][0]["code"] == "transient"  # ':' is no FHIR id character
    for code, status in [("unauthenticated", 401), ("forbidden", 403), ("not_found", 404), ("upload_too_large", 413),
                         ("overloaded", 503), ("conflict", 409), ("internal_error", 500), ("http_error", 418)]:
        assert issue_type(code, status) in ISSUE_TYPES
    assert {issue_type(c, 400) for c in ISSUE_TYPES_BY_CODE} <= ISSUE_TYPES


def test_accept_header_parsing() -> None:
    assert accepts_fhir("application/fhir+json")
    assert accepts_fhir("application/json;q=0.5, application/fhir+json; fhirVersion=4.0")
    assert not accepts_fhir("application/fhir+json;q=0") and not accepts_fhir(None)
    assert not accepts_fhir("application/json") and not accepts_fhir("*/*")
