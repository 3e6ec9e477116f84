"""POST /diagnose: 12-lead ECGs in (uploads or JSON arrays), ranked zero-shot diagnoses out.

The route reads the body itself (multipart uploads are unpacked under the upload limits, JSON
is checked against ``DiagnoseJson``), so the request body is declared to OpenAPI by hand
(``openapi_extra``); the JSON answer goes through the declared ``DiagnoseResponse`` schema.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from app.api.auth import DiagnoseActor, KeyFirstRoute
from app.api.errors import request_id_of
from app.api.fhir import (
    CONTEXT_DESCRIPTIONS,
    CONTEXT_FIELDS,
    MAX_ACCESSION,
    MAX_ACCESSION_SYSTEM,
    MAX_TIME_TEXT,
    REFERENCE_PATTERNS,
    ContextError,
    FhirContext,
    FhirOptions,
    accepts_fhir,
    fhir_context,
    interpretation_threshold,
    to_fhir_bundle,
)
from app.api.openapi import component, error_responses, model_component
from app.api.report_response import OPENAPI_CONTENT as REPORT_CONTENT
from app.api.report_response import report_response, report_type
from app.api.schemas import DIAGNOSE_JSON_EXAMPLE, DIAGNOSE_RESPONSE_EXAMPLE, DiagnoseJson, DiagnoseResponse
from app.api.state import ServiceState, StateDep
from app.ecg.readers.arrays import recording_from_arrays
from app.ecg.readers.base import ReadHints
from app.errors import InvalidInput, UnsupportedFormat
from app.ops import metrics
from app.ops.settings import Settings
from app.report.media import check_report_request
from app.usecases.diagnose import DiagnoseOptions, EcgSource, Timings
from app.usecases.results import DiagnoseResult

FHIR_JSON = "application/fhir+json"
MULTIPART = "multipart/form-data"
JSON = "application/json"
HINT_FIELDS = ("sampling_rate", "units", "lead_names")  # accepted as form fields or query parameters
router = APIRouter(route_class=KeyFirstRoute, tags=["diagnose"])
T = TypeVar("T")


# --- the request body, declared to OpenAPI ------------------------------------------------------


UPLOAD_SCHEMA: dict[str, Any] = {
    "title": "DiagnoseUpload",
    "type": "object",
    "required": ["files"],
    "properties": {
        "files": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "the ECG file(s): a WFDB header with its signal file(s), a .zip of records, or any "
                           "other supported format (GET /formats); every record found is scored",
        },
        "sampling_rate": {"type": "number", "exclusiveMinimum": 0,
                          "description": "sampling rate in Hz, for formats without one (CSV, NPY)"},
        "units": {"type": "string", "description": "signal units, for formats without them (CSV, NPY): mV, uV, V"},
        "lead_names": {"type": "string", "description": "comma-separated lead names for NPY arrays",
                       "examples": ["I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6"]},
    },
}
# The FHIR context (app/api/fhir.py): query parameters or form fields of an upload, checked by
# fhir_context (422 invalid_request naming the field); the same schema for both.
CONTEXT_SCHEMAS: dict[str, dict[str, Any]] = {
    **{name: {"type": "string", "pattern": pattern, "examples": [f"{pattern[1:].split('/')[0]}/123"]}
       for name, pattern in REFERENCE_PATTERNS.items()},
    "accession_system": {"type": "string", "maxLength": MAX_ACCESSION_SYSTEM, "examples": ["urn:oid:1.2.840.99999.1"]},
    "accession": {"type": "string", "maxLength": MAX_ACCESSION, "examples": ["ACC-2020-000123"]},
    "acquired_at": {"type": "string", "maxLength": MAX_TIME_TEXT, "examples": ["2020-05-12T12:33:59+02:00"]},
}
# /diagnose's upload: the ECG files, the read hints and the FHIR context (POST /embeddings takes
# UPLOAD_SCHEMA without the context)
DIAGNOSE_UPLOAD_SCHEMA: dict[str, Any] = {**UPLOAD_SCHEMA, "properties": {
    **UPLOAD_SCHEMA["properties"],
    **{name: {**schema, "description": f"{CONTEXT_DESCRIPTIONS[name]}; or a query parameter"}
       for name, schema in CONTEXT_SCHEMAS.items()},
}}
FHIR_BUNDLE_SCHEMA: dict[str, Any] = {
    "title": "FhirBundle",
    "type": "object",
    "description": "a FHIR R4 Bundle of type collection: a Device for the model, per ECG a DocumentReference (the "
                   "recording) and a DiagnosticReport (with the request's patient, encounter, order, accession and, "
                   "given any of them, the PDF report), per diagnosis an Observation (see README.md, FHIR output)",
    "required": ["resourceType", "type"],
    "properties": {
        "resourceType": {"type": "string", "const": "Bundle"},
        "id": {"type": "string"},
        "identifier": {"type": "object"},
        "type": {"type": "string", "const": "collection"},
        "entry": {"type": "array", "items": {
            "type": "object",
            "required": ["fullUrl", "resource"],
            "properties": {"fullUrl": {"type": "string"}, "resource": {"type": "object"}},
        }},
    },
}
OPENAPI_EXTRA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            MULTIPART: {
                "schema": component("DiagnoseUpload", DIAGNOSE_UPLOAD_SCHEMA),
                "encoding": {"files": {"contentType": "application/octet-stream"}},
                "examples": {"wfdb": {
                    "summary": "a WFDB record",
                    "description": "two parts named `files`: `E07500.hea` and `E07500.mat` (or one `.zip` of "
                                   "both); the format is detected from the content",
                    "value": {"files": ["E07500.hea", "E07500.mat"]},
                }},
            },
            JSON: {
                "schema": model_component(DiagnoseJson),
                "examples": {"arrays": {"summary": "lead arrays (shortened here: send at least 10 s of samples)",
                                        "value": DIAGNOSE_JSON_EXAMPLE}},
            },
        },
    },
    "responses": {
        "200": {
            "description": "ranked diagnoses per ECG (or, with `Accept: application/fhir+json`, a FHIR Bundle; with "
                           "`text/html` or `application/pdf` the report; with `image/svg+xml` or `image/png` the "
                           "printout of one ECG)",
            "content": {
                JSON: {"example": DIAGNOSE_RESPONSE_EXAMPLE},
                FHIR_JSON: {"schema": component("FhirBundle", FHIR_BUNDLE_SCHEMA)},
                **REPORT_CONTENT,  # Accept text/html, application/pdf, image/svg+xml, image/png: the report
            },
        },
    },
}


# --- reading the request -------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: the standard parser keeps the last of two equal keys; refuse them."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _parse_json_body(raw: bytes) -> list[EcgSource]:
    """The JSON body -> one source per ECG. CPU work (a large body takes a good part of a
    second): it runs in a worker thread, never on the event loop."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"request body is not UTF-8 text: byte 0x{raw[exc.start]:02x} at position {exc.start} "
                           "cannot be decoded; JSON must be sent as UTF-8") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc.msg} at position {exc.pos}") from exc
    except RecursionError:
        raise InvalidInput("request body is not usable JSON: it is nested too deeply "
                           "(an ECG request needs 4 levels)") from None
    except _DuplicateKey as exc:
        raise InvalidInput(f"request body names the key {exc.key[:100]!r} twice in one object; each key (and "
                           "each lead) may be given once", details={"key": exc.key[:100]}) from None
    try:
        body = DiagnoseJson.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidInput(f"request body does not match the ECG schema: {problems}") from exc
    return [EcgSource(recording_from_arrays(e.leads, e.sampling_rate, e.units), ref=e.id) for e in body.ecgs]


