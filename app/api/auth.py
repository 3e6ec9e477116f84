"""The API-key check of every route but health, metrics and the API documents.

``Authorization: Bearer KEY``; the key's scope must allow the route's (``app.access.scopes``).
Routes declare what they need with the typed dependencies below, e.g.
``def update_label(..., actor: LabelsActor)``; the actor's name goes into the audit trail.
No key: 401 ``unauthenticated`` with ``WWW-Authenticate: Bearer``; a key whose scope is too
small: 403 ``forbidden`` naming the scope needed. The key itself is never logged or echoed.
With ``ECGFM_AUTH=disabled`` every call is made as ``ANONYMOUS`` (logged loudly at start).

The key is checked before the request body is read: FastAPI parses and validates a declared
body before it runs dependencies, so without ``KeyFirstRoute`` an anonymous caller sending a
malformed body would learn the body's schema from a 422 (and make the server parse it) instead
of getting 401. Every router with guarded routes is an ``APIRouter(route_class=KeyFirstRoute)``;
the route finds the scope its ``*Actor`` dependency needs and checks it first.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Request, Response, Security
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from app.access.scopes import ANONYMOUS, Actor, Scope
from app.api.state import ServiceState, StateDep, get_state
from app.errors import Forbidden, Unauthenticated

SCHEME_NAME = "apiKey"
bearer = HTTPBearer(
    auto_error=False, scheme_name=SCHEME_NAME, bearerFormat="API key",
    description="an API key from `ecgfm-ked keys create --name NAME --scope diagnose|labels|admin`, sent as "
    "`Authorization: Bearer KEY`. Scopes: `diagnose` scores and reads; `labels` also changes labels and label "
    "sets; `admin` also manages keys and reads the audit trail.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def authenticate(state: ServiceState, credentials: HTTPAuthorizationCredentials | None, scope: Scope) -> Actor:
    """The actor the credentials name, allowed ``scope``; or Unauthenticated / Forbidden.
    May ask the database (a key not verified recently): call it off the event loop."""
    if state.settings.auth == "disabled":
        return ANONYMOUS
    if credentials is None or not credentials.credentials:
        raise Unauthenticated(
            "this operation needs an API key: send `Authorization: Bearer KEY` "
            "(an administrator creates one with `ecgfm-ked keys create`)")
    actor = state.keys.verify(credentials.credentials)
    if actor is None:
        raise Unauthenticated("the API key is not valid: unknown or revoked")
    if not actor.scope.allows(scope):
        raise Forbidden(
            f"this operation needs a key with scope {scope.value!r} or above; key {actor.name!r} has "
            f"{actor.scope.value!r}",
            details={"needed_scope": scope.value, "key_scope": actor.scope.value, "key": actor.name})
    return actor


def require(scope: Scope) -> Callable[..., Actor]:
    """A dependency that answers the calling actor, or refuses with 401/403. On a
    ``KeyFirstRoute`` the key was already checked for this scope (``request.state.actor``)."""

    def check(request: Request, state: StateDep, credentials: Credentials) -> Actor:
        checked = getattr(request.state, "actor", None)
        actor = checked if isinstance(checked, Actor) and checked.scope.allows(scope) else (
            authenticate(state, credentials, scope))
        request.state.actor = actor  # for the access log line (the key's name, never the key)
        return actor

    check.__name__ = f"require_{scope.value}"
    check.needed_scope = scope  # type: ignore[attr-defined]  # read by KeyFirstRoute
    return check


def needed_scope(dependant: Dependant) -> Scope | None:
    """The scope a route's ``*Actor`` dependency needs (the widest, if it has several); None for
    a public route."""
    found: list[Scope] = []
    pending = list(dependant.dependencies)
    while pending:
        dep = pending.pop()
        scope = getattr(dep.call, "needed_scope", None)
        if isinstance(scope, Scope):
            found.append(scope)
        pending.extend(dep.dependencies)
    return max(found, key=lambda s: s.rank) if found else None


class KeyFirstRoute(APIRoute):
    """A route that checks the caller's key (401/403) before the request body is read."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scope = needed_scope(self.dependant)
        if scope is None:
            return handler

        async def key_first(request: Request) -> Response:
            credentials = await bearer(request)
            request.state.actor = await run_in_threadpool(authenticate, get_state(request), credentials, scope)
            return await handler(request)

        return key_first


DiagnoseActor = Annotated[Actor, Security(require(Scope.diagnose))]
LabelsActor = Annotated[Actor, Security(require(Scope.labels))]
AdminActor = Annotated[Actor, Security(require(Scope.admin))]
