"""Render a diagnose result as a FHIR R4 Bundle (type "collection").

Pure: the use-case's typed ``DiagnoseResult`` (app/usecases/results.py) in, a Bundle dict out;
no HTTP, no clock, no randomness. Resource ids are name-based UUIDs (uuid5) derived from the
request id, so the same result always renders to the same Bundle, and entries are addressed
by ``urn:uuid:`` fullUrls.

The Bundle holds:

* one ``Device`` for the model (name, version), referenced by every Observation's ``device``;
* per ECG result, one ``DiagnosticReport``: status "preliminary", category HL7 v2-0074 "EC"
  (Electrocardiac: EKG, Holter), code LOINC 11524-6 "EKG study", the intended-use statement as
  ``conclusion``, ``result`` references to its Observations, and extensions carrying the model
  (name, version, provider, precision, untrained), the label set (name, version), the source
  signal (format, rate, duration, windows, derived leads; never the file name) and warnings;
* per diagnosis, one ``Observation``: status "preliminary", code SNOMED CT when the label has a
  SNOMED code (else text only, the label name), ``valueQuantity`` = probability (UCUM "1"),
  ``method`` naming model and label set, components with model and label set versions, and
  notes carrying the knowledge description and the attention evidence spans.

No patient is referenced: the service does not know one; the caller links the resources.
Only element names common to R4 and R4B are used (tests validate with fhir.resources.R4B).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from typing import Any

from app.knowledge.types import CODE_SEPARATOR
from app.usecases.results import DiagnoseResult, EcgResult, EvidenceSpan, RankedDiagnosis, ResultWarning

FHIR_VERSION = "4.0.1"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
# Logical URIs of this service's extensions (FHIR allows a logical name in Extension.url).
EXTENSION_BASE = "urn:ecgfm-ked:fhir:extension"
EXT_MODEL = f"{EXTENSION_BASE}:model"
EXT_LABEL_SET = f"{EXTENSION_BASE}:label-set"
EXT_SOURCE = f"{EXTENSION_BASE}:source-signal"
EXT_WARNING = f"{EXTENSION_BASE}:warning"
EXT_RANK = f"{EXTENSION_BASE}:rank"
EXT_LABEL_ID = f"{EXTENSION_BASE}:label-id"
EXT_AGGREGATION = f"{EXTENSION_BASE}:window-aggregation"

# label code systems as the knowledge layer names them -> FHIR system URIs
CODE_SYSTEMS = {
    "snomed ct": SNOMED,
    "snomed": SNOMED,
    "snomedct": SNOMED,
    "sct": SNOMED,
    "loinc": LOINC,
    "icd-10": ICD10,
    "icd10": ICD10,
    "icd-10-cm": ICD10CM,
    "icd10cm": ICD10CM,
}

ECG_CATEGORY = {
    "coding": [{"system": V2_0074, "code": "EC", "display": "Electrocardiac (e.g., EKG, EEC, Holter)"}],
    "text": "Cardiology",
}
OBSERVATION_CATEGORY = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "procedure",
                "display": "Procedure"}]
}
EKG_STUDY = {"coding": [{"system": LOINC, "code": "11524-6", "display": "EKG study"}], "text": "EKG study"}
UNTRAINED_NOTE = "WARNING: the model ran with untrained (random) weights; these results carry no diagnostic meaning."
EMPTY_NOTE = "The model returned no diagnoses for this ECG."


def _text(value: str | None) -> str | None:
    """A FHIR string (never empty), or None for a missing or blank one."""
    text = (value or "").strip()
    return text or None


def _string_ext(url: str, value: str | None) -> dict[str, Any] | None:
    text = _text(value)
    return {"url": url, "valueString": text} if text else None


def _complex_ext(url: str, parts: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    present = [p for p in parts if p is not None]
    return {"url": url, "extension": present} if present else None


def _namespace(request_id: str) -> uuid.UUID:
    """The uuid5 namespace of one request's resources: its id when that is a UUID."""
    try:
        return uuid.UUID(request_id)
    except ValueError:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"urn:ecgfm-ked:request:{request_id}")