async def _json_sources(request: Request) -> list[EcgSource]:
    raw = await request.body()
    return await asyncio.to_thread(_parse_json_body, raw)


def _form_hints(form: FormData, query: ReadHints, extra_fields: tuple[str, ...] = ()) -> ReadHints:
    """The read hints: form fields (``HINT_FIELDS``) and query parameters, which must agree
    where both are given. Empty form fields count as not given (Swagger UI sends them). Fields
    other than those and ``extra_fields`` (read elsewhere) are refused."""
    fields = {k: v.strip() for k, v in form.multi_items() if isinstance(v, str) and v.strip()}
    unknown = sorted(set(fields) - set(HINT_FIELDS) - set(extra_fields))
    if unknown:
        raise InvalidInput(f"unknown form field(s) {', '.join(unknown)}; send ECG files as 'files' and, if needed, "
                           f"{', '.join((*HINT_FIELDS, *extra_fields))}", details={"fields": unknown})
    rate: float | None = None
    if "sampling_rate" in fields:
        try:
            rate = float(fields["sampling_rate"])
        except ValueError:
            rate = None
        if rate is None or not rate > 0 or rate == float("inf"):
            raise InvalidInput(f"form field sampling_rate must be a positive number of Hz, not "
                               f"{fields['sampling_rate']!r}", details={"field": "sampling_rate"})
    lead_names = _lead_names(fields.get("lead_names"))
    given = ReadHints(sampling_rate=rate, units=fields.get("units"), lead_names=lead_names)
    merged: dict[str, Any] = {}
    for name in HINT_FIELDS:
        from_form, from_query = getattr(given, name), getattr(query, name)
        if from_form is not None and from_query is not None and from_form != from_query:
            raise InvalidInput(f"{name} is given as a form field and a query parameter with different values",
                               details={"field": name})
        merged[name] = from_form if from_form is not None else from_query
    return ReadHints(**merged)


