"""Request and response bodies (pydantic at the HTTP edge; dataclasses inside)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.knowledge.types import Label, LabelDraft, LabelSet, LabelSetDraft
from app.serving.runtime import ModelInfo
from app.usecases import results as diagnose_results

# --- errors ----------------------------------------------------------------------------------


class ErrorCode(StrEnum):
    """Every ``error.code`` the HTTP service answers with (stable: part of the API contract).

    The HTTP status of each is in ``app/api/errors.py``; tests/api/test_openapi_contract.py checks
    that every domain error the service can raise has its code here.
    """

    invalid_request = "invalid_request"          # 400/422: parameters or body fail validation
    invalid_input = "invalid_input"              # 400: well-formed request whose content cannot be used
    unsafe_upload = "unsafe_upload"              # 400: path traversal or links in an upload
    not_found = "not_found"                      # 404: unknown label, label set, version or path
    method_not_allowed = "method_not_allowed"    # 405
    request_timeout = "request_timeout"          # 408: the request body did not arrive in time
    unauthenticated = "unauthenticated"          # 401: no API key, or an unknown or revoked one
    forbidden = "forbidden"                      # 403: the key's scope does not allow the operation
    conflict = "conflict"                        # 409: name taken, label still in a set
    version_conflict = "version_conflict"        # 409: If-Match names a revision that is no longer current
    model_not_loaded = "model_not_loaded"        # 409: model= names a version in the store that is not loaded
    model_unusable = "model_unusable"            # 409: the version's bundle fails its checks or cannot load
    precondition_required = "precondition_required"  # 428: a replace sent without If-Match
    upload_too_large = "upload_too_large"        # 413
    unsupported_format = "unsupported_format"    # 415: content type or file format not read
    malformed_file = "malformed_file"            # 422: a known format with broken content
    missing_leads = "missing_leads"              # 422: standard leads missing and not derivable
    signal_too_short = "signal_too_short"        # 422: shorter than one window (see pad=true)
    unsupported_signal = "unsupported_signal"    # 422: rate, units or shape outside the limits
    internal_error = "internal_error"            # 500: a bug; logged without request content
    batch_failed = "batch_failed"                # 500: the model run for a batch failed
    model_not_ready = "model_not_ready"          # 503: starting, or the model failed to load
    overloaded = "overloaded"                    # 503 + Retry-After: too much work queued (R3)
    deadline_exceeded = "deadline_exceeded"      # 503 + Retry-After: not scored within the request deadline
    shutting_down = "shutting_down"              # 503 + Retry-After: the process is draining (SIGTERM)
    bundle_invalid = "bundle_invalid"            # 503: the model bundle cannot be used
    database_unavailable = "database_unavailable"  # 503: knowledge database unreachable (Retry-After)
    client_disconnected = "client_disconnected"  # 499: the client left mid-body (seen in metrics only)
    http_error = "http_error"                    # any other HTTP status the framework answers with


class ErrorDetail(BaseModel):
    code: ErrorCode = Field(..., description="stable machine-readable reason; see the ErrorCode enum")
    message: str = Field(..., description="what is wrong and how to fix it, for a person")
    details: dict[str, Any] = Field({}, description="structured facts about the problem (e.g. `problems` for "
                                                    "invalid_request: each with `location` and `problem`)")


class ErrorBody(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "error": {"code": "not_found", "message": "no label set named 'rhythm'", "details": {}},
        "request_id": "6f1c2a9e0b7d4e55a3c1d2e3f4a5b6c7",
    }]})

    error: ErrorDetail
    request_id: str | None = Field(
        None, description="the request's id (the caller's X-Request-ID, or one the service made): quote it when "
                          "reporting a problem; it is in the service's access log too",
    )


# --- operations ----------------------------------------------------------------------------


class HealthOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"]


class ReadinessChecks(BaseModel):
    model: bool = Field(..., description="a model bundle is loaded")
    database: bool = Field(..., description="the knowledge database answers")


class ReadinessOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "ready", "checks": {"model": True, "database": True}},
        {"status": "not_ready", "checks": {"model": False, "database": False},
         "reason": "no model bundle at model_store/bundle: run `ecgfm-ked fetch --export-to model_store/bundle`"},
    ]})

    status: Literal["ready", "not_ready"]
    checks: ReadinessChecks
    reason: str | None = Field(None, description="why the model did not load (only while not ready)")


class ServedModel(BaseModel):
    name: str = Field(..., examples=["ECGFM-KED"])
    version: str = Field(..., examples=["ecgfm-ked-3c1f9a0e52d4"])
    provider: str = Field(..., description="ONNX Runtime execution provider actually in use",
                          examples=["CPUExecutionProvider"])
    precision: str = Field(..., examples=["fp32"])
    untrained: bool = Field(..., description="true for a demo bundle of random weights: its outputs mean nothing")
    checkpoint_sha256: str | None = Field(None, description="sha256 of the checkpoint the bundle was exported from")


class ModelDescriptionOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "model": {"name": "ECGFM-KED", "version": "ecgfm-ked-3c1f9a0e52d4", "provider": "CPUExecutionProvider",
                  "precision": "fp32", "untrained": False, "checkpoint_sha256": "9b2e...c41d"},
        "manifest": {"model_version": "ecgfm-ked-3c1f9a0e52d4", "opset": 17, "untrained": False,
                     "preprocessing": {"sampling_rate_hz": 100, "window_samples": 1000, "units": "mV"}},
    }]})

    model: ServedModel
    manifest: dict[str, Any] = Field(..., description="the bundle's manifest.json (graphs, config, contract, parity)")


ModelState = Literal["active", "loaded", "draining", "available", "unusable"]


class ModelVersionOut(BaseModel):
    version: str = Field(..., description="the bundle's model_version: what answers carry, what model= pins",
                         examples=["ecgfm-ked-3c1f9a0e52d4"])
    bundle: str = Field(..., description="the bundle's folder in the model store", examples=["bundle"])
    state: ModelState = Field(..., description="active: answers requests; loaded: in memory, pinnable with model=; "
                              "draining: being released after a switch; available: in the store, not loaded; "
                              "unusable: its bundle cannot be served (see problem)")
    problem: str | None = Field(None, description="why an unusable bundle cannot be served")
    untrained: bool = Field(..., description="a demo bundle of random weights: its outputs mean nothing")
    source_checkpoint_sha256: str | None = Field(None, description="sha256 of the checkpoint it was exported from")
    exported_at: str | None = Field(None, description="when the bundle was exported (UTC)")
    parity: dict[str, Any] | None = Field(None, description="ONNX vs PyTorch agreement measured at export")
    finetuned: dict[str, Any] | None = Field(None, description="for a few-shot adapted checkpoint: its base "
                                             "checkpoint, recipe, fraction, seed and validation metrics")
    evaluation: dict[str, Any] | None = Field(None, description="the summary `ecgfm-ked evaluate --attach` left "
                                              "in the bundle (macro AUROC/AUPRC with 95 % intervals, data, date)")


class ModelsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "active": "ecgfm-ked-3c1f9a0e52d4", "recorded_active": "ecgfm-ked-3c1f9a0e52d4",
        "models": [{"version": "ecgfm-ked-3c1f9a0e52d4", "bundle": "bundle", "state": "active", "untrained": False,
                    "source_checkpoint_sha256": "3c1f9a0e52d4...", "exported_at": "2026-11-30T09:12:44Z"},
                   {"version": "ecgfm-ked-8d20b6c1aa07", "bundle": "site-ft-10pct", "state": "available",
                    "untrained": False, "finetuned": {"fraction": 0.1, "seed": 42}}],
    }]})

    active: str = Field(..., description="the version this worker answers with when a request pins none")
    recorded_active: str | None = Field(None, description="the active version the database records (every worker "
                                        "follows it within ECGFM_MODEL_POLL_S); null before any activation")
    models: list[ModelVersionOut]


class ActivationOut(BaseModel):
    active: str = Field(..., description="the version now active")
    previous: str | None = Field(None, description="the version it replaced (released once its last request ends)")
    switched: bool = Field(..., description="false: it was the active version already")
    load_s: float = Field(..., description="seconds to load and warm up the new version")
    activated_by: str = Field(..., description="the name of the key that activated it")
    activated_at: datetime


class FormatOut(BaseModel):
    name: str = Field(..., examples=["wfdb"])
    title: str = Field(..., examples=["WFDB (.hea + .dat/.mat)"])
    extensions: list[str] = Field(..., examples=[[".hea", ".dat", ".mat"]])


class JsonBodyHint(BaseModel):
    content_type: Literal["application/json"]
    body: str = Field(..., description="the shape of a JSON request to POST /diagnose")


class SamplingRateLimits(BaseModel):
    min: float
    max: float


class InputLimits(BaseModel):
    max_upload_mb: float
    max_files: int
    max_archive_members: int
    max_unpacked_mb: float
    max_ecgs_per_request: int
    min_duration_s: float
    min_duration_s_with_pad: float
    max_duration_s: float
    sampling_rate_hz: SamplingRateLimits


class FormatsOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True, json_schema_extra={"examples": [{
        "formats": [{"name": "wfdb", "title": "WFDB (.hea + .dat/.mat)", "extensions": [".hea", ".dat", ".mat"]}],
        "json": {"content_type": "application/json",
                 "body": '{"ecgs": [{"sampling_rate": 500, "units": "mV", "leads": {"I": [...], ...}}]}'},
        "limits": {"max_upload_mb": 50, "max_files": 64, "max_archive_members": 256, "max_unpacked_mb": 200,
                   "max_ecgs_per_request": 32, "min_duration_s": 10.0, "min_duration_s_with_pad": 2.0,
                   "max_duration_s": 600.0, "sampling_rate_hz": {"min": 50, "max": 10000}},
        "preprocessing": {"sampling_rate_hz": 100, "window_samples": 1000, "units": "mV"},
    }]})

    formats: list[FormatOut] = Field(..., description="accepted formats, in detection order")
    json_body: JsonBodyHint = Field(..., alias="json")
    limits: InputLimits
    preprocessing: dict[str, Any] = Field(..., description="the served model's preprocessing contract")


# --- labels --------------------------------------------------------------------------------


WELLENS: dict[str, Any] = {
    "name": "wellens syndrome",
    "description": "Deeply inverted or biphasic symmetric T waves in V2-V3 with preserved R waves and little or no ST "
                   "elevation, in a patient with recent chest pain; suggests critical proximal LAD stenosis.",
    "synonyms": ["wellens sign", "LAD coronary T-wave syndrome"],
    "codes": {},
    "encode_text": "description",
}


# No NUL or other control characters in what labels store (PostgreSQL refuses NUL in text, and
# they have no place in a name): the pattern is in the OpenAPI schema, so clients see the rule.
# Names, versions, synonyms and codes: none at all; descriptions may hold tab and line breaks.
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f]*$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
NAME_MAX = 200
Name = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX, pattern=NO_CONTROL_PATTERN)]
ShortText = Annotated[str, StringConstraints(max_length=NAME_MAX, pattern=NO_CONTROL_PATTERN)]
LongText = Annotated[str, StringConstraints(max_length=4000, pattern=TEXT_PATTERN)]
LABEL_ID_MAX = 2**31 - 1  # the largest id both databases can hold (PostgreSQL INTEGER)


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{**WELLENS, "label_sets": ["default"]}]})

    name: Name = Field(..., examples=["wellens syndrome"])
    description: LongText = Field(
        ...,
        examples=["Biphasic or deeply inverted symmetric T waves in V2-V3 with little or no ST elevation ..."],
        description="the knowledge a clinician reads (and, with encode_text=description, what the model sees)",
    )
    synonyms: list[ShortText] = []
    codes: dict[Name, ShortText] = Field({}, examples=[{"SNOMED CT": "164889003"}])
    encode_text: Literal["name", "description"] = Field(
        "description",
        description="text sent to the text encoder: the name (as pretraining did for diagnoses it saw) "
        "or the description (recommended for new diagnoses)",
    )
    label_sets: list[Name] = Field([], description="existing label sets to append this label to")

    def draft(self) -> LabelDraft:
        return LabelDraft(self.name, self.description, tuple(self.synonyms), dict(self.codes), self.encode_text,
                          tuple(self.label_sets))


class LabelReplace(BaseModel):
    """The whole of a label, for PUT (a full replace: every field is required, so a field left
    out cannot be wiped by accident). Which sets it is in is changed through the sets."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [WELLENS]})

    name: Name
    description: LongText
    synonyms: list[ShortText]
    codes: dict[Name, ShortText] = Field(..., examples=[{"SNOMED CT": "164889003"}])
    encode_text: Literal["name", "description"]

    def draft(self) -> LabelDraft:
        return LabelDraft(self.name, self.description, tuple(self.synonyms), dict(self.codes), self.encode_text)


