"""POST /diagnose: 12-lead ECGs in (uploads or JSON arrays), ranked zero-shot diagnoses out."""

from __future__ import annotations

import json
import time
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from app.api.fhir import to_fhir_bundle
from app.api.schemas import DiagnoseJson, DiagnoseResponse, ErrorBody
from app.api.state import ServiceState, StateDep
from app.ecg.readers.arrays import recording_from_arrays
from app.ecg.readers.base import ReadHints
from app.errors import InvalidInput, UnsupportedFormat, UploadTooLarge
from app.ops import metrics
from app.usecases.diagnose import DiagnoseOptions, EcgSource, Timings

FHIR_JSON = "application/fhir+json"
ERRORS = {code: {"model": ErrorBody} for code in (400, 404, 413, 415, 422, 503)}
router = APIRouter(tags=["diagnose"], responses=ERRORS)


def _check_size(request: Request, limit_bytes: int) -> None:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit_bytes:
        raise UploadTooLarge(f"request body is {int(length)} bytes; the limit is {limit_bytes} (ECGFM_MAX_REQUEST_MB)")


async def _json_sources(request: Request) -> list[EcgSource]:
    try:
        body = DiagnoseJson.model_validate(json.loads(await request.body()))
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc.msg} at position {exc.pos}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidInput(f"request body does not match the ECG schema: {problems}") from exc
    return [EcgSource(recording_from_arrays(e.leads, e.sampling_rate, e.units), ref=e.id) for e in body.ecgs]


async def _upload_sources(request: Request, state: ServiceState, hints: ReadHints) -> list[EcgSource]:
    form = await request.form(max_files=state.settings.max_files, max_fields=50)
    try:
        uploads = [v for _k, v in form.multi_items() if isinstance(v, UploadFile)]
        if not uploads:
            raise InvalidInput("the multipart form has no file; send the ECG file(s) as form field 'files'")
        files = [(u.filename or "upload", u.file) for u in uploads]
        return await state.diagnose.read_uploads(files, state.limits, hints)
    finally:
        await form.close()


async def _read_sources(request: Request, state: ServiceState, sampling_rate: float | None, units: str | None,
                        lead_names: str | None) -> list[EcgSource]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return await _json_sources(request)
    if content_type == "multipart/form-data":
        hints = ReadHints(sampling_rate=sampling_rate, units=units,
                          lead_names=tuple(n.strip() for n in lead_names.split(",")) if lead_names else None)
        return await _upload_sources(request, state, hints)
    raise UnsupportedFormat(
        f"content type {content_type or '(none)'!r} is not accepted; send multipart/form-data with ECG files "
        "or application/json with lead arrays"
    )


@router.post(
    "/diagnose",
    response_model=DiagnoseResponse,
    summary="score 12-lead ECGs against a label set",
    description=(
        "Send either a multipart form with one or more files in field `files` (WFDB `.hea` with its `.dat`/`.mat`, "
        "a `.zip` of them, DICOM, HL7 aECG, GE MUSE XML, Philips Sierra XML, EDF, CSV, NPY, CPSC 2018 `.mat`, "
        "SPH HDF5; detected from content) or JSON `{\"ecgs\": [{\"sampling_rate\", \"units\", \"leads\": {name: [...]}}]}`. "
        "Several ECGs are scored as one batch. Ask for `Accept: application/fhir+json` to get a FHIR R4 Bundle."
    ),
)
async def diagnose(
    request: Request,
    state: StateDep,
    label_set: str | None = Query(None, description="label set name (default: the service's default set)"),
    labels: list[str] | None = Query(None, description="explicit registered label names, scored together in this order"),
    top_k: int = Query(5, ge=0, le=1000, description="labels returned per ECG; 0 = all"),
    threshold: float = Query(0.0, ge=0.0, le=1.0, description="omit labels below this probability"),
    pad: bool = Query(False, description="zero-pad records shorter than 10 s (down to 2 s) instead of refusing them"),
    aggregation: Literal["max", "mean"] = Query("max", description="how window probabilities combine for records > 10 s"),
    include_windows: bool = Query(False, description="return each label's per-window probabilities"),
    sampling_rate: float | None = Query(None, gt=0, description="for formats without a rate (CSV, NPY)"),
    units: str | None = Query(None, description="for formats without units (CSV, NPY): mV, uV, V"),
    lead_names: str | None = Query(None, description="comma-separated lead names for NPY arrays"),
):
    timings = Timings()
    settings = state.settings
    _check_size(request, int(settings.max_request_mb * 1024 * 1024))
    with state.diagnose.expect_request() as arrived:
        sources = await _read_sources(request, state, sampling_rate, units, lead_names)
        if len(sources) > settings.max_ecgs_per_request:
            raise InvalidInput(f"{len(sources)} ECGs in one request; the limit is {settings.max_ecgs_per_request}")
        timings.since("parse", timings.started)
        options = DiagnoseOptions(label_set=label_set, labels=tuple(labels or ()), top_k=top_k, threshold=threshold,
                                  pad=pad, aggregation=aggregation, include_windows=include_windows)
        response = await state.diagnose.diagnose(sources, options, timings, arrived)
    metrics.observe_stage("total", time.perf_counter() - timings.started)
    if FHIR_JSON in request.headers.get("accept", ""):
        return JSONResponse(to_fhir_bundle(response), media_type=FHIR_JSON)
    return JSONResponse(response)
