"""API keys: made, listed, revoked and verified.

A key is ``ekd_`` followed by 43 URL-safe characters: 256 random bits from :mod:`secrets`. Only
its SHA-256 is stored. A password hash (bcrypt, argon2) exists to slow the guessing of secrets
people chose; a 256-bit random key cannot be guessed, so a fast hash loses nothing, and it lets a
key be found by an indexed lookup of its hash (no per-key comparison, nothing to time). The key is
shown once, when it is made; ``prefix`` (its first characters) lets a person tell keys apart.

Every creation and revocation is written to the audit trail (``app.knowledge.audit``) in the same
transaction, with the key's name, scope and prefix, never the key or its hash.

:class:`KeyVerifier` answers "which actor is this key?" for every request. A verified key is
trusted for ``cache_s`` seconds before the database is asked again: a revocation made through this
process applies at once, one made elsewhere (another replica, the command line) within ``cache_s``.
While the database is unreachable, keys verified before keep working from memory (as label sets
already used do); a key never seen answers ``DatabaseUnavailable`` (503), not 401, since it may
be valid.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from app.access.scopes import Actor, Scope
from app.errors import Conflict, DatabaseUnavailable, InvalidInput, NotFound
from app.knowledge import audit, db
from app.knowledge.guard import DatabaseGuard
from app.knowledge.types import clean_name, name_key

KEY_PREFIX = "ekd_"
SHOWN_PREFIX_CHARS = 12  # "ekd_" and 8 characters of the key: enough to tell keys apart, useless to an attacker
MAX_KEY_CHARS = 200  # longer bearer tokens are refused before hashing


@dataclass(frozen=True)
class ApiKey:
    name: str
    scope: Scope
    prefix: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_record(self) -> dict[str, Any]:
        """What the audit trail keeps of a key (never the key or its hash)."""
        return {"name": self.name, "scope": self.scope.value, "prefix": self.prefix, "created_by": self.created_by,
                "created_at": self.created_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_scope(value: str) -> Scope:
    try:
        return Scope(value)
    except ValueError:
        raise InvalidInput(f"scope must be one of {[s.value for s in Scope]}, not {value!r}") from None


class KeyStore:
    """API keys in the knowledge database (table ``api_keys``), every call under the guard."""

    def __init__(self, engine: Engine, *, guard: DatabaseGuard | None = None) -> None:
        self._engine = engine
        self.guard = guard or DatabaseGuard()

    def create(self, name: str, scope: Scope, *, actor: Actor, request_id: str | None = None) -> tuple[ApiKey, str]:
        """A new key named ``name``: (its record, the key itself, to be shown once)."""
        name = clean_name(name, what="key name")
        secret = new_secret()

        def write() -> ApiKey:
            try:
                with db.write_tx(self._engine) as conn:
                    existing = conn.execute(select(db.api_keys.c.name).where(
                        db.api_keys.c.name_key == name_key(name))).first()
                    if existing is not None:
                        raise _exists(existing.name)
                    key = ApiKey(name=name, scope=scope, prefix=secret[:SHOWN_PREFIX_CHARS], created_by=actor.name,
                                 created_at=db.now())
                    conn.execute(insert(db.api_keys).values(
                        name=key.name, name_key=name_key(name), scope=scope.value, secret_sha256=secret_hash(secret),
                        prefix=key.prefix, created_by=key.created_by, created_at=key.created_at))
                    audit.record(conn, actor=actor.name, action="key.create", target_kind="key", target=name,
                                 before=None, after=key.as_record(), request_id=request_id)
                    return key
            except IntegrityError as exc:  # the same name made at the same moment elsewhere
                raise _exists(name) from exc

        return self.guard.call(write), secret

    def list(self) -> list[ApiKey]:
        def read() -> list[ApiKey]:
            with db.read_tx(self._engine) as conn:
                rows = conn.execute(select(db.api_keys).order_by(db.api_keys.c.name_key)).all()
            return [_to_key(row) for row in rows]

        return self.guard.call(read)

    def has_active_key(self) -> bool:
        return any(key.active for key in self.list())

    def revoke(self, name: str, *, actor: Actor, request_id: str | None = None) -> ApiKey:
        """Revoke the key named ``name`` (404 if there is none; revoking a revoked key changes nothing)."""

        def write() -> ApiKey:
            with db.write_tx(self._engine) as conn:
                row = conn.execute(select(db.api_keys).where(db.api_keys.c.name_key == name_key(name))
                                   .with_for_update()).first()
                if row is None:
                    raise NotFound(f"no API key named {name!r}", details={"key": name})
                before = _to_key(row)
                if not before.active:
                    return before
                stamp = db.now()
                conn.execute(update(db.api_keys).where(db.api_keys.c.id == row.id).values(revoked_at=stamp))
                after = ApiKey(**{**before.__dict__, "revoked_at": stamp})
                audit.record(conn, actor=actor.name, action="key.revoke", target_kind="key", target=before.name,
                             before=before.as_record(), after=after.as_record(), request_id=request_id)
                return after

        return self.guard.call(write)

    def find(self, secret: str) -> ApiKey | None:
        """The active key whose hash matches, or None (unknown or revoked)."""
        if not secret.startswith(KEY_PREFIX) or len(secret) > MAX_KEY_CHARS:
            return None
        digest = secret_hash(secret)

        def read() -> ApiKey | None:
            with db.read_tx(self._engine) as conn:
                row = conn.execute(select(db.api_keys).where(db.api_keys.c.secret_sha256 == digest)).first()
            return None if row is None else _to_key(row)

        key = self.guard.call(read)
        return key if key is not None and key.active else None


class KeyVerifier:
    """Key -> actor for every request, with the cache described in the module docstring."""

    def __init__(self, store: KeyStore, *, cache_s: float = 30.0, max_entries: int = 1024) -> None:
        self.store = store
        self.cache_s = cache_s
        self._max_entries = max_entries
        self._verified: dict[str, tuple[Actor, float]] = {}  # key hash -> (actor, when verified, monotonic)
        self._lock = threading.Lock()

    def verify(self, secret: str) -> Actor | None:
        digest = secret_hash(secret)
        now = time.monotonic()
        with self._lock:
            cached = self._verified.get(digest)
        if cached is not None and now - cached[1] < self.cache_s:
            return cached[0]
        try:
            key = self.store.find(secret)
        except DatabaseUnavailable:
            if cached is not None:  # verified before: keep serving it while the database is down
                return cached[0]
            raise
        with self._lock:
            if key is None:
                self._verified.pop(digest, None)
                return None
            actor = Actor(name=key.name, scope=key.scope)
            if len(self._verified) >= self._max_entries:
                self._verified.pop(next(iter(self._verified)))
            self._verified[digest] = (actor, now)
            return actor

    def forget(self, name: str) -> None:
        """Drop a key from the cache (after revoking it through this process)."""
        with self._lock:
            for digest, (actor, _) in list(self._verified.items()):
                if name_key(actor.name) == name_key(name):
                    del self._verified[digest]

    def revoke(self, name: str, *, actor: Actor, request_id: str | None = None) -> ApiKey:
        key = self.store.revoke(name, actor=actor, request_id=request_id)
        self.forget(name)
        return key


def _to_key(row: Any) -> ApiKey:
    return ApiKey(name=row.name, scope=Scope(row.scope), prefix=row.prefix, created_by=row.created_by,
                  created_at=db.as_utc(row.created_at),
                  revoked_at=db.as_utc(row.revoked_at) if row.revoked_at is not None else None)


def _exists(name: str) -> Conflict:
    return Conflict(f"an API key named {name!r} already exists (names are case-insensitive)", details={"key": name})
