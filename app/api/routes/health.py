"""Liveness, readiness, the model manifest, accepted formats, Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.api.state import StateDep
from app.ecg.readers import formats as reader_formats
from app.ops import metrics

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="the process is alive")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="model loaded and database reachable")
async def readyz(request: Request) -> JSONResponse:
    state = getattr(request.app.state, "service", None)
    checks = {"model": state is not None, "database": False}
    if state is not None:
        checks["database"] = await asyncio.to_thread(state.database_ok)
    ready = all(checks.values())
    metrics.set_ready(ready)
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    if state is None and getattr(request.app.state, "startup_error", None):
        body["reason"] = request.app.state.startup_error
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/model", summary="the model being served and its bundle manifest")
async def model(state: StateDep) -> dict:
    manifest = dict(state.runtime.bundle.manifest)
    return {"model": state.runtime.info.as_dict(), "manifest": manifest}


@router.get("/formats", summary="accepted ECG formats and input limits")
async def formats(state: StateDep) -> dict:
    s = state.settings
    return {
        "formats": reader_formats(),
        "json": {"content_type": "application/json", "body": "{\"ecgs\": [{\"sampling_rate\": 500, \"units\": \"mV\", \"leads\": {\"I\": [...], ...}}]}"},
        "limits": {
            "max_upload_mb": s.max_upload_mb,
            "max_files": s.max_files,
            "max_archive_members": s.max_archive_members,
            "max_unpacked_mb": s.max_unpacked_mb,
            "max_ecgs_per_request": s.max_ecgs_per_request,
            "min_duration_s": 10.0,
            "min_duration_s_with_pad": 2.0,
            "max_duration_s": s.max_duration_s,
            "sampling_rate_hz": {"min": 50, "max": 10000},
        },
        "preprocessing": state.runtime.bundle.manifest.get("preprocessing", {}),
    }


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render_latest()
    return Response(body, media_type=content_type)
