"""Which model version is active, stored in the database so that every worker and replica
serving from it follows a switch (``app.serving.repository``). A switch and its audit record
(``model.activate``, with the key name and request id) commit in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update

from app.knowledge import audit, db
from app.knowledge.guard import DatabaseGuard

DEFAULT_SCOPE = "default"


@dataclass(frozen=True)
class ActiveModel:
    version: str
    activated_by: str
    activated_at: datetime


class ActiveModelStore:
    def __init__(self, engine: Engine, *, guard: DatabaseGuard | None = None, scope: str = DEFAULT_SCOPE) -> None:
        self.engine = engine
        self.guard = guard or DatabaseGuard(deadline_s=None)
        self.scope = scope

    def get(self) -> ActiveModel | None:
        """The recorded active version; None until a first activation."""
        def read() -> ActiveModel | None:
            table = db.active_model
            with db.read_tx(self.engine) as conn:
                row = conn.execute(select(table).where(table.c.scope == self.scope)).first()
            if row is None:
                return None
            return ActiveModel(row.version, row.activated_by, db.as_utc(row.activated_at))

        return self.guard.call(read)

    def set(self, version: str, *, actor: str, request_id: str | None = None) -> ActiveModel:
        """Record ``version`` as active (and audit it) in one transaction."""
        def write() -> ActiveModel:
            table = db.active_model
            at = db.now()
            with db.write_tx(self.engine) as conn:
                row = conn.execute(select(table).where(table.c.scope == self.scope)).first()
                before = None if row is None else {"version": row.version}
                values = {"version": version, "activated_by": actor, "activated_at": at}
                if row is None:
                    conn.execute(table.insert().values(scope=self.scope, **values))
                else:
                    conn.execute(update(table).where(table.c.scope == self.scope).values(**values))
                audit.record(conn, actor=actor, action="model.activate", target_kind="model", target=version,
                             before=before, after={"version": version}, request_id=request_id)
            return ActiveModel(version, actor, at)

        return self.guard.call(write)
