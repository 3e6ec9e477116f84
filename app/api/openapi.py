"""The API's own documentation: the OpenAPI document (what it declares beyond what FastAPI
infers: error responses with one schema and the codes each status can carry) and the
Swagger UI / ReDoc pages, whose assets the service serves itself so that /docs and /redoc
work on a network that cannot reach a CDN.

The assets come from the ``fastapi-offline`` package (MIT), which ships the Swagger UI
(Apache-2.0) and ReDoc (MIT) bundles; only its static files are used.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from app.api.errors import codes_for_status
from app.api.schemas import ErrorBody

ERROR_DESCRIPTIONS = {
    400: "invalid request",
    401: "no API key, or an unknown or revoked one (send `Authorization: Bearer KEY`)",
    403: "the API key's scope does not allow this operation",
    404: "unknown label, label set, version or path",
    405: "method not allowed on this path",
    408: "the request body did not arrive in time (ECGFM_BODY_READ_TIMEOUT_S)",
    409: "conflict with what is stored: a name taken, a label still in a set, an If-Match revision that is "
         "no longer current (version_conflict, with the current one; nothing changed), or a model version that "
         "is not loaded (model_not_loaded) or cannot be (model_unusable)",
    413: "body or upload too large",
    415: "unsupported content type or file format",
    422: "unreadable or unusable signal, or invalid parameters",
    428: "a replace sent without If-Match (precondition_required): send the ETag of your last read, or *",
    500: "internal error (logged without request content); quote the request_id when reporting it",
    503: "no model loaded, or the service is not ready",
}

# A realistic message per code for the documented examples (what the service really says).
EXAMPLE_MESSAGES = {
    "invalid_request": "the request is not valid: query.top_k: Input should be greater than or equal to 0",
    "invalid_input": "the multipart form has no file; send the ECG file(s) as form field 'files'",
    "unsafe_upload": "upload.zip: member '../etc/passwd' points outside the upload",
    "not_found": "no label set named 'rhythm'",
    "method_not_allowed": "Method Not Allowed",
    "conflict": "a label named 'wellens syndrome' already exists (id 77)",
    "version_conflict": "label 77 is at revision 4, not 3: it changed after it was read. Nothing was changed; read "
                        "it again, apply the change to what it is now and send If-Match: \"4\"",
    "precondition_required": "replacing label 77 needs the revision it replaces: send `If-Match` with the ETag of "
                             "your last read (or `If-Match: *` to replace whatever it is now)",
    "model_not_loaded": "model version 'ecgfm-ked-2025-01' is in the model store but not loaded in this service; "
                        "pin one of ecgfm-ked-2026-03, activate it (POST /models/ecgfm-ked-2025-01/activate) or list "
                        "it in ECGFM_KEEP_LOADED",
    "model_unusable": "model version 'site-ft-10pct' cannot be loaded: bundle model_store/site-ft-10pct: "
                      "ecg_tqn.onnx does not match the sha256 in its manifest",
    "unauthenticated": "this operation needs an API key: send `Authorization: Bearer KEY`",
    "forbidden": "this operation needs a key with scope 'labels' or above; key 'ward-3' has 'diagnose'",
    "upload_too_large": "request body is 73400320 bytes; the limit is 52428800 (ECGFM_MAX_REQUEST_MB)",
    "unsupported_format": "content type 'text/plain' is not accepted; send multipart/form-data with ECG files "
                          "or application/json with lead arrays",
    "malformed_file": "E07500.hea: the header names 12 signals but the .mat file holds 6",
    "missing_leads": "leads V1, V2 are missing and cannot be derived from the others",
    "signal_too_short": "the record lasts 4.2 s; at least 10 s are needed (or pad=true for 2-10 s)",
    "unsupported_signal": "sampling rate 20 Hz is outside 50-10000 Hz",
    "internal_error": "an internal error occurred; it has been logged",
    "batch_failed": "the model failed to score this batch",
    "model_not_ready": "the service is starting or its model failed to load",
    "bundle_invalid": "model_store/bundle: manifest.json is missing",
    "http_error": "Not Acceptable",
}
EXAMPLE_REQUEST_ID = "6f1c2a9e0b7d4e55a3c1d2e3f4a5b6c7"

ERROR_SCHEMA_NAME = "ErrorBody"
ERROR_REF = f"#/components/schemas/{ERROR_SCHEMA_NAME}"
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
JSON = "application/json"
FHIR_JSON = "application/fhir+json"
# Every error, asked for with `Accept: application/fhir+json`, is a FHIR OperationOutcome
# (app/api/errors.py, app/api/fhir.py operation_outcome): declared beside ErrorBody.
OUTCOME_SCHEMA_NAME = "FhirOperationOutcome"
OUTCOME_REF = f"#/components/schemas/{OUTCOME_SCHEMA_NAME}"
OPERATION_OUTCOME_SCHEMA: dict[str, Any] = {
    "title": OUTCOME_SCHEMA_NAME,
    "type": "object",
    "description": "a FHIR R4 OperationOutcome (with `Accept: application/fhir+json`): issue[0] is the error, its "
                   "`details.coding` the service's error code (system `urn:ecgfm-ked:error-code`), `diagnostics` the "
                   "message; the request id is the `id` (where it is a FHIR id) and an extension",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "const": "OperationOutcome"},
        "id": {"type": "string"},
        "extension": {"type": "array", "items": {"type": "object"}},
        "issue": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["severity", "code"],
            "properties": {
                "severity": {"type": "string", "enum": ["fatal", "error", "warning", "information"]},
                "code": {"type": "string", "description": "FHIR IssueType, e.g. invalid, login, not-found"},
                "details": {"type": "object", "properties": {
                    "coding": {"type": "array", "items": {"type": "object", "properties": {
                        "system": {"type": "string"}, "code": {"type": "string"}}}},
                    "text": {"type": "string"}}},
                "diagnostics": {"type": "string"},
            },
        }},
    },
    "examples": [{"resourceType": "OperationOutcome", "id": "6f1c2a9e0b7d4e55a3c1d2e3f4a5b6c7",
                  "extension": [{"url": "urn:ecgfm-ked:fhir:extension:request-id",
                                 "valueString": "6f1c2a9e0b7d4e55a3c1d2e3f4a5b6c7"}],
                  "issue": [{"severity": "error", "code": "not-found",
                             "details": {"coding": [{"system": "urn:ecgfm-ked:error-code", "code": "not_found"}],
                                         "text": "no label set named 'rhythm'"},
                             "diagnostics": "no label set named 'rhythm'"}]}],
}

DOCS_ASSETS_URL = "/docs-assets"
# The documentation pages may load nothing from outside the service (hospital networks often
# cannot reach a CDN, and should not be made to try): ReDoc's sidebar, for one, would fetch
# its vendor's logo from a CDN. The page scripts are inline (FastAPI's page templates) and
# ReDoc runs its search in a worker made from a blob: URL.
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'self'; base-uri 'self'; form-action 'self'"
)
SWAGGER_UI_PARAMETERS = {
    "validatorUrl": None,  # the public validator badge would call out to swagger.io
    "displayOperationId": True,
}


# Schemas that routes reading their own bodies declare (FastAPI only collects the models of
# parameters and response_model): added to components.schemas by finish_document.
_DECLARED_COMPONENTS: dict[str, dict[str, Any]] = {}


def component(name: str, schema: dict[str, Any]) -> dict[str, str]:
    """Declare ``schema`` as ``#/components/schemas/{name}``; returns the ``$ref`` to use."""
    _DECLARED_COMPONENTS[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


def model_component(model: type[BaseModel]) -> dict[str, str]:
    """A pydantic model (and the models it nests) as components; returns the ``$ref`` to it."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, nested in schema.pop("$defs", {}).items():
        component(name, nested)
    return component(model.__name__, schema)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with the error body schema (the document adds
    an example per error code that status can carry)."""
    return {s: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS.get(s, "error")} for s in statuses}


