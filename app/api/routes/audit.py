"""The audit trail (admin scope): who changed which key (and, as they are recorded, which label or
label set), when, and what it was before and after. Newest first, paged with ``before_id``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from app.api.auth import AdminActor, KeyFirstRoute
from app.api.openapi import error_responses
from app.api.schemas import NAME_MAX, NO_CONTROL_PATTERN
from app.api.state import StateDep
from app.knowledge import audit

router = APIRouter(route_class=KeyFirstRoute, tags=["access"], responses=error_responses(401, 403, 503))


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    actor: str = Field(..., description="the name of the key that made the change (never the key)")
    action: str = Field(..., examples=["key.create"])
    target_kind: str
    target: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    request_id: str | None = Field(None, description="ties the change to the access-log line of its request")


class AuditPageOut(BaseModel):
    events: list[AuditEventOut]
    next_before_id: int | None = Field(None, description="pass as before_id for the next (older) page; "
                                                         "null when this page is the last")


@router.get("/audit", operation_id="listAudit", response_model=AuditPageOut, summary="the audit trail, newest first",
            responses=error_responses(422))
def list_audit(state: StateDep, _actor: AdminActor,
               target_kind: Literal["label", "label_set", "key", "model"] | None = Query(None),
               target: str | None = Query(None, max_length=NAME_MAX, pattern=NO_CONTROL_PATTERN),
               actor: str | None = Query(None, max_length=NAME_MAX, pattern=NO_CONTROL_PATTERN),
               since: datetime | None = Query(None, description="only changes at or after this time"),
               before_id: int | None = Query(None, ge=1, le=2**31 - 1, description="only changes older than this id"),
               limit: int = Query(100, ge=1, le=audit.MAX_PAGE)) -> AuditPageOut:
    events = state.store.guard.call(lambda: audit.list_events(
        state.engine, target_kind=target_kind, target=target, actor=actor, since=since, before_id=before_id,
        limit=limit + 1))
    page, more = events[:limit], len(events) > limit
    return AuditPageOut(events=[AuditEventOut(**e.__dict__) for e in page],
                        next_before_id=page[-1].id if more and page else None)