REVISION_DESCRIPTION = ("grows with every change; also the `ETag` header (`\"<revision>\"`) to send as `If-Match` "
                        "when replacing or deleting")
DELETED_DESCRIPTION = "when a built-in one was deleted (listed only with include_deleted=true); it can be restored"


class LabelOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 77, **WELLENS, "builtin": False, "updated_at": "2025-03-14T09:26:53.589000Z", "revision": 1,
        "label_sets": ["default"], "embedded": True,
    }]})

    id: int
    name: str
    description: str
    synonyms: list[str]
    codes: dict[str, str]
    encode_text: str
    builtin: bool
    updated_at: datetime
    revision: int = Field(..., ge=1, description=REVISION_DESCRIPTION)
    deleted_at: datetime | None = Field(None, description=DELETED_DESCRIPTION)
    label_sets: list[str] = []
    embedded: bool = Field(False, description="its text vector is in the cache for the served text encoder")

    @classmethod
    def of(cls, label: Label, *, label_sets: list[str] | None = None, embedded: bool = False) -> LabelOut:
        return cls(id=label.id, name=label.name, description=label.description, synonyms=list(label.synonyms),
                   codes=dict(label.codes), encode_text=label.encode_text, builtin=label.builtin,
                   updated_at=label.updated_at, revision=label.revision, deleted_at=label.deleted_at,
                   label_sets=label_sets or [], embedded=embedded)


class LabelSetIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "rhythm", "description": "rhythm screening panel",
        "labels": ["sinus rhythm", "atrial fibrillation", "atrial flutter"],
    }]})

    name: Name
    description: LongText = ""
    labels: list[Name] = Field(..., min_length=1, description="label names, in order")

    def draft(self) -> LabelSetDraft:
        return LabelSetDraft(self.name, self.description, tuple(self.labels))


class LabelSetReplace(LabelSetIn):
    """The whole of a label set, for PUT (a full replace: every field is required)."""

    description: LongText = Field(..., description="the set's description (an empty string for none)")


class LabelSetOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "rhythm", "description": "rhythm screening panel", "version": "36995e4a2f2885eb", "builtin": False,
        "labels": ["sinus rhythm", "atrial fibrillation", "atrial flutter"], "updated_at": "2025-03-14T09:30:02Z",
        "revision": 1,
    }]})

    name: str
    description: str
    version: str
    builtin: bool
    labels: list[str]
    updated_at: datetime | None = None
    revision: int = Field(..., ge=1, description=REVISION_DESCRIPTION)
    deleted_at: datetime | None = Field(None, description=DELETED_DESCRIPTION)

    @classmethod
    def of(cls, s: LabelSet) -> LabelSetOut:
        return cls(name=s.name, description=s.description, version=s.version, builtin=s.builtin,
                   labels=list(s.label_names), updated_at=s.updated_at, revision=s.revision,
                   deleted_at=s.deleted_at)