def error_example(code: str) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if code == "invalid_request":
        problem = {"location": ["query", "top_k"], "problem": "Input should be greater than or equal to 0"}
        details = {"problems": [problem]}
    return {
        "summary": code,
        "value": {"error": {"code": code, "message": EXAMPLE_MESSAGES.get(code, code.replace("_", " ")),
                            "details": details}, "request_id": EXAMPLE_REQUEST_ID},
    }


def _is_error_schema(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("$ref") in (ERROR_REF, *(
        f"#/components/schemas/{name}" for name in FASTAPI_VALIDATION_SCHEMAS))


def _declare_error_response(status: str, response: dict[str, Any]) -> None:
    """Rewrite one response whose body is an error: our schema under application/json (whatever
    the route's own media type), with one example per error code of the status, and the
    OperationOutcome under application/fhir+json."""
    content = response.setdefault("content", {})
    for media_type in [m for m, c in content.items() if _is_error_schema(c.get("schema"))]:
        content.pop(media_type)
    examples = {code: error_example(code) for code in codes_for_status(int(status))} if status.isdigit() else {}
    content[JSON] = {"schema": {"$ref": ERROR_REF}, **({"examples": examples} if examples else {})}
    content[FHIR_JSON] = {"schema": {"$ref": OUTCOME_REF}}
    if response.get("description") in (None, "", "Validation Error"):
        response["description"] = ERROR_DESCRIPTIONS.get(int(status), "error") if status.isdigit() else "error"


def _uses(document: Any, ref: str) -> bool:
    if isinstance(document, dict):
        return document.get("$ref") == ref or any(_uses(v, ref) for v in document.values())
    if isinstance(document, list):
        return any(_uses(v, ref) for v in document)
    return False


def _mark_binary_strings(node: Any) -> None:
    """Give every uploaded-file schema ``format: binary`` beside its ``contentMediaType``.

    FastAPI writes file fields the OpenAPI 3.1 way only (``contentMediaType``); Swagger UI's
    bundled release and openapi-python-client recognise a file by ``format: binary`` (which 3.1
    still allows), and without it offer a text box and send the file as a string."""
    if isinstance(node, dict):
        if node.get("type") == "string" and "contentMediaType" in node and "format" not in node:
            node["format"] = "binary"
        for value in node.values():
            _mark_binary_strings(value)
    elif isinstance(node, list):
        for value in node:
            _mark_binary_strings(value)


# What any operation that takes a request body can answer before the route sees it: an unparsable
# body (FastAPI: 400 "There was an error parsing the body"), one that stalls (408) or one past the
# size limit (413), from app.api.middleware's body guard. Declared on every such operation.
BODY_ERROR_STATUSES = (400, 408, 413)


def _declare_body_errors(operation: dict[str, Any]) -> None:
    if "requestBody" not in operation:
        return
    responses = operation.setdefault("responses", {})
    for status in BODY_ERROR_STATUSES:
        responses.setdefault(str(status), {"description": ERROR_DESCRIPTIONS[status],
                                           "content": {JSON: {"schema": {"$ref": ERROR_REF}}}})


def finish_document(document: dict[str, Any]) -> dict[str, Any]:
    """Fix what FastAPI's generated document says, in place: FastAPI advertises its own 422
    schema (``HTTPValidationError``) where the service answers with ``ErrorBody``, puts error
    schemas under the route's media type (text/plain for /metrics), marks file fields in
    a way the common tools do not read as files, and leaves out the errors any request body
    can get (``BODY_ERROR_STATUSES``)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in _DECLARED_COMPONENTS.items():
        schemas.setdefault(name, schema)
    schemas.setdefault(OUTCOME_SCHEMA_NAME, OPERATION_OUTCOME_SCHEMA)
    _mark_binary_strings(document)
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            _declare_body_errors(operation)
            for status, response in operation.get("responses", {}).items():
                if any(_is_error_schema(c.get("schema")) for c in response.get("content", {}).values()):
                    _declare_error_response(status, response)
    for name in FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    for name in FASTAPI_VALIDATION_SCHEMAS:
        assert not _uses(document, f"#/components/schemas/{name}"), f"{name} is still referenced"
    return document


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """``app.openapi``: the generated document with our error declarations, built once."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, openapi_version=app.openapi_version,
                               summary=app.summary, description=app.description, routes=app.routes,
                               tags=app.openapi_tags, servers=app.servers)
        app.openapi_schema = finish_document(document)
    return app.openapi_schema


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CONTENT_SECURITY_POLICY
    return page


def install(app: FastAPI) -> None:
    """Serve the document and the offline documentation pages. Create the app with
    ``docs_url=None, redoc_url=None`` (FastAPI's own pages load their assets from a CDN)."""
    assert app.docs_url is None and app.redoc_url is None, "FastAPI's CDN docs pages must be disabled"
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    def generate() -> dict[str, Any]:
        return openapi_document(app)

    app.openapi = generate  # type: ignore[method-assign]
    app.mount(DOCS_ASSETS_URL, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _local_only(get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}", title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        ))

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return _local_only(get_swagger_ui_oauth2_redirect_html())

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _local_only(get_redoc_html(
            openapi_url=f"{root}{openapi_url}", title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png", with_google_fonts=False,
        ))
