"""Liveness, readiness, the model manifest, accepted formats, Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from app.api.auth import DiagnoseActor, KeyFirstRoute
from app.api.openapi import error_responses
from app.api.schemas import (
    FormatOut,
    FormatsOut,
    HealthOut,
    InputLimits,
    JsonBodyHint,
    ModelDescriptionOut,
    ReadinessChecks,
    ReadinessOut,
    SamplingRateLimits,
    ServedModel,
)
from app.api.state import StateDep
from app.ecg.readers import formats as reader_formats
from app.ops import metrics

router = APIRouter(route_class=KeyFirstRoute, tags=["operations"])

JSON_BODY_SHAPE = '{"ecgs": [{"sampling_rate": 500, "units": "mV", "leads": {"I": [...], ...}}]}'
METRICS_EXAMPLE = (
    "# HELP ecgfm_ready 1 when the model is loaded and the database reachable\n"
    "# TYPE ecgfm_ready gauge\n"
    "ecgfm_ready 1.0\n"
)


@router.get("/healthz", operation_id="healthz", response_model=HealthOut, summary="the process is alive")
async def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz", operation_id="readyz", response_model=ReadinessOut, summary="model loaded and database reachable",
    responses={503: {"model": ReadinessOut, "description": "not ready: which check failed, and why the model "
                                                            "did not load"}},
)
async def readyz(request: Request) -> JSONResponse:
    state = getattr(request.app.state, "service", None)
    checks = ReadinessChecks(model=state is not None, database=False)
    reason: str | None = None
    if state is not None:
        # bounded by ECGFM_READINESS_TIMEOUT_S (app.knowledge.guard), also when the server is frozen
        problem = await asyncio.to_thread(state.database_problem)
        checks.database = problem is None
        reason = f"database: {problem}" if problem else None
    ready = checks.model and checks.database
    metrics.set_ready(ready)
    if state is None:
        reason = getattr(request.app.state, "startup_error", None)
    body = ReadinessOut(status="ready" if ready else "not_ready", checks=checks, reason=reason or None)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if ready else 503)


@router.get("/model", operation_id="getModel", response_model=ModelDescriptionOut,
            summary="the model being served and its bundle manifest", responses=error_responses(401, 403, 503))
async def model(state: StateDep, _actor: DiagnoseActor) -> ModelDescriptionOut:
    manifest: dict[str, Any] = dict(state.runtime.bundle.manifest)
    return ModelDescriptionOut(model=ServedModel(**state.runtime.info.as_dict()), manifest=manifest)


@router.get("/formats", operation_id="listFormats", response_model=FormatsOut,
            summary="accepted ECG formats and input limits", responses=error_responses(401, 403, 503))
async def formats(state: StateDep, _actor: DiagnoseActor) -> FormatsOut:
    s = state.settings
    limits = InputLimits(
        max_upload_mb=s.max_upload_mb, max_files=s.max_files, max_archive_members=s.max_archive_members,
        max_unpacked_mb=s.max_unpacked_mb, max_ecgs_per_request=s.max_ecgs_per_request,
        min_duration_s=10.0, min_duration_s_with_pad=2.0, max_duration_s=s.max_duration_s,
        sampling_rate_hz=SamplingRateLimits(min=50, max=10000),
    )
    return FormatsOut(
        formats=[FormatOut(**f) for f in reader_formats()],
        json_body=JsonBodyHint(content_type="application/json", body=JSON_BODY_SHAPE),
        limits=limits,
        preprocessing=state.runtime.contract.manifest_preprocessing(),
    )


@router.get(
    "/metrics", operation_id="metrics", response_class=PlainTextResponse,
    summary="Prometheus metrics (text exposition format)",
    responses={200: {"description": "the Prometheus text exposition format",
                     "content": {"text/plain": {"schema": {"type": "string"}, "example": METRICS_EXAMPLE}}}},
)
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render_latest()
    return Response(body, media_type=content_type)
