"""Domain errors -> HTTP, in one place. Every error body is
``{"error": {"code": ..., "message": ..., "details": {...}}, "request_id": ...}`` (``ErrorBody``),
or, when the request's Accept lists ``application/fhir+json``, a FHIR OperationOutcome with the
same status and headers (``app.api.fhir.operation_outcome``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import errors as E
from app.api.fhir import FHIR_JSON, accepts_fhir, operation_outcome
from app.ops import metrics
from app.serving.batching import BatchError

log = logging.getLogger(__name__)

STATUS: list[tuple[type[E.ServiceError], int]] = [
    (E.UnsupportedFormat, 415),
    (E.UploadTooLarge, 413),
    (E.UnsafeUpload, 400),
    (E.MalformedFile, 422),
    (E.MissingLeads, 422),
    (E.SignalTooShort, 422),
    (E.UnsupportedSignal, 422),
    (E.InvalidInput, 400),
    (E.NotFound, 404),
    (E.Conflict, 409),  # conflict, version_conflict (a stale If-Match)
    (E.PreconditionRequired, 428),  # a label or set replaced without If-Match
    (E.Unauthenticated, 401),  # with WWW-Authenticate: Bearer
    (E.Forbidden, 403),
    (E.Overloaded, 503),  # overloaded, deadline_exceeded, shutting_down (with Retry-After)
    (E.ModelNotReady, 503),
    (E.BundleError, 503),
    (E.DatabaseUnavailable, 503),  # with Retry-After
    (BatchError, 500),
]
UNMAPPED_STATUS = 500

# Errors the framework raises itself (unknown path, wrong method, malformed multipart, ...).
HTTP_ERROR_CODES: dict[int, str] = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",  # the body did not arrive in time (app/api/middleware.py)
    413: "upload_too_large",
    415: "unsupported_format",
    499: "client_disconnected",  # the client left mid-body; nobody reads this answer
}
OTHER_HTTP_ERROR_CODE = "http_error"
VALIDATION_STATUS = 422  # parameters or a JSON body that fail FastAPI's validation
VALIDATION_CODE = "invalid_request"
INTERNAL_CODE = "internal_error"

# Domain errors that only the command line and the bundle tools raise (fetch, export,
# quantize, evaluate); no route can answer with them, so the API's ErrorCode enum leaves them out.
OFFLINE_ONLY_CODES = frozenset({"error", "checkpoint_invalid", "fetch_failed", "precision_rejected", "missing_extra"})


def status_for_class(cls: type[E.ServiceError]) -> int:
    for mapped, status in STATUS:
        if issubclass(cls, mapped):
            return status
    return UNMAPPED_STATUS


def status_for(exc: E.ServiceError) -> int:
    return status_for_class(type(exc))


def service_error_classes() -> list[type[E.ServiceError]]:
    """Every ServiceError subclass defined by the modules imported so far."""
    found: list[type[E.ServiceError]] = []
    pending: list[type[E.ServiceError]] = [E.ServiceError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def codes_for_status(status: int) -> list[str]:
    """The error codes a route may answer with at ``status`` (for the OpenAPI document)."""
    codes = {cls.code for cls in service_error_classes()
             if cls.code not in OFFLINE_ONLY_CODES and status_for_class(cls) == status}
    if status in HTTP_ERROR_CODES:
        codes.add(HTTP_ERROR_CODES[status])
    if status == VALIDATION_STATUS:
        codes.add(VALIDATION_CODE)
    if status == 500:
        codes.add(INTERNAL_CODE)
    return sorted(codes)


def request_id_of(request: Request) -> str | None:
    """The id the request-id middleware gave this request (None if it did not run)."""
    value = getattr(request.state, "request_id", None)
    return value if isinstance(value, str) else None


def error_body(code: str, message: str, details: dict[str, Any] | None = None, *,
               request_id: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}, "request_id": request_id}


def _answer(request: Request, status: int, code: str, message: str, details: dict[str, Any] | None = None, *,
            headers: Mapping[str, str] | None = None, problems: list[str] | None = None) -> JSONResponse:
    """The error answer: ``ErrorBody``, or an OperationOutcome for a caller that asks for FHIR."""
    request_id = request_id_of(request)
    if accepts_fhir(request.headers.get("accept")):
        return JSONResponse(operation_outcome(status, code, message, request_id=request_id, problems=problems),
                            status_code=status, headers=headers, media_type=FHIR_JSON)
    return JSONResponse(error_body(code, message, details, request_id=request_id), status_code=status,
                        headers=headers)


async def _service_error(request: Request, exc: E.ServiceError) -> JSONResponse:
    metrics.record_error(exc.code)
    retry_after = getattr(exc, "retry_after_s", None)  # Overloaded and its subclasses
    headers = {"Retry-After": str(retry_after)} if isinstance(retry_after, int) else None
    if isinstance(exc, E.Unauthenticated):
        headers = {"WWW-Authenticate": 'Bearer realm="ecgfm-ked"'}
    return _answer(request, status_for(exc), exc.code, exc.message, exc.details, headers=headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    metrics.record_error(VALIDATION_CODE)
    problems = [
        {"location": [str(p) for p in e.get("loc", ())], "problem": e.get("msg", "")} for e in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(p['location'])}: {p['problem']}" for p in problems[:5])
    return _answer(request, VALIDATION_STATUS, VALIDATION_CODE, f"the request is not valid: {summary}",
                   {"problems": problems},
                   problems=[f"{'.'.join(p['location'])}: {p['problem']}" for p in problems])


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this request's path (the router's own 405 names only
    the first route that matched the path), for the ``Allow`` header."""
    methods: set[str] = set()

    def walk(routes: Any, path: str) -> None:
        for route in routes:
            included = getattr(route, "original_router", None)  # an included APIRouter
            if included is not None:
                prefix = str(getattr(getattr(route, "include_context", None), "prefix", ""))
                if path.startswith(prefix):
                    walk(included.routes, path[len(prefix):])
                continue
            regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
            if regex is not None and route_methods and regex.match(path):
                methods.update(route_methods)

    walk(getattr(request.app, "routes", ()), str(request.scope.get("path", "")))
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = HTTP_ERROR_CODES.get(exc.status_code, OTHER_HTTP_ERROR_CODE)
    metrics.record_error(code)
    headers = exc.headers
    if exc.status_code == 405 and (allow := allowed_methods(request)):
        headers = {**(headers or {}), "Allow": allow}
    return _answer(request, exc.status_code, code, str(exc.detail), headers=headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # No request content in the log line: it may carry patient data.
    log.error("internal error: %s", type(exc).__name__, exc_info=exc)
    metrics.record_error(INTERNAL_CODE)
    return _answer(request, 500, INTERNAL_CODE, "an internal error occurred; it has been logged")


def install(app: FastAPI) -> None:
    app.add_exception_handler(E.ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
