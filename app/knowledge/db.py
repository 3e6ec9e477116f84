"""Tables, engine construction and transactions for the knowledge store.

One code path for SQLite (default, a file in the data directory) and PostgreSQL
(``postgresql+psycopg://...``). Only portable SQLAlchemy constructs are used; the one
dialect-specific piece, insert-or-ignore, is chosen in :func:`insert_ignore`.

SQLite write transactions start with ``BEGIN IMMEDIATE`` so two processes writing the same
file queue on the lock (up to the busy timeout) instead of failing when a reader upgrades.

Timeouts (:class:`DatabaseOptions`, from the ``ECGFM_DATABASE_*`` settings): PostgreSQL
connections are opened with libpq's ``connect_timeout`` and ``statement_timeout`` set in the
session's ``options``, and checked with a ping before use (a connection the server dropped is
replaced, so the service recovers by itself when the server is back); waiting for a pooled
connection is bounded too. A driver error meaning "cannot reach the database" (SQLAlchemy's
``OperationalError``/``InterfaceError``, a connection invalidated, a pool timeout) leaves
:func:`read_tx` and :func:`write_tx` as :class:`app.errors.DatabaseUnavailable`; the driver's
text is logged, never sent to a caller. ``app.knowledge.guard`` bounds a call as a whole.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.dml import Insert

from app.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 30
_IMMEDIATE = "knowledge_sqlite_immediate"

metadata = MetaData()


def _utc() -> DateTime:
    return DateTime(timezone=True)


labels = Table(
    "labels",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("name_key", String(200), nullable=False, unique=True),
    Column("description", Text, nullable=False),
    Column("synonyms", JSON, nullable=False),
    Column("codes", JSON, nullable=False),
    Column("encode_text", String(16), nullable=False),
    Column("builtin", Boolean, nullable=False, default=False),
    Column("created_at", _utc(), nullable=False),
    Column("updated_at", _utc(), nullable=False),
    # lifecycle (added after the first release: add_missing_columns brings older databases along)
    Column("revision", Integer, nullable=False, default=1, server_default=text("1")),  # the ETag
    Column("deleted_at", _utc(), nullable=True),  # a built-in label soft-deleted (restorable)
    Column("deleted_from", JSON, nullable=True),  # {set id: position} it was removed from
    # ids are never reused (SQLite would hand a deleted label's id to the next one, and a client
    # still holding the old id and revision 1 could then replace a different label); PostgreSQL's
    # sequences never reuse. A SQLite file made before this keeps SQLite's default.
    sqlite_autoincrement=True,
)

label_sets = Table(
    "label_sets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("name_key", String(200), nullable=False, unique=True),
    Column("description", Text, nullable=False),
    Column("version", String(32), nullable=False),
    Column("builtin", Boolean, nullable=False, default=False),
    Column("created_at", _utc(), nullable=False),
    Column("updated_at", _utc(), nullable=False),
    Column("revision", Integer, nullable=False, default=1, server_default=text("1")),  # the ETag
    Column("deleted_at", _utc(), nullable=True),  # a built-in set soft-deleted (restorable)
)

label_set_members = Table(
    "label_set_members",
    metadata,
    Column("set_id", Integer, ForeignKey("label_sets.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("label_id", Integer, ForeignKey("labels.id"), nullable=False, index=True),
    UniqueConstraint("set_id", "label_id", name="uq_member_once"),
)

# Full content of a set at each version it has had. Keyed by name, not by set id, and
# kept when a set is deleted, so a stored result can always be reproduced from its version.
label_set_versions = Table(
    "label_set_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("set_name_key", String(200), nullable=False),
    Column("version", String(32), nullable=False),
    Column("content", JSON, nullable=False),
    Column("created_at", _utc(), nullable=False),
    UniqueConstraint("set_name_key", "version", name="uq_set_version"),
)

text_embeddings = Table(
    "text_embeddings",
    metadata,
    Column("encoder_id", String(200), primary_key=True),
    Column("text_sha256", String(64), primary_key=True),
    Column("text", Text, nullable=False),
    Column("dim", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),  # float32, little-endian
    Column("created_at", _utc(), nullable=False),
)

# Built-in labels and sets already offered once; a user's deletion of one is respected.
builtin_seeds = Table(
    "builtin_seeds",
    metadata,
    Column("kind", String(16), primary_key=True),  # "label" or "label_set"
    Column("name_key", String(200), primary_key=True),
    Column("seeded_at", _utc(), nullable=False),
)


# API keys (app/access/keys.py): only the SHA-256 of a key is stored; ``prefix`` (the key's first
# characters) lets a person tell keys apart in `keys list` without the key itself.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("name_key", String(200), nullable=False, unique=True),
    Column("scope", String(16), nullable=False),
    Column("secret_sha256", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", _utc(), nullable=False),
    Column("revoked_at", _utc(), nullable=True),
)

# The model version every worker and replica serves (app/knowledge/model_state.py): one row per
# deployment (``scope``, "default"), changed by POST /models/{version}/activate.
active_model = Table(
    "active_model",
    metadata,
    Column("scope", String(40), primary_key=True),
    Column("version", String(200), nullable=False),
    Column("activated_by", String(200), nullable=False),
    Column("activated_at", _utc(), nullable=False),
)

# Every change of a label, label set, key or active model (app/knowledge/audit.py): written in the transaction of
# the change itself, so there is no change without its record. Never updated, never deleted.
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", _utc(), nullable=False, index=True),
    Column("actor", String(200), nullable=False, index=True),
    Column("action", String(40), nullable=False),
    Column("target_kind", String(16), nullable=False),
    Column("target", String(200), nullable=False),
    Column("before", JSON, nullable=True),
    Column("after", JSON, nullable=True),
    Column("request_id", String(128), nullable=True),
)


def now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every value stored here is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class DatabaseOptions:
    """Timeouts of the engine (see the module docstring)."""

    connect_timeout_s: int = 5  # PostgreSQL: libpq connect_timeout (whole seconds, at least 2 in effect)
    statement_timeout_s: float = 10.0  # PostgreSQL: server-side statement_timeout
    pool_timeout_s: float = 10.0  # waiting for a pooled connection
    sqlite_busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S  # SQLite: waiting for another writer's lock


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, options: DatabaseOptions | None = None) -> Engine:
    """An engine for ``url``: ``sqlite:///path`` or ``postgresql+psycopg://...``."""
    options = options or DatabaseOptions()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, options.sqlite_busy_timeout_s)
    connect_args: dict[str, object] = {}
    if parsed.get_backend_name() == "postgresql":
        statement_ms = max(1, int(options.statement_timeout_s * 1000))
        connect_args = {"connect_timeout": max(1, int(options.connect_timeout_s)),
                        "options": f"-c statement_timeout={statement_ms}"}
    return create_engine(url, pool_pre_ping=True, pool_timeout=options.pool_timeout_s, connect_args=connect_args)


