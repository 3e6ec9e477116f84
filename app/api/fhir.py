"""Render a /diagnose JSON response as a FHIR R4 Bundle (type "collection").

Pure: a response dict in, a Bundle dict out; no HTTP, no clock, no randomness. Resource
ids are name-based UUIDs (uuid5) derived from the request id, so the same response always
renders to the same Bundle, and entries are addressed by ``urn:uuid:`` fullUrls.

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
import json
import uuid
from typing import Any

from app.knowledge.types import CODE_SEPARATOR

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
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "procedure", "display": "Procedure"}
    ]
}
EKG_STUDY = {"coding": [{"system": LOINC, "code": "11524-6", "display": "EKG study"}], "text": "EKG study"}
UNTRAINED_NOTE = "WARNING: the model ran with untrained (random) weights; these results carry no diagnostic meaning."
EMPTY_NOTE = "The model returned no diagnoses for this ECG."


def _s(value: Any) -> str | None:
    """A non-empty FHIR string, or None (FHIR forbids empty strings)."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _num(value: Any) -> float | int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def _ext(url: str, **value: Any) -> dict[str, Any] | None:
    """One simple extension ({"valueString": ...}); None when the value is missing."""
    (kind, v), = value.items()
    if kind == "valueString":
        v = _s(v)
    elif kind in ("valueDecimal", "valueInteger"):
        v = _num(v)
        if kind == "valueInteger" and v is not None:
            v = int(v)
    if v is None:
        return None
    return {"url": url, kind: v}


