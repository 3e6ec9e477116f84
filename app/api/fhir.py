"""Render a diagnose result as a FHIR R4 Bundle (type "collection"), and errors as an
OperationOutcome.

Pure: the use-case's typed ``DiagnoseResult`` (app/usecases/results.py) in, a Bundle dict out;
no HTTP, no clock, no randomness: the time of issue (``issued``), the request's context
(:class:`FhirContext`) and the PDF report (``presented_form``) come in as arguments. Resource
ids are name-based UUIDs (uuid5) derived from the request id, so the same result always
renders to the same Bundle, and entries are addressed by ``urn:uuid:`` fullUrls.

The Bundle holds:

* one ``Device`` for the model (name, version), referenced by every Observation's ``device``;
* per ECG result, one ``DocumentReference`` describing the ECG recording the results were
  derived from (its format, sampling rate, duration; never the file name, which may name the
  patient; the service keeps no copy, so there is no URL or data), the target of every
  Observation's ``derivedFrom``;
* per ECG result, one ``DiagnosticReport``: status "preliminary", category HL7 v2-0074 "EC"
  (Electrocardiac: EKG, Holter), code LOINC 11524-6 "EKG study", ``effectiveDateTime`` (the
  caller's acquisition time, else the file's), ``issued``, ``conclusion`` (the intended-use
  statement, the findings at or above the interpretation threshold, and, without a patient, that
  the caller links one), ``conclusionCode`` (those findings, with their SNOMED CT codes),
  ``result`` references to its Observations, with a context ``subject``, ``encounter``,
  ``basedOn`` (the order) and ``identifier`` (the accession number, v2-0203 ACSN), a
  configured ``performer``, ``presentedForm`` (the PDF report) when given, and extensions
  carrying the model (name, version, provider, precision, untrained), the label set (name,
  version), the source signal (format, rate, duration, windows, derived leads) and warnings;
* per diagnosis, one ``Observation``: status "preliminary", code SNOMED CT when the label has a
  SNOMED code (else text only, the label name), ``valueQuantity`` = probability (UCUM "1"),
  ``interpretation`` POS/NEG (v3-ObservationInterpretation) against the interpretation
  threshold, ``method`` naming model and label set, components with model and label set
  versions, notes carrying the knowledge description and the attention evidence spans, and the
  context's subject, encounter, order, effective time and issue time.

Times: FHIR requires a zone on a dateTime with a time. A file's time that has no zone (the
recorder's local time) is placed in ``FhirOptions.recorder_timezone`` when one is configured,
else only its date is given. ``DiagnosticReport.performer`` cannot be the Device in R4 (it takes
Practitioner, PractitionerRole, Organization or CareTeam): the model stays the Observations'
``device``, and a performer is given only when configured (``FhirOptions.performer``).

Only element names common to R4 and R4B are used (tests validate with fhir.resources.R4B).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from app.knowledge.types import CODE_SEPARATOR
from app.usecases.results import DiagnoseResult, EcgResult, EvidenceSpan, RankedDiagnosis, ResultWarning

FHIR_VERSION = "4.0.1"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ISSUE_TYPE = "http://hl7.org/fhir/issue-type"
ERROR_CODE_SYSTEM = "urn:ecgfm-ked:error-code"  # the service's own error codes (ErrorCode in app/api/schemas.py)
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
EXT_REQUEST_ID = f"{EXTENSION_BASE}:request-id"

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
NO_PATIENT_NOTE = ("No patient is referenced: the service was not told one; the caller links this report and its "
                   "observations to the patient (subject) before filing them.")
DEFAULT_POSITIVE_THRESHOLD = 0.5
POSITIVE = {"system": V3_INTERPRETATION, "code": "POS", "display": "Positive"}
NEGATIVE = {"system": V3_INTERPRETATION, "code": "NEG", "display": "Negative"}
ACCESSION_TYPE = {"coding": [{"system": V2_0203, "code": "ACSN", "display": "Accession ID"}], "text": "Accession ID"}
# the media type of each source format, for the DocumentReference that describes the recording
FORMAT_MEDIA_TYPES = {
    "dicom": "application/dicom",
    "hl7_aecg": "application/xml",
    "ge_muse": "application/xml",
    "philips_sierra": "application/xml",
    "csv": "text/csv",
    "json": "application/json",
    "sph_hdf5": "application/x-hdf5",
}
OCTET_STREAM = "application/octet-stream"  # WFDB, EDF, NPY, MATLAB: no registered media type


# --- the request's context ------------------------------------------------------------------------

# What a caller may tell the service about the ECG for the FHIR answer: query parameters, or form
# fields of an upload (``app.api.routes.diagnose``), checked by ``fhir_context``.
CONTEXT_FIELDS = ("patient", "encounter", "order", "accession_system", "accession", "acquired_at")
REFERENCE_FIELDS = {"patient": "Patient", "encounter": "Encounter", "order": "ServiceRequest"}
FHIR_ID = r"[A-Za-z0-9\-.]{1,64}"
REFERENCE_PATTERNS = {name: f"^{kind}/{FHIR_ID}$" for name, kind in REFERENCE_FIELDS.items()}
MAX_ACCESSION = 64
MAX_ACCESSION_SYSTEM = 255
MAX_TIME_TEXT = 40
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
CONTEXT_DESCRIPTIONS = {
    "patient": "FHIR reference of the patient, `Patient/<id>` (for the FHIR answer's subject); never logged",
    "encounter": "FHIR reference of the encounter, `Encounter/<id>`",
    "order": "FHIR reference of the order the ECG answers, `ServiceRequest/<id>` (basedOn)",
    "accession_system": "the system (a URI, e.g. `urn:oid:1.2.3`) of the accession number; with `accession`",
    "accession": "the accession number of the ECG order (DiagnosticReport.identifier, type ACSN); with "
                 "`accession_system`",
    "acquired_at": "when the ECG was acquired, ISO 8601 with a UTC offset (`2020-05-12T12:33:59+02:00`, `...Z`) "
                   "or a date (`2020-05-12`); overrides the file's",
}


@dataclass(frozen=True)
class Accession:
    """The accession number of the ECG order (who issued it: ``system``, a URI)."""

    system: str
    value: str


@dataclass(frozen=True)
class FhirContext:
    """What the caller tells the service about the ECG(s) of one request, for the FHIR answer:
    FHIR references (``Patient/123``), the accession number, the acquisition time (overrides
    the files'). The patient reference identifies a person: it is never logged."""

    patient: str | None = None
    encounter: str | None = None
    order: str | None = None
    accession: Accession | None = None
    acquired_at: datetime | date | None = None

    @property
    def empty(self) -> bool:
        return self == FhirContext()


class ContextError(ValueError):
    """A context value that cannot be used: which field, and why (the value is never repeated)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _plain_text(field: str, value: str, limit: int) -> str:
    text = value.strip()
    if not text:
        raise ContextError(field, "must not be empty")
    if len(text) > limit:
        raise ContextError(field, f"must be at most {limit} characters, not {len(text)}")
    if _CONTROL.search(text):
        raise ContextError(field, "must not contain control characters")
    return text


def _reference(field: str, value: str) -> str:
    kind = REFERENCE_FIELDS[field]
    text = value.strip()
    if not re.fullmatch(REFERENCE_PATTERNS[field][1:-1], text):
        raise ContextError(field, f"must be a FHIR reference {kind}/<id>, the id 1-64 characters of A-Z, a-z, 0-9, "
                                  "'-' and '.'")
    return text


def parse_acquired_at(value: str) -> datetime | date:
    """The caller's acquisition time: a date (``2020-05-12``) or an ISO 8601 date-time with a UTC
    offset; ContextError for anything else (a date-time without a zone included: FHIR needs one)."""
    text = _plain_text("acquired_at", value, MAX_TIME_TEXT)
    try:
        parsed: datetime | date = (date.fromisoformat(text) if _DATE_ONLY.fullmatch(text)
                                   else datetime.fromisoformat(text))
    except ValueError:
        raise ContextError("acquired_at", "must be an ISO 8601 date (2020-05-12) or date-time with a UTC offset "
                                          "(2020-05-12T12:33:59+02:00, 2020-05-12T10:33:59Z)") from None
    if isinstance(parsed, datetime) and parsed.utcoffset() is None:
        raise ContextError("acquired_at", "a date-time needs a UTC offset (e.g. +02:00 or Z); give the date alone if "
                                          "the zone is unknown")
    if not 1900 <= parsed.year <= 2100:
        raise ContextError("acquired_at", "must be a year between 1900 and 2100")
    return parsed


def fhir_context(fields: Mapping[str, str | None]) -> FhirContext:
    """The context from its fields (``CONTEXT_FIELDS``; None or blank = not given), checked:
    ContextError naming the first field that cannot be used."""
    given = {k: v for k, v in fields.items() if v is not None and v.strip()}
    unknown = sorted(set(given) - set(CONTEXT_FIELDS))
    if unknown:
        raise ContextError(unknown[0], "is not a context field")
    refs = {name: _reference(name, given[name]) for name in REFERENCE_FIELDS if name in given}
    accession: Accession | None = None
    if "accession" in given or "accession_system" in given:
        if "accession" not in given or "accession_system" not in given:
            missing = "accession" if "accession" not in given else "accession_system"
            raise ContextError(missing, "accession and accession_system are given together (the number and who "
                                        "issued it)")
        system = _plain_text("accession_system", given["accession_system"], MAX_ACCESSION_SYSTEM)
        if not _URI.fullmatch(system):
            raise ContextError("accession_system", "must be a URI (e.g. urn:oid:1.2.3 or https://hospital.example/acsn)")
        accession = Accession(system=system, value=_plain_text("accession", given["accession"], MAX_ACCESSION))
    acquired_at = parse_acquired_at(given["acquired_at"]) if "acquired_at" in given else None
    return FhirContext(patient=refs.get("patient"), encounter=refs.get("encounter"), order=refs.get("order"),
                       accession=accession, acquired_at=acquired_at)


@dataclass(frozen=True)
class FhirOptions:
    """How this service renders FHIR (settings, and the request's threshold)."""

    # Observation.interpretation is POS at or above it, NEG below; conclusionCode lists the POS ones
    positive_threshold: float = DEFAULT_POSITIVE_THRESHOLD
    threshold_source: str = "the service's default"
    # where a file's time without a zone was taken (None: such a time is given as its date only)
    recorder_timezone: tzinfo | None = None
    # DiagnosticReport.performer / Observation.performer: Organization/..., Practitioner/..., ...
    performer: str | None = None


def interpretation_threshold(request_threshold: float, default: float) -> tuple[float, str]:
    """The threshold Observation.interpretation is given against: the request's ``threshold``
    when it is above 0 (labels below it are not returned at all), else ``default``."""
    if request_threshold > 0:
        return request_threshold, "the request's threshold"
    return default, "the service's default"


# --- times ------------------------------------------------------------------------------------------


def fhir_instant(value: datetime) -> str:
    """A FHIR ``instant`` in UTC, to the millisecond (``2026-01-02T03:04:05.678Z``)."""
    if value.utcoffset() is None:
        raise ValueError("an instant needs a zone")
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fhir_date_time(value: datetime | date, zone: tzinfo | None) -> str:
    """A FHIR ``dateTime``: a date as is; a date-time with its zone, a naive one placed in
    ``zone`` or, without one, its date only (FHIR forbids a time without a zone). An offset
    FHIR cannot write (seconds, as in old local mean times) is written in UTC."""
    if not isinstance(value, datetime):
        return value.isoformat()
    if value.utcoffset() is None:
        if zone is None:
            return value.date().isoformat()
        value = value.replace(tzinfo=zone)
    offset = value.utcoffset() or timedelta(0)
    if offset.total_seconds() % 60 or not -14 * 3600 <= offset.total_seconds() <= 14 * 3600:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds" if value.microsecond else "seconds")


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

    def __init__(self, result: DiagnoseResult, context: FhirContext, options: FhirOptions,
                 issued: datetime | None, presented_form: Callable[[int], bytes] | None) -> None:
        self.result = result
        self.context = context
        self.options = options
        self.issued = fhir_instant(issued) if issued is not None else None
        self.presented_form = presented_form
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
        threshold = options.positive_threshold
        self.threshold_text = (f"{threshold:g} ({options.threshold_source}; the probabilities are uncalibrated "
                               "model outputs, not risks)")

    def urn(self, kind: str, *key: object) -> tuple[str, str]:
        rid = str(uuid.uuid5(self.namespace, "/".join([kind, *map(str, key)])))
        return rid, f"urn:uuid:{rid}"

    # --- what every resource of one ECG shares --------------------------------------------------

    def effective(self, ecg: EcgResult) -> tuple[str | None, str | None]:
        """The ECG's effective dateTime and where it came from (for the source extension)."""
        if self.context.acquired_at is not None:
            return fhir_date_time(self.context.acquired_at, None), "request"
        acquired = ecg.source.acquired_at
        if acquired is None:
            return None, None
        if acquired.utcoffset() is not None:
            return fhir_date_time(acquired, None), "file"
        if self.options.recorder_timezone is not None:
            return fhir_date_time(acquired, self.options.recorder_timezone), "file, in the recorders' time zone"
        return fhir_date_time(acquired, None), "file, date only (the file gives no time zone)"

    def links(self, effective: str | None) -> dict[str, Any]:
        """subject, encounter, basedOn, effective and issued, as the context and clock give them
        (the elements Observation and DiagnosticReport share, in their order)."""
        ctx = self.context
        out: dict[str, Any] = {}
        if ctx.order:
            out["basedOn"] = [{"reference": ctx.order}]
        if ctx.patient:
            out["subject"] = {"reference": ctx.patient}
        if ctx.encounter:
            out["encounter"] = {"reference": ctx.encounter}
        if effective:
            out["effectiveDateTime"] = effective
        if self.issued:
            out["issued"] = self.issued
        if self.options.performer:
            out["performer"] = [{"reference": self.options.performer}]
        return out

    def positive(self, d: RankedDiagnosis) -> bool:
        return d.probability >= self.options.positive_threshold

    # --- resources -----------------------------------------------------------------------------------

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

    def document(self, ecg: EcgResult, effective: str | None) -> tuple[str, dict[str, Any]]:
        """The DocumentReference that stands for the ECG recording the results were derived from:
        what it was (format, rate, length), never its file name or content; the service keeps no copy."""
        doc_id, doc_url = self.urn("source", ecg.ecg_index)
        source = ecg.source
        what = f"{source.format}, {source.fs:g} Hz, {source.duration_s:g} s"
        document: dict[str, Any] = {
            "resourceType": "DocumentReference",
            "id": doc_id,
            "status": "current",
            "type": EKG_STUDY,
        }
        if self.context.patient:
            document["subject"] = {"reference": self.context.patient}
        if self.issued:
            document["date"] = self.issued
        document["description"] = (f"The ECG recording (ECG {ecg.ecg_index + 1} of the request) that "
                                   f"{self.model_title} scored: {what}. The service keeps no copy of it.")
        document["content"] = [{"attachment": {"contentType": FORMAT_MEDIA_TYPES.get(source.format, OCTET_STREAM),
                                               "title": f"ECG recording ({what})"}}]
        context: dict[str, Any] = {}
        if self.context.encounter:
            context["encounter"] = [{"reference": self.context.encounter}]
        if effective:
            context["period"] = {"start": effective, "end": effective}
        if self.context.order:
            context["related"] = [{"reference": self.context.order}]
        if context:
            document["context"] = context
        return doc_url, document

    def observation(self, ecg_index: int, position: int, d: RankedDiagnosis, links: dict[str, Any],
                    document_url: str) -> tuple[str, dict[str, Any]]:
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
        positive = self.positive(d)
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": obs_id,
            "extension": extensions,
            **({"basedOn": links["basedOn"]} if "basedOn" in links else {}),
            "status": "preliminary",
            "category": [OBSERVATION_CATEGORY],
            "code": _codeable(d.label, d.codes),
            **{k: links[k] for k in ("subject", "encounter", "effectiveDateTime", "issued", "performer") if k in links},
            "valueQuantity": {"value": d.probability, "unit": "1", "system": UCUM, "code": "1"},
            "interpretation": [{
                "coding": [dict(POSITIVE if positive else NEGATIVE)],
                "text": f"{'at or above' if positive else 'below'} the interpretation threshold {self.threshold_text}",
            }],
            "note": notes,
            "method": self.method,
            "device": {"reference": self.device_url, "display": self.model_title},
            "derivedFrom": [{"reference": document_url, "display": "the ECG recording"}],
        }
        if self.version_components:
            obs["component"] = self.version_components
        return obs_url, obs

    def presented(self, ecg: EcgResult) -> list[dict[str, Any]]:
        if self.presented_form is None:
            return []
        pdf = self.presented_form(ecg.ecg_index)
        attachment: dict[str, Any] = {
            "contentType": "application/pdf",
            "language": "en",
            "data": base64.b64encode(pdf).decode("ascii"),
            "size": len(pdf),
            "hash": base64.b64encode(hashlib.sha1(pdf).digest()).decode("ascii"),
            "title": f"ECG report ({self.model_title})",
        }
        if self.issued:
            attachment["creation"] = self.issued
        return [attachment]

    def conclusion(self, ecg: EcgResult) -> str:
        parts = [UNTRAINED_NOTE] if self.result.model.untrained else []
        intended_use = _text(self.result.intended_use)
        if intended_use:
            parts.append(intended_use)
        if not ecg.diagnoses:
            parts.append(EMPTY_NOTE)
        else:
            found = [f"{d.label} ({d.probability:g})" for d in ecg.diagnoses if self.positive(d)]
            parts.append(f"At or above the interpretation threshold {self.threshold_text}: {'; '.join(found)}."
                          if found else f"No diagnosis reached the interpretation threshold {self.threshold_text}.")
        if not self.context.patient:
            parts.append(NO_PATIENT_NOTE)
        return " ".join(parts)

    def report_entries(self, ecg: EcgResult) -> list[dict[str, Any]]:
        """The ECG's DocumentReference, its DiagnosticReport and one Observation per diagnosis."""
        report_id, report_url = self.urn("report", ecg.ecg_index)
        effective, effective_from = self.effective(ecg)
        links = self.links(effective)
        document_url, document = self.document(ecg, effective)
        observations = [self.observation(ecg.ecg_index, i, d, links, document_url) for i, d in enumerate(ecg.diagnoses)]
        source = ecg.source
        source_ext = _complex_ext(EXT_SOURCE, [
            _string_ext("format", source.format),
            {"url": "samplingRate", "valueDecimal": source.fs},
            {"url": "durationSeconds", "valueDecimal": source.duration_s},
            {"url": "windows", "valueInteger": source.windows},
            *[_string_ext("derivedLead", lead) for lead in source.derived_leads],
            _string_ext("effectiveTimeFrom", effective_from),
        ])  # never the file name: it may name the patient
        warnings = [_warning_text(w) for w in (*ecg.warnings, *self.result.warnings)]
        extensions = [e for e in (self.model_ext, self.ls_ext, source_ext) if e]
        extensions += [{"url": EXT_WARNING, "valueString": w} for w in warnings]
        report: dict[str, Any] = {
            "resourceType": "DiagnosticReport",
            "id": report_id,
            "extension": extensions,
        }
        if self.context.accession:
            report["identifier"] = [{"use": "usual", "type": ACCESSION_TYPE, "system": self.context.accession.system,
                                     "value": self.context.accession.value}]
        if "basedOn" in links:
            report["basedOn"] = links["basedOn"]
        report |= {"status": "preliminary", "category": [ECG_CATEGORY], "code": EKG_STUDY}
        report |= {k: links[k] for k in ("subject", "encounter", "effectiveDateTime", "issued", "performer")
                   if k in links}
        if observations:
            report["result"] = [{"reference": url, "display": obs["code"]["text"]} for url, obs in observations]
        report["conclusion"] = self.conclusion(ecg)
        codes = [_codeable(d.label, d.codes) for d in ecg.diagnoses if self.positive(d)]
        if codes:
            report["conclusionCode"] = codes
        presented = self.presented(ecg)
        if presented:
            report["presentedForm"] = presented
        return [{"fullUrl": document_url, "resource": document},
                {"fullUrl": report_url, "resource": report},
                *({"fullUrl": url, "resource": obs} for url, obs in observations)]


def to_fhir_bundle(result: DiagnoseResult, context: FhirContext | None = None, *,
                   options: FhirOptions | None = None, issued: datetime | None = None,
                   presented_form: Callable[[int], bytes] | None = None) -> dict[str, Any]:
    """The diagnose result as a FHIR R4 ``collection`` Bundle (a JSON-ready dict, no shared
    sub-objects). ``context``: what the caller said about the ECG (patient, encounter, order,
    accession, acquisition time); ``issued``: when the results were made available (an aware
    datetime; the Bundle's ``timestamp`` too); ``presented_form(ecg_index)``: the PDF report of
    that ECG, attached to its DiagnosticReport. No Device without results; no ``entry`` without
    resources (FHIR forbids an empty array)."""
    renderer = _Renderer(result, context or FhirContext(), options or FhirOptions(), issued, presented_form)
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
    if renderer.issued:
        bundle["timestamp"] = renderer.issued
    if entries:
        bundle["entry"] = entries
    return copy.deepcopy(bundle)


# --- errors -----------------------------------------------------------------------------------------

# IssueType (http://hl7.org/fhir/issue-type) of each error code the service answers with, and of
# each HTTP status for codes not listed.
ISSUE_TYPES_BY_CODE = {
    "invalid_request": "invalid",
    "invalid_input": "invalid",
    "unsafe_upload": "security",
    "unauthenticated": "login",
    "forbidden": "forbidden",
    "not_found": "not-found",
    "method_not_allowed": "not-supported",
    "request_timeout": "timeout",
    "conflict": "conflict",
    "version_conflict": "conflict",
    "model_not_loaded": "conflict",
    "model_unusable": "conflict",
    "precondition_required": "required",
    "upload_too_large": "too-costly",
    "unsupported_format": "not-supported",
    "malformed_file": "structure",
    "missing_leads": "required",
    "signal_too_short": "business-rule",
    "unsupported_signal": "not-supported",
    "internal_error": "exception",
    "batch_failed": "exception",
    "model_not_ready": "transient",
    "overloaded": "throttled",
    "deadline_exceeded": "timeout",
    "shutting_down": "transient",
    "bundle_invalid": "transient",
    "database_unavailable": "transient",
    "client_disconnected": "incomplete",
}
ISSUE_TYPES_BY_STATUS = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
                         406: "not-supported", 408: "timeout", 409: "conflict", 413: "too-costly",
                         415: "not-supported", 422: "invalid", 428: "required", 429: "throttled", 503: "transient"}