# --- diagnose ------------------------------------------------------------------------------


class EcgArrays(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=128,
                           description="caller's reference, echoed back (do not put patient identifiers here)")
    sampling_rate: float = Field(..., gt=0, examples=[500])
    units: str = Field("mV", examples=["mV", "uV"])
    leads: dict[str, list[float | None]] = Field(..., description="one array per named lead; null = missing sample")


# Shortened to 4 samples: a real request carries at least 10 s per lead. I, II and V1-V6 are enough
# (III, aVR, aVL and aVF are derived from I and II); all 12 may be sent.
DIAGNOSE_JSON_EXAMPLE: dict[str, Any] = {
    "ecgs": [{
        "id": "visit-3-ecg-1",
        "sampling_rate": 500,
        "units": "mV",
        "leads": {
            "I": [0.012, 0.015, 0.021, 0.034], "II": [0.020, 0.026, 0.041, 0.065],
            "V1": [-0.010, -0.012, -0.004, 0.008], "V2": [0.031, 0.037, 0.052, 0.090],
            "V3": [0.028, 0.033, 0.047, 0.081], "V4": [0.025, 0.030, 0.044, 0.076],
            "V5": [0.019, 0.024, 0.036, 0.061], "V6": [0.015, 0.019, 0.028, 0.047],
        },
    }],
}