def _complex_ext(url: str, parts: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    parts = [p for p in parts if p is not None]
    return {"url": url, "extension": parts} if parts else None


def _namespace(response: dict[str, Any]) -> uuid.UUID:
    rid = response.get("request_id")
    if rid:
        try:
            return uuid.UUID(str(rid))
        except ValueError:
            return uuid.uuid5(uuid.NAMESPACE_URL, f"urn:ecgfm-ked:request:{rid}")
    blob = json.dumps(response, sort_keys=True, default=str)
    return uuid.uuid5(uuid.NAMESPACE_URL, f"urn:ecgfm-ked:response:{blob}")


def _codeable(label: str, codes: dict[str, Any] | None) -> dict[str, Any]:
    codings = []
    for system_name, code in (codes or {}).items():
        system = CODE_SYSTEMS.get(str(system_name).strip().lower())
        code = _s(code)
        if system is None or code is None:
            continue
        # merged classes carry several codes: "713427006|59118001" -> two codings
        for one in code.replace(";", ",").replace(CODE_SEPARATOR, ",").split(","):
            if one.strip():
                codings.append({"system": system, "code": one.strip(), "display": label})
    concept: dict[str, Any] = {"text": label}
    if codings:
        concept["coding"] = codings
    return concept


def _warning_text(w: Any) -> str | None:
    if isinstance(w, dict):
        msg = _s(w.get("message")) or _s(w.get("code"))
        leads = w.get("leads") or []
        if msg and leads:
            msg = f"{msg} (leads: {', '.join(map(str, leads))})"
        code = _s(w.get("code"))
        return f"[{code}] {msg}" if code and msg and msg != code else msg
    return _s(w)


def _evidence_text(evidence: Any) -> str | None:
    spans = []
    for e in evidence or []:
        if not isinstance(e, dict):
            continue
        start, end, weight = _num(e.get("start_s")), _num(e.get("end_s")), _num(e.get("weight"))
        if start is None or end is None:
            continue
        span = f"{start:.2f}-{end:.2f} s"
        spans.append(f"{span} (attention weight {weight:.3f})" if weight is not None else span)
    return "Signal segments the model attended to: " + "; ".join(spans) if spans else None


def to_fhir_bundle(response: dict[str, Any]) -> dict[str, Any]:
    """The /diagnose response as a FHIR R4 ``collection`` Bundle (a JSON-ready dict)."""
    ns = _namespace(response)

    def urn(kind: str, *key: Any) -> tuple[str, str]:
        rid = str(uuid.uuid5(ns, "/".join([kind, *map(str, key)])))
        return rid, f"urn:uuid:{rid}"

    model = response.get("model") or {}
    label_set = response.get("label_set") or {}
    model_name = _s(model.get("name")) or "ECGFM-KED"
    model_version = _s(model.get("version"))
    ls_name = _s(label_set.get("name"))
    ls_version = _s(label_set.get("version"))
    untrained = bool(model.get("untrained"))
    model_title = f"{model_name} {model_version}" if model_version else model_name
    ls_title = (f"{ls_name} (version {ls_version})" if ls_version else ls_name) if ls_name else None

    model_ext = _complex_ext(
        EXT_MODEL,
        [
            _ext("name", valueString=model_name),
            _ext("version", valueString=model_version),
            _ext("provider", valueString=model.get("provider")),
            _ext("precision", valueString=model.get("precision")),
            {"url": "untrained", "valueBoolean": untrained},
        ],
    )
    ls_ext = _complex_ext(
        EXT_LABEL_SET,
        [_ext("name", valueString=ls_name), _ext("version", valueString=ls_version)],
    )
    method = {
        "text": f"{model_title}, zero-shot ECG classification"
        + (f" against label set {ls_title}" if ls_title else "")
    }
    version_components = []
    if model_version:
        version_components.append({"code": {"text": "model version"}, "valueString": model_version})
    if ls_name:
        version_components.append({"code": {"text": "label set"}, "valueString": ls_name})
    if ls_version:
        version_components.append({"code": {"text": "label set version"}, "valueString": ls_version})

    entries: list[dict[str, Any]] = []
    results = response.get("results") or []
    device_id, device_url = urn("device", model_name, model_version or "")
    if results:
        device: dict[str, Any] = {
            "resourceType": "Device",
            "id": device_id,
            "deviceName": [{"name": model_name, "type": "model-name"}],
            "note": [{"text": "Software: ECG foundation model with knowledge-enhanced zero-shot diagnosis."}],
        }
        if model_version:
            device["version"] = [{"value": model_version}]
        if model_ext:
            device["extension"] = [model_ext]
        entries.append({"fullUrl": device_url, "resource": device})

    global_warnings = [t for t in map(_warning_text, response.get("warnings") or []) if t]
    intended_use = _s(response.get("intended_use"))

    for pos, result in enumerate(results):
        ecg_index = result.get("ecg_index", pos)
        report_id, report_url = urn("report", ecg_index)
        observation_refs = []
        observations = []
        for d_pos, diag in enumerate(result.get("diagnoses") or []):
            label = _s(diag.get("label")) or f"label {diag.get('label_id', d_pos)}"
            obs_id, obs_url = urn("observation", ecg_index, diag.get("label_id", label), d_pos)
            obs: dict[str, Any] = {
                "resourceType": "Observation",
                "id": obs_id,
                "status": "preliminary",
                "category": [OBSERVATION_CATEGORY],
                "code": _codeable(label, diag.get("codes")),
                "method": method,
                "device": {"reference": device_url, "display": model_title},
            }
            prob = _num(diag.get("probability"))
            if prob is not None:
                obs["valueQuantity"] = {"value": prob, "unit": "1", "system": UCUM, "code": "1"}
            else:
                obs["dataAbsentReason"] = {"text": "no probability reported"}
            exts = [
                _ext(EXT_RANK, valueInteger=diag.get("rank")),
                _ext(EXT_LABEL_ID, valueInteger=diag.get("label_id")),
                _ext(EXT_AGGREGATION, valueString=diag.get("aggregation")),
            ]
            exts = [e for e in exts if e]
            if exts:
                obs["extension"] = exts
            notes = []
            knowledge = _s(diag.get("knowledge"))
            if knowledge:
                notes.append({"text": knowledge})
            evidence = _evidence_text(diag.get("evidence"))
            if evidence:
                notes.append({"text": evidence})
            notes.append(
                {
                    "text": f"Probability from {model_title}"
                    + (f", label set {ls_title}" if ls_title else "")
                    + ". Not a diagnosis: to be confirmed by a clinician."
                }
            )
            if untrained:
                notes.append({"text": UNTRAINED_NOTE})
            obs["note"] = notes
            if version_components:
                obs["component"] = version_components
            observations.append({"fullUrl": obs_url, "resource": obs})
            observation_refs.append({"reference": obs_url, "display": label})

        conclusion_parts = []
        if untrained:
            conclusion_parts.append(UNTRAINED_NOTE)
        if intended_use:
            conclusion_parts.append(intended_use)
        if not observations:
            conclusion_parts.append(EMPTY_NOTE)
        source = result.get("source") or {}
        source_ext = _complex_ext(
            EXT_SOURCE,
            [
                _ext("format", valueString=source.get("format")),
                _ext("samplingRate", valueDecimal=source.get("fs")),
                _ext("durationSeconds", valueDecimal=source.get("duration_s")),
                _ext("windows", valueInteger=source.get("windows")),
                *[_ext("derivedLead", valueString=lead) for lead in source.get("derived_leads") or []],
            ],
        )
        warnings = [t for t in map(_warning_text, result.get("warnings") or []) if t] + global_warnings
        report: dict[str, Any] = {
            "resourceType": "DiagnosticReport",
            "id": report_id,
            "extension": [
                e
                for e in [model_ext, ls_ext, source_ext, *[_ext(EXT_WARNING, valueString=w) for w in warnings]]
                if e
            ],
            "status": "preliminary",
            "category": [ECG_CATEGORY],
            "code": EKG_STUDY,
            "conclusion": " ".join(conclusion_parts) or EMPTY_NOTE,
        }
        if not report["extension"]:
            del report["extension"]
        if observation_refs:
            report["result"] = observation_refs
        entries.append({"fullUrl": report_url, "resource": report})
        entries.extend(observations)

    bundle_id, _ = urn("bundle")
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": bundle_id,
        "type": "collection",
    }
    rid = _s(response.get("request_id"))
    if rid:
        try:
            bundle["identifier"] = {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.UUID(rid)}"}
        except ValueError:
            bundle["identifier"] = {"system": f"{EXTENSION_BASE}:request-id", "value": rid}
    if entries:
        bundle["entry"] = entries
    return copy.deepcopy(bundle)  # no shared sub-objects: callers may edit the result