def _context_param(name: str) -> dict[str, Any]:
    """What OpenAPI says of a context query parameter beyond its type (checked by fhir_context)."""
    return {k: v for k, v in CONTEXT_SCHEMAS[name].items() if k != "type"}


def _lead_names(text: str | None) -> tuple[str, ...] | None:
    return tuple(n.strip() for n in text.split(",")) if text else None


def _form_context(form: FormData) -> dict[str, str]:
    """The FHIR context fields of an upload form (``CONTEXT_FIELDS``; blank = not given); one
    named twice with different values is refused (422, like a bad value)."""
    found: dict[str, str] = {}
    for key, value in form.multi_items():
        if key not in CONTEXT_FIELDS or not isinstance(value, str) or not value.strip():
            continue
        if key in found and found[key] != value.strip():
            raise _invalid_context("form", key, "is given twice with different values")
        found[key] = value.strip()
    return found


def _invalid_context(location: str, field: str, message: str) -> RequestValidationError:
    """A context value that cannot be used, as FastAPI reports a bad parameter (422 invalid_request)."""
    return RequestValidationError([{"loc": (location, field), "msg": message, "type": "value_error"}])


def request_context(query: Mapping[str, str | None], form: Mapping[str, str]) -> FhirContext:
    """The FHIR context of a request from its query parameters and form fields (which must agree
    where both are given), checked; RequestValidationError (422) naming the field otherwise."""
    given = {k: v.strip() for k, v in query.items() if v is not None and v.strip()}
    for name, value in form.items():
        if name in given and given[name] != value:
            raise _invalid_context("form", name, "is given as a form field and a query parameter with different "
                                                 "values")
    merged = {**given, **form}
    try:
        return fhir_context(merged)
    except ContextError as exc:  # a field missing (an accession without its system) is placed where the other was
        location = "form" if exc.field in form or (exc.field not in given and form) else "query"
        raise _invalid_context(location, exc.field, exc.message) from None


async def _upload_sources(request: Request, state: ServiceState, query: ReadHints,
                          form_context: dict[str, str] | None = None) -> list[EcgSource]:
    form = await request.form(max_files=state.settings.max_files, max_fields=50)
    try:
        hints = _form_hints(form, query, CONTEXT_FIELDS if form_context is not None else ())
        if form_context is not None:
            form_context.update(_form_context(form))
        uploads = [v for _k, v in form.multi_items() if isinstance(v, UploadFile)]
        if not uploads:
            raise InvalidInput("the multipart form has no file; send the ECG file(s) as form field 'files'")
        files = [(u.filename or "upload", u.file) for u in uploads]
        return await state.diagnose.read_uploads(files, state.limits, hints)
    finally:
        await form.close()


