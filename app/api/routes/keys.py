"""API keys (admin scope): make one (the answer shows it once), list them, revoke one.

The same operations as ``ecgfm-ked keys create|list|revoke`` on the command line."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from app.access.keys import ApiKey
from app.access.scopes import Scope
from app.api.auth import AdminActor, KeyFirstRoute
from app.api.errors import request_id_of
from app.api.openapi import error_responses
from app.api.schemas import NAME_MAX, NO_CONTROL_PATTERN, Name
from app.api.state import StateDep

router = APIRouter(route_class=KeyFirstRoute, tags=["access"], responses=error_responses(401, 403, 503))
KeyName = Annotated[str, Path(min_length=1, max_length=NAME_MAX, pattern=NO_CONTROL_PATTERN,
                              description="the key's name")]


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "ward-3-cart", "scope":
                                                                                "diagnose"}]})

    name: Name = Field(..., description="who holds the key (a system or a person's role); recorded in the audit")
    scope: Scope = Field(..., description="`diagnose` scores and reads; `labels` also changes labels and label "
                                          "sets; `admin` also manages keys and reads the audit trail")


class KeyOut(BaseModel):
    name: str
    scope: Scope
    prefix: str = Field(..., description="the key's first characters, to tell keys apart (not the key)")
    created_by: str
    created_at: datetime
    revoked_at: datetime | None = None
    active: bool

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(name=key.name, scope=key.scope, prefix=key.prefix, created_by=key.created_by,
                   created_at=key.created_at, revoked_at=key.revoked_at, active=key.active)


class CreatedKeyOut(KeyOut):
    key: str = Field(..., description="the key itself: shown this once, stored only as its SHA-256")


@router.post("/keys", operation_id="createKey", response_model=CreatedKeyOut, status_code=status.HTTP_201_CREATED,
             summary="make an API key (shown once in this answer)", responses=error_responses(409, 422))
def create_key(body: KeyIn, request: Request, state: StateDep, actor: AdminActor) -> CreatedKeyOut:
    key, secret = state.keys.store.create(body.name, body.scope, actor=actor, request_id=request_id_of(request))
    return CreatedKeyOut(**KeyOut.of(key).model_dump(), key=secret)


@router.get("/keys", operation_id="listKeys", response_model=list[KeyOut], summary="every API key (never the keys)")
def list_keys(state: StateDep, _actor: AdminActor) -> list[KeyOut]:
    return [KeyOut.of(key) for key in state.keys.store.list()]


@router.delete("/keys/{name}", operation_id="revokeKey", status_code=status.HTTP_204_NO_CONTENT,
               summary="revoke an API key (at once in this process, within ECGFM_KEY_CACHE_S in others)",
               responses=error_responses(404, 422))
def revoke_key(name: KeyName, request: Request, state: StateDep, actor: AdminActor) -> Response:
    state.keys.revoke(name, actor=actor, request_id=request_id_of(request))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