def _bundle_identifier(request_id: str) -> dict[str, str]:
    try:
        return {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.UUID(request_id)}"}
    except ValueError:
        return {"system": f"{EXTENSION_BASE}:request-id", "value": request_id}


def _codeable(label: str, codes: Mapping[str, str]) -> dict[str, Any]:
    """The label as a CodeableConcept: its text, and a coding per code in a known system."""
    codings: list[dict[str, str]] = []
    for system_name, code in codes.items():
        system = CODE_SYSTEMS.get(system_name.strip().lower())
        if system is None:
            continue
        # merged classes carry several codes: "713427006|59118001" -> two codings
        separated = code.replace(";", ",").replace(CODE_SEPARATOR, ",").split(",")
        codings.extend({"system": system, "code": one.strip(), "display": label} for one in separated if one.strip())
    concept: dict[str, Any] = {"text": label}
    if codings:
        concept["coding"] = codings
    return concept


def _warning_text(w: ResultWarning) -> str:
    message = w.message.strip() or w.code
    if w.leads:
        message = f"{message} (leads: {', '.join(w.leads)})"
    return f"[{w.code}] {message}" if message != w.code else message


def _evidence_text(evidence: tuple[EvidenceSpan, ...]) -> str | None:
    spans = [f"{e.start_s:.2f}-{e.end_s:.2f} s (attention weight {e.weight:.3f})" for e in evidence]
    return "Signal segments the model attended to: " + "; ".join(spans) if spans else None