def issue_type(code: str, status: int) -> str:
    """The OperationOutcome issue code for an error of the service (its code, its HTTP status)."""
    if code in ISSUE_TYPES_BY_CODE:
        return ISSUE_TYPES_BY_CODE[code]
    return ISSUE_TYPES_BY_STATUS.get(status, "exception" if status >= 500 else "processing")


def operation_outcome(status: int, code: str, message: str, *, request_id: str | None = None,
                      problems: list[str] | None = None) -> dict[str, Any]:
    """An error as a FHIR OperationOutcome: ``issue[0]`` the error (severity error, the issue type
    of its code and status, the service's code in ``details.coding``, the message as
    ``diagnostics``); one more issue per validation problem; the request id as ``id`` (where it
    is a valid FHIR id) and in an extension."""
    text = _text(message) or code
    issue: dict[str, Any] = {
        "severity": "error",
        "code": issue_type(code, status),
        "details": {"coding": [{"system": ERROR_CODE_SYSTEM, "code": code}], "text": text},
        "diagnostics": text,
    }
    issues = [issue] + [{"severity": "error", "code": issue_type(code, status), "diagnostics": p}
                        for p in (problems or [])[:20] if _text(p)]
    outcome: dict[str, Any] = {"resourceType": "OperationOutcome"}
    if request_id and re.fullmatch(FHIR_ID, request_id):
        outcome["id"] = request_id
    if request_id:
        outcome["extension"] = [{"url": EXT_REQUEST_ID, "valueString": request_id}]
    outcome["issue"] = issues
    return outcome


FHIR_JSON = "application/fhir+json"


def accepts_fhir(accept: str | None) -> bool:
    """True when an Accept header lists ``application/fhir+json`` (with a q above 0)."""
    for item in (accept or "").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media.lower() != FHIR_JSON:
            continue
        q = next((p.split("=", 1)[1].strip() for p in params if p.lower().startswith("q=")), "1")
        try:
            if float(q) > 0:
                return True
        except ValueError:
            return True
    return False