class DiagnoseJson(BaseModel):
    """A JSON request to POST /diagnose: ECGs as lead arrays."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [DIAGNOSE_JSON_EXAMPLE]})

    ecgs: list[EcgArrays] = Field(..., min_length=1)


class Evidence(BaseModel):
    start_s: float = Field(..., description="seconds from the start of the record")
    end_s: float
    weight: float = Field(..., description="share of the label's attention in this span")

    @classmethod
    def of(cls, span: diagnose_results.EvidenceSpan) -> Evidence:
        return cls(start_s=span.start_s, end_s=span.end_s, weight=span.weight)


class LeadEvidence(BaseModel):
    """How one diagnosis' probability moves when one lead is masked (``explain=leads``).

    The lead is masked by holding it at its own mean over each window (a flat line at its
    baseline level; a lead that is already flat is unchanged, so its delta is 0), the ECG is
    scored again with the rest of the leads as they were, and the masked probability is combined
    over windows as ``probability`` is. ``delta`` = that probability - ``probability``: negative
    where the lead supported the diagnosis (without it the model is less sure), positive where it
    argued against it. Evidence about what the model used, not about the patient."""

    lead: str = Field(..., examples=["V1"])
    delta: float = Field(..., description="probability with the lead masked minus the reported probability "
                                          "(negative: the lead supported the diagnosis)", examples=[-0.0421])

    @classmethod
    def of(cls, effect: diagnose_results.LeadEffect) -> LeadEvidence:
        return cls(lead=effect.lead, delta=effect.delta)


class Diagnosis(BaseModel):
    rank: int = Field(..., description="1 = most probable label of the set (kept when others are filtered out)")
    label: str
    label_id: int | None
    probability: float = Field(..., description="uncalibrated zero-shot probability (depends on the whole label set)")
    aggregation: str = Field(..., description="how window probabilities were combined: max, mean or single_window")
    codes: dict[str, str]
    knowledge: str = Field(..., description="the label's description, for the clinician")
    evidence: list[Evidence] = Field(..., description="signal spans the label attended to most, heaviest first")
    window_probabilities: list[float] | None = Field(None, description="per window (with include_windows=true)")
    lead_evidence: list[LeadEvidence] | None = Field(
        None, description="with explain=leads (else null): per lead, in the model's lead order, how the probability "
                          "moves when that lead is masked (held at its mean); negative delta: the lead supported "
                          "the diagnosis")

    @classmethod
    def of(cls, d: diagnose_results.RankedDiagnosis) -> Diagnosis:
        return cls(rank=d.rank, label=d.label, label_id=d.label_id, probability=d.probability,
                   aggregation=d.aggregation, codes=dict(d.codes), knowledge=d.knowledge,
                   evidence=[Evidence.of(e) for e in d.evidence],
                   window_probabilities=None if d.window_probabilities is None else list(d.window_probabilities),
                   lead_evidence=None if d.lead_effects is None else [LeadEvidence.of(e) for e in d.lead_effects])


class SignalWarningOut(BaseModel):
    code: str = Field(..., examples=["derived_leads"])
    message: str
    leads: list[str] = []

    @classmethod
    def of(cls, w: diagnose_results.ResultWarning) -> SignalWarningOut:
        return cls(code=w.code, message=w.message, leads=list(w.leads))


class SourceOut(BaseModel):
    filename: str | None
    format: str
    fs: float = Field(..., description="the record's own sampling rate (Hz)")
    duration_s: float
    leads_read: list[str]
    derived_leads: list[str]
    windows: int
    window_starts_s: list[float]
    padded: bool
    acquired_at: datetime | None = Field(
        None, description="when the ECG was acquired, as the file states it (ISO 8601; with a UTC offset only "
                          "where the file gives a zone, else the recorder's local time); null when the file has none")

    @classmethod
    def of(cls, s: diagnose_results.SourceDescription) -> SourceOut:
        return cls(filename=s.filename, format=s.format, fs=s.fs, duration_s=s.duration_s,
                   leads_read=list(s.leads_read), derived_leads=list(s.derived_leads), windows=s.windows,
                   window_starts_s=list(s.window_starts_s), padded=s.padded, acquired_at=s.acquired_at)


class EcgResult(BaseModel):
    ecg_index: int
    id: str | None = Field(None, description="the caller's reference (JSON requests), echoed back")
    source: SourceOut
    diagnoses: list[Diagnosis]
    warnings: list[SignalWarningOut]

    @classmethod
    def of(cls, r: diagnose_results.EcgResult) -> EcgResult:
        return cls(ecg_index=r.ecg_index, id=r.ref, source=SourceOut.of(r.source),
                   diagnoses=[Diagnosis.of(d) for d in r.diagnoses],
                   warnings=[SignalWarningOut.of(w) for w in r.warnings])


class ModelOut(BaseModel):
    name: str
    version: str
    provider: str
    precision: str
    untrained: bool
    checkpoint_sha256: str | None = None

    @classmethod
    def of(cls, m: ModelInfo) -> ModelOut:
        return cls(name=m.name, version=m.version, provider=m.provider, precision=m.precision, untrained=m.untrained,
                   checkpoint_sha256=m.checkpoint_sha256)


class LabelSetRef(BaseModel):
    name: str
    version: str = Field(..., description="content hash of the label set's labels and texts")


DIAGNOSE_RESPONSE_EXAMPLE: dict[str, Any] = {
    "request_id": "6f1c2a9e0b7d4e55a3c1d2e3f4a5b6c7",
    "model": {"name": "ECGFM-KED", "version": "ecgfm-ked-3c1f9a0e52d4", "provider": "CPUExecutionProvider",
              "precision": "fp32", "untrained": False, "checkpoint_sha256": None},
    "label_set": {"name": "default", "version": "5f0c8e1d9a2b4c37"},
    "intended_use": "Decision support for qualified clinicians, not a diagnosis. ...",
    "results": [{
        "ecg_index": 0,
        "id": None,
        "source": {"filename": "00001_hr.hea", "format": "wfdb", "fs": 500.0, "duration_s": 10.0,
                   "leads_read": ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"],
                   "derived_leads": [], "windows": 1, "window_starts_s": [0.0], "padded": False,
                   "acquired_at": "2020-05-12T12:33:59"},
        "diagnoses": [{
            "rank": 1, "label": "atrial fibrillation", "label_id": 12, "probability": 0.912345,
            "aggregation": "single_window", "codes": {"SNOMED CT": "49436004"},
            "knowledge": "Irregularly irregular rhythm without distinct P waves ...",
            "evidence": [{"start_s": 3.125, "end_s": 3.75, "weight": 0.2113}, {"start_s": 7.5, "end_s": 7.8125,
                                                                              "weight": 0.0932}],
            "window_probabilities": None,
            "lead_evidence": None,
        }],
        "warnings": [],
    }],
    "warnings": [],
    "timings_ms": {"parse": 4.1, "embed": 0.2, "preprocess": 6.3, "queue": 1.2, "inference": 48.7, "total": 62.0},
}


class DiagnoseResponse(BaseModel):
    """The JSON answer of POST /diagnose (``DiagnoseResponse.from_result`` of the use-case's result)."""

    model_config = ConfigDict(json_schema_extra={"examples": [DIAGNOSE_RESPONSE_EXAMPLE]})

    request_id: str = Field(..., description="the request's id (the X-Request-ID header), also in the access log")
    model: ModelOut
    label_set: LabelSetRef
    intended_use: str
    results: list[EcgResult] = Field(..., description="one per ECG, in the order read")
    warnings: list[SignalWarningOut] = Field(..., description="about the whole response (e.g. an untrained model)")
    timings_ms: dict[str, float] = Field(..., description="milliseconds per stage, and total")

    @classmethod
    def from_result(cls, result: diagnose_results.DiagnoseResult) -> DiagnoseResponse:
        return cls(request_id=result.request_id, model=ModelOut.of(result.model),
                   label_set=LabelSetRef(name=result.label_set.name, version=result.label_set.version),
                   intended_use=result.intended_use, results=[EcgResult.of(r) for r in result.results],
                   warnings=[SignalWarningOut.of(w) for w in result.warnings], timings_ms=dict(result.timings_ms))


# --- POST /embeddings -------------------------------------------------------------------------


class WindowFeaturesOut(BaseModel):
    start_s: float = Field(..., description="where the 10 s window starts in the record")
    pooled: list[float] = Field(..., description="the window's feature vector (768 for the published model): the "
                                "mean of its tokens")
    tokens: list[list[float]] | None = Field(None, description="with include_tokens=true: the encoder's tokens, one "
                                             "per segment (32 x 768 for the published model)")


class EcgFeaturesOut(BaseModel):
    ecg_index: int
    id: str | None = Field(None, description="the caller's reference (JSON requests), echoed back")
    source: SourceOut
    pooled: list[float] = Field(..., description="the ECG's feature vector: the mean of its windows' vectors")
    windows: list[WindowFeaturesOut]
    warnings: list[SignalWarningOut]


class EmbeddingsResponse(BaseModel):
    """The JSON answer of POST /embeddings (``EmbeddingsResponse.from_result`` of the use-case's result)."""

    request_id: str
    model: ModelOut
    intended_use: str
    pooling: str = Field(..., description="how the pooled vectors are made")
    dimension: int = Field(..., description="length of each pooled vector")
    results: list[EcgFeaturesOut] = Field(..., description="one per ECG, in the order read")
    warnings: list[SignalWarningOut]
    timings_ms: dict[str, float]

    @classmethod
    def from_result(cls, result: Any) -> EmbeddingsResponse:
        """``result``: an ``app.usecases.embed.EmbedResult``."""
        results = [EcgFeaturesOut(
            ecg_index=r.ecg_index, id=r.ref, source=SourceOut.of(r.source), pooled=r.pooled.tolist(),
            windows=[WindowFeaturesOut(start_s=w.start_s, pooled=w.pooled.tolist(),
                                       tokens=None if w.tokens is None else w.tokens.tolist()) for w in r.windows],
            warnings=[SignalWarningOut.of(w) for w in r.warnings]) for r in result.results]
        dimension = len(results[0].pooled) if results else 0
        return cls(request_id=result.request_id, model=ModelOut.of(result.model), intended_use=result.intended_use,
                   pooling=result.pooling, dimension=dimension, results=results,
                   warnings=[SignalWarningOut.of(w) for w in result.warnings], timings_ms=dict(result.timings_ms))