class _Renderer:
    """The resources of one result; ids and the texts every resource repeats, computed once."""

    def __init__(self, result: DiagnoseResult) -> None:
        self.result = result
        self.namespace = _namespace(result.request_id)
        model, label_set = result.model, result.label_set
        self.model_name = _text(model.name) or "ECGFM-KED"
        self.model_version = _text(model.version)
        self.model_title = f"{self.model_name} {self.model_version}" if self.model_version else self.model_name
        ls_name, ls_version = _text(label_set.name), _text(label_set.version)
        self.ls_title = (f"{ls_name} (version {ls_version})" if ls_version else ls_name) if ls_name else None
        self.model_ext = _complex_ext(EXT_MODEL, [
            _string_ext("name", self.model_name),
            _string_ext("version", self.model_version),
            _string_ext("provider", model.provider),
            _string_ext("precision", model.precision),
            {"url": "untrained", "valueBoolean": model.untrained},
        ])
        self.ls_ext = _complex_ext(EXT_LABEL_SET, [_string_ext("name", ls_name), _string_ext("version", ls_version)])
        self.method = {"text": f"{self.model_title}, zero-shot ECG classification"
                               + (f" against label set {self.ls_title}" if self.ls_title else "")}
        versions = [("model version", self.model_version), ("label set", ls_name), ("label set version", ls_version)]
        self.version_components = [{"code": {"text": name}, "valueString": value} for name, value in versions if value]
        self.device_id, self.device_url = self.urn("device", self.model_name, self.model_version or "")

    def urn(self, kind: str, *key: object) -> tuple[str, str]:
        rid = str(uuid.uuid5(self.namespace, "/".join([kind, *map(str, key)])))
        return rid, f"urn:uuid:{rid}"

    def device(self) -> dict[str, Any]:
        device: dict[str, Any] = {
            "resourceType": "Device",
            "id": self.device_id,
            "deviceName": [{"name": self.model_name, "type": "model-name"}],
            "note": [{"text": "Software: ECG foundation model with knowledge-enhanced zero-shot diagnosis."}],
        }
        if self.model_version:
            device["version"] = [{"value": self.model_version}]
        if self.model_ext:
            device["extension"] = [self.model_ext]
        return device

    def observation(self, ecg_index: int, position: int, d: RankedDiagnosis) -> tuple[str, dict[str, Any]]:
        label_key = d.label_id if d.label_id is not None else d.label
        obs_id, obs_url = self.urn("observation", ecg_index, label_key, position)
        notes = [{"text": t} for t in (_text(d.knowledge), _evidence_text(d.evidence)) if t]
        notes.append({"text": f"Probability from {self.model_title}"
                              + (f", label set {self.ls_title}" if self.ls_title else "")
                              + ". Not a diagnosis: to be confirmed by a clinician."})
        if self.result.model.untrained:
            notes.append({"text": UNTRAINED_NOTE})
        extensions = [{"url": EXT_RANK, "valueInteger": d.rank}]
        if d.label_id is not None:
            extensions.append({"url": EXT_LABEL_ID, "valueInteger": d.label_id})
        extensions.append({"url": EXT_AGGREGATION, "valueString": d.aggregation})
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": obs_id,
            "extension": extensions,
            "status": "preliminary",
            "category": [OBSERVATION_CATEGORY],
            "code": _codeable(d.label, d.codes),
            "method": self.method,
            "device": {"reference": self.device_url, "display": self.model_title},
            "valueQuantity": {"value": d.probability, "unit": "1", "system": UCUM, "code": "1"},
            "note": notes,
        }
        if self.version_components:
            obs["component"] = self.version_components
        return obs_url, obs

    def report_entries(self, ecg: EcgResult) -> list[dict[str, Any]]:
        """The ECG's DiagnosticReport entry followed by one Observation entry per diagnosis."""
        report_id, report_url = self.urn("report", ecg.ecg_index)
        observations = [self.observation(ecg.ecg_index, i, d) for i, d in enumerate(ecg.diagnoses)]
        conclusion = [UNTRAINED_NOTE] if self.result.model.untrained else []
        intended_use = _text(self.result.intended_use)
        if intended_use:
            conclusion.append(intended_use)
        if not observations:
            conclusion.append(EMPTY_NOTE)
        source = ecg.source
        source_ext = _complex_ext(EXT_SOURCE, [
            _string_ext("format", source.format),
            {"url": "samplingRate", "valueDecimal": source.fs},
            {"url": "durationSeconds", "valueDecimal": source.duration_s},
            {"url": "windows", "valueInteger": source.windows},
            *[_string_ext("derivedLead", lead) for lead in source.derived_leads],
        ])  # never the file name: it may name the patient
        warnings = [_warning_text(w) for w in (*ecg.warnings, *self.result.warnings)]
        extensions = [e for e in (self.model_ext, self.ls_ext, source_ext) if e]
        extensions += [{"url": EXT_WARNING, "valueString": w} for w in warnings]
        report: dict[str, Any] = {
            "resourceType": "DiagnosticReport",
            "id": report_id,
            "extension": extensions,
            "status": "preliminary",
            "category": [ECG_CATEGORY],
            "code": EKG_STUDY,
        }
        if conclusion:
            report["conclusion"] = " ".join(conclusion)
        if observations:
            report["result"] = [{"reference": url, "display": obs["code"]["text"]} for url, obs in observations]
        return [{"fullUrl": report_url, "resource": report},
                *({"fullUrl": url, "resource": obs} for url, obs in observations)]


def to_fhir_bundle(result: DiagnoseResult) -> dict[str, Any]:
    """The diagnose result as a FHIR R4 ``collection`` Bundle (a JSON-ready dict, no shared
    sub-objects). No Device without results; no ``entry`` without resources (FHIR forbids an
    empty array)."""
    renderer = _Renderer(result)
    entries: list[dict[str, Any]] = []
    if result.results:
        entries.append({"fullUrl": renderer.device_url, "resource": renderer.device()})
    for ecg in result.results:
        entries.extend(renderer.report_entries(ecg))
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": renderer.urn("bundle")[0],
        "identifier": _bundle_identifier(result.request_id),
        "type": "collection",
    }
    if entries:
        bundle["entry"] = entries
    return copy.deepcopy(bundle)
