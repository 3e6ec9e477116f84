"""The API-key check of every route but health, metrics and the API documents.

``Authorization: Bearer KEY``; the key's scope must allow the route's (``app.access.scopes``).
Routes declare what they need with the typed dependencies below, e.g.
``def update_label(..., actor: LabelsActor)``; the actor's name goes into the audit trail.
No key: 401 ``unauthenticated`` with ``WWW-Authenticate: Bearer``; a key whose scope is too
small: 403 ``forbidden`` naming the scope needed. The key itself is never logged or echoed.
With ``ECGFM_AUTH=disabled`` every call is made as ``ANONYMOUS`` (logged loudly at start).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.access.scopes import ANONYMOUS, Actor, Scope
from app.api.state import StateDep
from app.errors import Forbidden, Unauthenticated

SCHEME_NAME = "apiKey"
bearer = HTTPBearer(
    auto_error=False, scheme_name=SCHEME_NAME, bearerFormat="API key",
    description="an API key from `ecgfm-ked keys create --name NAME --scope diagnose|labels|admin`, sent as "
    "`Authorization: Bearer KEY`. Scopes: `diagnose` scores and reads; `labels` also changes labels and label "
    "sets; `admin` also manages keys and reads the audit trail.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def require(scope: Scope) -> Callable[..., Actor]:
    """A dependency that answers the calling actor, or refuses with 401/403."""

    def check(request: Request, state: StateDep, credentials: Credentials) -> Actor:
        if state.settings.auth == "disabled":
            actor = ANONYMOUS
        else:
            if credentials is None or not credentials.credentials:
                raise Unauthenticated(
                    "this operation needs an API key: send `Authorization: Bearer KEY` "
                    "(an administrator creates one with `ecgfm-ked keys create`)")
            found = state.keys.verify(credentials.credentials)
            if found is None:
                raise Unauthenticated("the API key is not valid: unknown or revoked")
            actor = found
            if not actor.scope.allows(scope):
                raise Forbidden(
                    f"this operation needs a key with scope {scope.value!r} or above; key {actor.name!r} has "
                    f"{actor.scope.value!r}",
                    details={"needed_scope": scope.value, "key_scope": actor.scope.value, "key": actor.name})
        request.state.actor = actor.name  # for the access log line (a key's name, never the key)
        return actor

    check.__name__ = f"require_{scope.value}"
    return check


DiagnoseActor = Annotated[Actor, Security(require(Scope.diagnose))]
LabelsActor = Annotated[Actor, Security(require(Scope.labels))]
AdminActor = Annotated[Actor, Security(require(Scope.admin))]
