"""POST /embeddings: the same ECG inputs as /diagnose in, the ECG encoder's features out
(how they are pooled: app/usecases/embed.py)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.api.auth import DiagnoseActor, KeyFirstRoute
from app.api.openapi import component, error_responses
from app.api.routes.diagnose import (
    CLIENT_GONE,
    MULTIPART,
    OPENAPI_EXTRA,
    UPLOAD_SCHEMA,
    read_sources,
    request_id_for,
    unless_disconnected,
)
from app.api.schemas import EmbeddingsResponse
from app.api.state import StateDep
from app.ecg.readers.base import ReadHints
from app.errors import InvalidInput
from app.ops import metrics
from app.usecases.diagnose import Timings
from app.usecases.embed import embed

router = APIRouter(route_class=KeyFirstRoute, tags=["diagnose"])
MAX_TOKEN_WINDOWS = 64  # with include_tokens: 64 windows x 32 x 768 floats is about 30 MB of JSON

# /diagnose's request body, less the FHIR context fields (which only a diagnosis can use)
_BODY: dict[str, Any] = OPENAPI_EXTRA["requestBody"]
EMBED_OPENAPI: dict[str, Any] = {"requestBody": {**_BODY, "content": {
    **_BODY["content"],
    MULTIPART: {**_BODY["content"][MULTIPART],
                "schema": component("EmbeddingsUpload", {**UPLOAD_SCHEMA, "title": "EmbeddingsUpload"})},
}}}


@router.post(
    "/embeddings", response_model=EmbeddingsResponse, operation_id="embeddings",
    summary="the ECG encoder's feature vectors of 12-lead ECGs",
    description="The same inputs as POST /diagnose (files or JSON lead arrays), read and preprocessed the same way. "
                "Per ECG and per 10 s window: the pooled feature vector (the mean of the encoder's tokens), and "
                "with include_tokens=true the tokens themselves (one per segment).",
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503),
    openapi_extra=EMBED_OPENAPI,
)
async def embeddings(
    request: Request,
    state: StateDep,
    _actor: DiagnoseActor,
    include_tokens: bool = Query(False, description="also return each window's tokens (32 x 768 floats)"),
    pad: bool = Query(False, description="zero-pad records shorter than 10 s (down to 2 s) instead of refusing them"),
    sampling_rate: float | None = Query(None, gt=0, description="for formats without a rate (CSV, NPY); or a form "
                                                                "field"),
    units: str | None = Query(None, description="for formats without units (CSV, NPY): mV, uV, V; or a form field"),
    lead_names: str | None = Query(None, description="comma-separated lead names for NPY arrays; or a form field"),
    model: str | None = Query(None, max_length=200, description="pin a loaded model version (GET /models)"),
) -> EmbeddingsResponse | Response:
    timings = Timings()
    settings = state.settings
    deadline = time.monotonic() + settings.request_deadline_s
    names = tuple(n.strip() for n in lead_names.split(",")) if lead_names else None
    hints = ReadHints(sampling_rate=sampling_rate, units=units, lead_names=names)
    service = state.diagnose
    with (service.admit() as resize, state.models.lease(model) as served,
          service.expect_request(served) as arrived):
        sources = await read_sources(request, state, hints)
        if len(sources) > settings.max_ecgs_per_request:
            raise InvalidInput(f"{len(sources)} ECGs in one request; the limit is {settings.max_ecgs_per_request}")
        resize(len(sources))
        timings.since("parse", timings.started)
        arrived()
        result = await unless_disconnected(request, embed(
            service, sources, model=served, pad=pad, include_tokens=include_tokens, timings=timings,
            request_id=request_id_for(request), deadline=deadline, max_token_windows=MAX_TOKEN_WINDOWS))
    if result is None:
        metrics.record_shed("abandoned")
        return Response(status_code=CLIENT_GONE)
    return EmbeddingsResponse.from_result(result)