async def read_sources(request: Request, state: ServiceState, hints: ReadHints,
                       form_context: dict[str, str] | None = None) -> list[EcgSource]:
    """The request's ECGs. With ``form_context`` (POST /diagnose), an upload's FHIR context fields
    are accepted and put there; without it, they are refused as unknown form fields."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == JSON:
        return await _json_sources(request)
    if content_type == MULTIPART:
        return await _upload_sources(request, state, hints, form_context)
    raise UnsupportedFormat(
        f"content type {content_type or '(none)'!r} is not accepted; send multipart/form-data with ECG files "
        "or application/json with lead arrays"
    )


@router.post(
    "/diagnose",
    response_model=DiagnoseResponse,
    operation_id="diagnose",
    summary="score 12-lead ECGs against a label set",
    description=(
        "Send either a multipart form with one or more files in field `files` (WFDB `.hea` with its `.dat`/`.mat`, "
        "a `.zip` of them, DICOM, HL7 aECG, GE MUSE XML, Philips Sierra XML, EDF, CSV, NPY, CPSC 2018 `.mat`, "
        "SPH HDF5; detected from content) or JSON "
        "`{\"ecgs\": [{\"sampling_rate\", \"units\", \"leads\": {name: [...]}}]}`. "
        "Several ECGs are scored as one batch. Ask for `Accept: application/fhir+json` to get a FHIR R4 Bundle. "
        "Ask for `Accept: text/html` or `application/pdf` for the clinician's report (the ECG printout at 25 mm/s and "
        "10 mm/mV with the highlighted diagnosis's evidence shaded, the diagnoses with their knowledge and lead "
        "evidence), or `image/svg+xml` / `image/png` for the printout of one ECG (`ecg` picks it); a report "
        "request computes lead evidence (as `explain=leads`), so it takes longer. "
        "`sampling_rate`, `units` and `lead_names` may be sent as form fields or query parameters, and so may the "
        "FHIR context (`patient`, `encounter`, `order`, `accession_system` + `accession`, `acquired_at`). Errors "
        "asked for with `Accept: application/fhir+json` are FHIR OperationOutcomes."
    ),
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503),
    openapi_extra=OPENAPI_EXTRA,
)
async def diagnose(
    request: Request,
    state: StateDep,
    _actor: DiagnoseActor,
    label_set: str | None = Query(None, description="label set name (default: the service's default set)"),
    labels: list[str] | None = Query(None, description="explicit registered label names, scored together in this "
                                                       "order"),
    top_k: int = Query(5, ge=0, le=1000, description="labels returned per ECG; 0 = all"),
    threshold: float = Query(0.0, ge=0.0, le=1.0, description="omit labels below this probability"),
    pad: bool = Query(False, description="zero-pad records shorter than 10 s (down to 2 s) instead of refusing them"),
    aggregation: Literal["max", "mean"] = Query("max", description="how window probabilities combine for records "
                                                                  "> 10 s"),
    include_windows: bool = Query(False, description="return each label's per-window probabilities"),
    explain: Literal["none", "leads"] = Query(
        "none", description="`leads`: lead-level evidence per diagnosis (`lead_evidence`: how its probability moves "
                            "when each lead is masked); costs 12 extra model passes per window"),
    sampling_rate: float | None = Query(None, gt=0, description="for formats without a rate (CSV, NPY); or a form "
                                                                "field"),
    units: str | None = Query(None, description="for formats without units (CSV, NPY): mV, uV, V; or a form field"),
    lead_names: str | None = Query(None, description="comma-separated lead names for NPY arrays; or a form field"),
    ecg: int | None = Query(None, ge=0, le=10_000, description="report answers only (Accept text/html, "
                            "application/pdf, image/svg+xml, image/png): the ECG of the request to render, from 0; "
                            "needed for SVG and PNG when the request has several ECGs (HTML and PDF: every ECG)"),
    highlight: int | None = Query(None, ge=1, le=1000, description="report answers only: the rank of the diagnosis "
                                  "whose evidence is highlighted first (default, or a rank not returned: the top one)"),
    patient: str | None = Query(None, description=CONTEXT_DESCRIPTIONS["patient"],
                                json_schema_extra=_context_param("patient")),
    encounter: str | None = Query(None, description=CONTEXT_DESCRIPTIONS["encounter"],
                                  json_schema_extra=_context_param("encounter")),
    order: str | None = Query(None, description=CONTEXT_DESCRIPTIONS["order"],
                              json_schema_extra=_context_param("order")),
    accession_system: str | None = Query(None, description=CONTEXT_DESCRIPTIONS["accession_system"],
                                         json_schema_extra=_context_param("accession_system")),
    accession: str | None = Query(None, description=CONTEXT_DESCRIPTIONS["accession"],
                                  json_schema_extra=_context_param("accession")),
    acquired_at: str | None = Query(None, description=CONTEXT_DESCRIPTIONS["acquired_at"],
                                    json_schema_extra=_context_param("acquired_at")),
    model: str | None = Query(None, max_length=200, description="pin a loaded model version (GET /models); default: "
                                                               "the active one"),
) -> DiagnoseResponse | Response:
    timings = Timings()
    settings = state.settings
    deadline = time.monotonic() + settings.request_deadline_s  # past it: 503 deadline_exceeded, never scored
    # the body's size (declared or streamed) is bounded by app.api.middleware before it is read
    hints = ReadHints(sampling_rate=sampling_rate, units=units, lead_names=_lead_names(lead_names))
    # the FHIR context (patient, encounter, order, accession, acquisition time): checked before the body is read
    query_context = {"patient": patient, "encounter": encounter, "order": order, "accession_system": accession_system,
                     "accession": accession, "acquired_at": acquired_at}
    context = request_context(query_context, {})
    service = state.diagnose
    # admitted (else 503 overloaded / shutting_down with Retry-After) until the answer is ready; the
    # model version is leased for as long: a switch meanwhile does not change or free it
    with (service.admit() as resize, state.models.lease(model) as served,
          service.expect_request(served) as arrived):
        form_context: dict[str, str] = {}
        sources = await read_sources(request, state, hints, form_context)
        if form_context:
            context = request_context(query_context, form_context)
        if len(sources) > settings.max_ecgs_per_request:
            raise InvalidInput(f"{len(sources)} ECGs in one request; the limit is {settings.max_ecgs_per_request}")
        report = report_type(request.headers.get("accept"))  # None: JSON or FHIR, as before
        if report is not None:
            check_report_request(report, len(sources), ecg)
        resize(len(sources))  # explain=leads still counts an ECG as one (see DiagnoseService._diagnose)
        timings.since("parse", timings.started)
        options = DiagnoseOptions(label_set=label_set, labels=tuple(labels or ()), top_k=top_k, threshold=threshold,
                                  pad=pad, aggregation=aggregation, include_windows=include_windows,
                                  explain_leads=(explain == "leads") or report is not None,
                                  keep_tracing=report is not None)  # the report plots the tracing, shows lead evidence
        fhir = report is None and accepts_fhir(request.headers.get("accept"))
        if fhir and not context.empty:  # the FHIR answer attaches the PDF report, which plots the tracing
            options = replace(options, keep_tracing=True)
        result = await unless_disconnected(request, service.diagnose(
            sources, options, timings, model=served, request_id=request_id_for(request), arrived=arrived,
            deadline=deadline))
        # a report (and FHIR's PDF) is rendered while the request is still admitted: that work is
        # bounded as scoring is
        rendered: Response | None = None
        if result is not None and report is not None:
            rendered = await report_response(result, report, ecg=ecg, highlight=highlight)
        elif result is not None and fhir:
            rendered = await fhir_response(result, context, settings, threshold)
    if result is None:  # the client went away: its work was withdrawn, not scored; nobody reads this
        metrics.record_shed("abandoned")
        return Response(status_code=CLIENT_GONE)
    metrics.observe_stage("total", time.perf_counter() - timings.started)
    return rendered if rendered is not None else DiagnoseResponse.from_result(result)


async def fhir_response(result: DiagnoseResult, context: FhirContext, settings: Settings,
                        threshold: float) -> JSONResponse:
    """The FHIR Bundle of a result. With a context (the caller files it), each DiagnosticReport
    carries the ECG's PDF report (``presentedForm``). Rendered in a worker thread (the PDF is
    CPU work)."""
    positive, source = interpretation_threshold(threshold, settings.fhir_positive_threshold)
    options = FhirOptions(positive_threshold=positive, threshold_source=source,
                          recorder_timezone=settings.recorder_tzinfo, performer=settings.fhir_performer)
    presented: Callable[[int], bytes] | None = None
    if not context.empty:
        from app.report.pdf import report_pdf  # matplotlib: imported when first needed

        def presented(ecg_index: int) -> bytes:
            return report_pdf(result, ecg_index=ecg_index)

    bundle = await asyncio.to_thread(to_fhir_bundle, result, context, options=options, issued=datetime.now(UTC),
                                     presented_form=presented)
    return JSONResponse(bundle, media_type=FHIR_JSON)


CLIENT_GONE = 499  # nginx's "client closed request": in the access log and metrics only


async def _wait_for_disconnect(request: Request) -> None:
    """Return when the client disconnects (the body has been read: ``receive`` has nothing else to say)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T | None:
    """Run ``work``; if the client disconnects first, cancel it (its queued ECGs are skipped by
    the batcher, never scored) and return None."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this route itself was cancelled (e.g. the shutdown grace period ended)
        task.cancel()
        watcher.cancel()
        raise
    watcher.cancel()
    if not task.done() and watcher.done() and not watcher.cancelled() and watcher.exception() is not None:
        return await task  # could not watch the connection (not a disconnect): just finish the work
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None


def request_id_for(request: Request) -> str:
    """The id the request-id middleware gave this request."""
    request_id = request_id_of(request)
    if request_id is None:
        raise RuntimeError("no request id: the app must run app.api.middleware's request-id middleware")
    return request_id