def _sqlite_engine(url: str, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": busy_timeout_s})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


_SCHEMA_LOCK_ID = 0x4B4E4F57  # PostgreSQL advisory lock held while creating tables


def create_schema(engine: Engine) -> None:
    """Create any missing table and column; safe to run at every start and from several processes."""
    with write_tx(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK_ID})")
        metadata.create_all(conn, checkfirst=True)
        add_missing_columns(conn)


def add_missing_columns(conn: Connection) -> list[str]:
    """Add the columns a table of an older database lacks (``ALTER TABLE ... ADD COLUMN``);
    returns ``table.column`` of each one added.

    The schema has only grown by columns that are nullable or have a server default, which
    every existing row can take as it is, so this is the whole migration path so far; it keeps
    the data and needs no migration tool. A change that needs more (a new constraint, a
    column's type, data rewritten) is the point to bring in Alembic, whose first revision would
    be this schema.
    """
    existing = set(inspect(conn).get_table_names())
    added: list[str] = []
    for table in metadata.sorted_tables:
        if table.name not in existing:
            continue
        present = {column["name"] for column in inspect(conn).get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable and column.server_default is None:
                raise RuntimeError(f"column {table.name}.{column.name} cannot be added to existing rows: "
                                   "it needs a server default or to be nullable")
            kind = column.type.compile(dialect=conn.dialect)
            default = ""
            if column.server_default is not None:
                default = f" NOT NULL DEFAULT {column.server_default.arg.text}"  # type: ignore[attr-defined]
            conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}{default}')
            added.append(f"{table.name}.{column.name}")
    if added:
        log.warning("knowledge database schema brought up to date: added %s", ", ".join(added))
    return added


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on any exception."""
    with unavailable_as_error(), engine.connect() as conn:
        conn.execution_options(**{_IMMEDIATE: True})
        with conn.begin():
            yield conn


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A read transaction: every query inside sees one consistent state."""
    with unavailable_as_error(), engine.connect() as conn, conn.begin():
        yield conn


def is_unavailable(exc: BaseException) -> bool:
    """Whether a SQLAlchemy error means the database cannot be reached (not a refused statement)."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
    return False


@contextmanager
def unavailable_as_error() -> Iterator[None]:
    """Driver errors meaning "cannot reach the database" leave as ``DatabaseUnavailable``."""
    try:
        yield
    except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
        if not is_unavailable(exc):
            raise
        problem = type(exc.orig).__name__ if isinstance(exc, sa_exc.DBAPIError) else type(exc).__name__
        log.warning("knowledge database call failed: %s: %s", problem, str(exc).splitlines()[0] if str(exc) else "")
        raise DatabaseUnavailable(f"the knowledge database is unreachable ({problem})") from exc


def insert_ignore(engine_or_conn: Engine | Connection, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the dialect in use."""
    dialect = engine_or_conn.dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"the knowledge store supports SQLite and PostgreSQL, not {dialect}")
