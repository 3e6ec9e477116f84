"""The audit trail: who changed which label, label set, key or active model, when, and what it was before and after.

A record is written with :func:`record` inside the transaction of the change it describes (the
store's write transaction), so a change and its record commit together or not at all. Records are
never updated or deleted. ``before``/``after`` hold the full content (``None`` for a creation's
before and a deletion's after); the actor is a key's name (never the key), the request id ties a
record to the access log line of the request that made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Engine, insert, select
from sqlalchemy.engine import Connection

from app.knowledge import db

TargetKind = Literal["label", "label_set", "key", "model"]
# The actor of the built-in labels and sets the service seeds at start (app.knowledge.builtin).
SEEDING_ACTOR = "built-in seeding"
MAX_PAGE = 1000


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: datetime
    actor: str
    action: str  # e.g. "label.create", "label.update", "label.delete", "label.restore", "key.revoke", "model.activate"
    target_kind: str
    target: str  # a label's id, a label set's name, a key's name, a model version
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None


def record(conn: Connection, *, actor: str, action: str, target_kind: TargetKind, target: str | int,
           before: dict[str, Any] | None, after: dict[str, Any] | None, request_id: str | None = None) -> None:
    """Write one record in the caller's transaction (see the module docstring)."""
    conn.execute(insert(db.audit_events).values(
        at=db.now(), actor=actor, action=action, target_kind=target_kind, target=str(target),
        before=before, after=after, request_id=request_id))


def list_events(engine: Engine, *, target_kind: str | None = None, target: str | None = None,
                actor: str | None = None, since: datetime | None = None, before_id: int | None = None,
                limit: int = 100) -> list[AuditEvent]:
    """Newest first; ``before_id`` pages back (pass the smallest id of the previous page)."""
    table = db.audit_events
    query = select(table).order_by(table.c.id.desc()).limit(max(1, min(limit, MAX_PAGE)))
    if target_kind is not None:
        query = query.where(table.c.target_kind == target_kind)
    if target is not None:
        query = query.where(table.c.target == target)
    if actor is not None:
        query = query.where(table.c.actor == actor)
    if since is not None:
        query = query.where(table.c.at >= since)
    if before_id is not None:
        query = query.where(table.c.id < before_id)
    with db.read_tx(engine) as conn:
        rows = conn.execute(query).all()
    return [AuditEvent(id=row.id, at=db.as_utc(row.at), actor=row.actor, action=row.action,
                       target_kind=row.target_kind, target=row.target, before=row.before, after=row.after,
                       request_id=row.request_id) for row in rows]
