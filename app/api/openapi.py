"""What the OpenAPI document declares beyond what FastAPI infers: error responses (one
schema, every status a route can answer with)."""

from __future__ import annotations

from typing import Any

from app.api.schemas import ErrorBody

ERROR_DESCRIPTIONS = {
    400: "invalid request",
    404: "unknown label or label set",
    409: "conflict with what is stored",
    413: "body or upload too large",
    415: "unsupported content type or file format",
    422: "unreadable or unusable signal, or invalid parameters",
    503: "no model loaded, or the service is not ready",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with the error body schema."""
    return {s: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS.get(s, "error")} for s in statuses}
