"""Domain errors -> HTTP, in one place. Every error body is
``{"error": {"code": ..., "message": ..., "details": {...}}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import errors as E
from app.serving.batching import BatchError
from app.ops import metrics

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
    (E.Conflict, 409),
    (E.ModelNotReady, 503),
    (E.BundleError, 503),
    (BatchError, 500),
]


def status_for(exc: E.ServiceError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


async def _service_error(_request: Request, exc: E.ServiceError) -> JSONResponse:
    metrics.record_error(exc.code)
    return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=status_for(exc))


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    metrics.record_error("invalid_request")
    problems = [
        {"location": [str(p) for p in e.get("loc", ())], "problem": e.get("msg", "")} for e in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(p['location'])}: {p['problem']}" for p in problems[:5])
    return JSONResponse(error_body("invalid_request", f"the request is not valid: {summary}", {"problems": problems}),
                        status_code=422)


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed", 413: "upload_too_large"}.get(exc.status_code, "http_error")
    metrics.record_error(code)
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    # No request content in the log line: it may carry patient data.
    log.error("internal error: %s", type(exc).__name__, exc_info=exc)
    metrics.record_error("internal_error")
    return JSONResponse(error_body("internal_error", "an internal error occurred; it has been logged"), status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(E.ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
