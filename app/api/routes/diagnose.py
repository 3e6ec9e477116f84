"""POST /diagnose: 12-lead ECGs in (uploads or JSON arrays), ranked zero-shot diagnoses out.

The route reads the body itself (multipart uploads are unpacked under the upload limits, JSON
is checked against ``DiagnoseJson``), so the request body is declared to OpenAPI by hand
(``openapi_extra``); the JSON answer goes through the declared ``DiagnoseResponse`` schema.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from app.api.auth import DiagnoseActor, KeyFirstRoute
from app.api.errors import request_id_of
from app.api.fhir import to_fhir_bundle
from app.api.openapi import component, error_responses, model_component
from app.api.schemas import DIAGNOSE_JSON_EXAMPLE, DIAGNOSE_RESPONSE_EXAMPLE, DiagnoseJson, DiagnoseResponse
from app.api.state import ServiceState, StateDep
from app.ecg.readers.arrays import recording_from_arrays
from app.ecg.readers.base import ReadHints
from app.errors import InvalidInput, UnsupportedFormat
from app.ops import metrics
from app.usecases.diagnose import DiagnoseOptions, EcgSource, Timings

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
FHIR_BUNDLE_SCHEMA: dict[str, Any] = {
    "title": "FhirBundle",
    "type": "object",
    "description": "a FHIR R4 Bundle of type collection: a Device for the model, per ECG a DiagnosticReport, "
                   "per diagnosis an Observation (see README.md, FHIR output)",
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
                "schema": component("DiagnoseUpload", UPLOAD_SCHEMA),
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
            "description": "ranked diagnoses per ECG (or, with `Accept: application/fhir+json`, a FHIR Bundle)",
            "content": {
                JSON: {"example": DIAGNOSE_RESPONSE_EXAMPLE},
                FHIR_JSON: {"schema": component("FhirBundle", FHIR_BUNDLE_SCHEMA)},
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


def _form_hints(form: FormData, query: ReadHints) -> ReadHints:
    """The read hints: form fields (``HINT_FIELDS``) and query parameters, which must agree
    where both are given. Empty form fields count as not given (Swagger UI sends them)."""
    fields = {k: v.strip() for k, v in form.multi_items() if isinstance(v, str) and v.strip()}
    unknown = sorted(set(fields) - set(HINT_FIELDS))
    if unknown:
        raise InvalidInput(f"unknown form field(s) {', '.join(unknown)}; send ECG files as 'files' and, if needed, "
                           f"{', '.join(HINT_FIELDS)}", details={"fields": unknown})
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


def _lead_names(text: str | None) -> tuple[str, ...] | None:
    return tuple(n.strip() for n in text.split(",")) if text else None


async def _upload_sources(request: Request, state: ServiceState, query: ReadHints) -> list[EcgSource]:
    form = await request.form(max_files=state.settings.max_files, max_fields=50)
    try:
        hints = _form_hints(form, query)
        uploads = [v for _k, v in form.multi_items() if isinstance(v, UploadFile)]
        if not uploads:
            raise InvalidInput("the multipart form has no file; send the ECG file(s) as form field 'files'")
        files = [(u.filename or "upload", u.file) for u in uploads]
        return await state.diagnose.read_uploads(files, state.limits, hints)
    finally:
        await form.close()


async def read_sources(request: Request, state: ServiceState, hints: ReadHints) -> list[EcgSource]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == JSON:
        return await _json_sources(request)
    if content_type == MULTIPART:
        return await _upload_sources(request, state, hints)
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
        "`sampling_rate`, `units` and `lead_names` may be sent as form fields or query parameters."
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
    sampling_rate: float | None = Query(None, gt=0, description="for formats without a rate (CSV, NPY); or a form "
                                                                "field"),
    units: str | None = Query(None, description="for formats without units (CSV, NPY): mV, uV, V; or a form field"),
    lead_names: str | None = Query(None, description="comma-separated lead names for NPY arrays; or a form field"),
    model: str | None = Query(None, max_length=200, description="pin a loaded model version (GET /models); default: "
                                                               "the active one"),
) -> DiagnoseResponse | Response:
    timings = Timings()
    settings = state.settings
    deadline = time.monotonic() + settings.request_deadline_s  # past it: 503 deadline_exceeded, never scored
    # the body's size (declared or streamed) is bounded by app.api.middleware before it is read
    hints = ReadHints(sampling_rate=sampling_rate, units=units, lead_names=_lead_names(lead_names))
    service = state.diagnose
    # admitted (else 503 overloaded / shutting_down with Retry-After) until the answer is ready; the
    # model version is leased for as long: a switch meanwhile does not change or free it
    with (service.admit() as resize, state.models.lease(model) as served,
          service.expect_request(served) as arrived):
        sources = await read_sources(request, state, hints)
        if len(sources) > settings.max_ecgs_per_request:
            raise InvalidInput(f"{len(sources)} ECGs in one request; the limit is {settings.max_ecgs_per_request}")
        resize(len(sources))
        timings.since("parse", timings.started)
        options = DiagnoseOptions(label_set=label_set, labels=tuple(labels or ()), top_k=top_k, threshold=threshold,
                                  pad=pad, aggregation=aggregation, include_windows=include_windows)
        result = await unless_disconnected(request, service.diagnose(
            sources, options, timings, model=served, request_id=request_id_for(request), arrived=arrived,
            deadline=deadline))
    if result is None:  # the client went away: its work was withdrawn, not scored; nobody reads this
        metrics.record_shed("abandoned")
        return Response(status_code=CLIENT_GONE)
    metrics.observe_stage("total", time.perf_counter() - timings.started)
    if FHIR_JSON in request.headers.get("accept", ""):
        return JSONResponse(to_fhir_bundle(result), media_type=FHIR_JSON)
    return DiagnoseResponse.from_result(result)


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
