"""The knowledge store when its database fails: timeouts, 'unavailable' errors, reading from memory.

Real PostgreSQL: each module starts its own cluster (initdb + pg_ctl on a free port, in a
temporary directory, as the ``postgres`` user), never the machine's own server on 5432, and
stops, freezes (``SIGSTOP`` on the postmaster and every backend) and restarts it. SQLite's busy
timeout is checked on a real file with a second connection holding the write lock.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from app.errors import DatabaseUnavailable
from app.knowledge import db
from app.knowledge.guard import DatabaseGuard
from app.knowledge.store import KnowledgeStore, LabelSetReader
from app.knowledge.types import LabelDraft, LabelSetDraft
from tests.fixtures.pg_cluster import PgCluster  # its `cluster` fixture comes from tests/conftest.py

HANG_BOUND_S = 15.0  # generous: only catches a call that hangs instead of timing out

OPTIONS = db.DatabaseOptions(connect_timeout_s=2, statement_timeout_s=1.0, pool_timeout_s=3.0)


@pytest.fixture
def pg_store(cluster: PgCluster) -> Iterator[KnowledgeStore]:
    engine = db.make_engine(cluster.url, OPTIONS)
    db.create_schema(engine)
    with engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in db.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    store = KnowledgeStore(engine, guard=DatabaseGuard(deadline_s=4.0, retry_after_s=7, probe_interval_s=0.5))
    try:
        yield store
    finally:
        cluster.thaw()
        engine.dispose()


def _seed(store: KnowledgeStore) -> None:
    store.create_label(LabelDraft(name="sinus rhythm", description="normal sinus rhythm"), actor="test")
    store.create_label(LabelDraft(name="atrial fibrillation", description="irregularly irregular rhythm"), actor="test")
    store.create_label_set(LabelSetDraft(name="rhythm", label_names=("sinus rhythm", "atrial fibrillation")), actor="test")


def _timed(fn):  # type: ignore[no-untyped-def]
    t = time.monotonic()
    try:
        return fn(), time.monotonic() - t
    except Exception as exc:
        return exc, time.monotonic() - t


def _wait_until_ok(fn, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except DatabaseUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_statement_timeout_is_set_on_postgresql(pg_store: KnowledgeStore) -> None:
    engine = pg_store._engine
    with db.read_tx(engine) as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "1s"
    got, took = _timed(lambda: _sleep(engine, 5))
    assert isinstance(got, DatabaseUnavailable), got
    assert "QueryCanceled" in got.message and took < 4.5, (got.message, took)


def _sleep(engine, seconds: float) -> None:  # type: ignore[no-untyped-def]
    with db.read_tx(engine) as conn:
        conn.execute(text(f"SELECT pg_sleep({seconds})"))


def test_stopped_database_serves_used_sets_from_memory_refuses_writes_and_recovers(
        cluster: PgCluster, pg_store: KnowledgeStore) -> None:
    _seed(pg_store)
    reader = LabelSetReader(pg_store, fallback_deadline_s=1.0)
    before = reader.get("rhythm")
    assert not before.served_from_memory and pg_store.guard.health.ok
    cluster.stop()
    try:
        got, took = _timed(lambda: reader.get("RHYTHM"))
        assert not isinstance(got, Exception), got
        assert got.served_from_memory and got.version == before.version and got.labels == before.labels
        assert took < HANG_BOUND_S
        assert not pg_store.guard.health.ok and "unreachable" in (pg_store.guard.health.problem or "")

        err, _ = _timed(lambda: pg_store.create_label(LabelDraft(name="flutter", description="atrial flutter"), actor="test"))
        assert isinstance(err, DatabaseUnavailable), err
        assert err.retry_after_s == 7 and err.code == "database_unavailable"
        assert "127.0.0.1" not in err.message and "/" not in err.message  # no server details leak

        never_read, _ = _timed(lambda: reader.get("no such set"))
        assert isinstance(never_read, DatabaseUnavailable), never_read
    finally:
        cluster.start()
    time.sleep(0.6)  # past the guard's probe interval: the next read asks the database again
    after = _wait_until_ok(lambda: reader.get("rhythm"))
    assert not after.served_from_memory and after.version == before.version
    created = _wait_until_ok(lambda: pg_store.create_label(LabelDraft(name="flutter", description="atrial flutter"), actor="test"))
    assert created.name == "flutter" and pg_store.guard.health.ok


def test_frozen_database_bounds_every_call_and_recovers(cluster: PgCluster, pg_store: KnowledgeStore) -> None:
    _seed(pg_store)
    reader = LabelSetReader(pg_store, fallback_deadline_s=1.0)
    before = reader.get("rhythm")
    held = pg_store._engine.connect()  # a connection open before the freeze: only the guard bounds it
    cluster.freeze()
    try:
        stuck, took = _timed(lambda: pg_store.guard.call(lambda: held.execute(text("SELECT 1")).scalar_one()))
        assert isinstance(stuck, DatabaseUnavailable), stuck
        assert "did not answer within 4 s" in stuck.message and stuck.retry_after_s == 7
        assert 3.5 < took < 4.0 + 1.5, took
        assert not pg_store.guard.health.ok
        time.sleep(0.6)  # past the probe interval

        got, took = _timed(lambda: reader.get("rhythm"))
        assert not isinstance(got, Exception), got
        assert got.served_from_memory and got.version == before.version
        assert took < 1.0 + 1.5, took  # the fallback deadline, not the call's

        again, took = _timed(lambda: reader.get("rhythm"))  # known down: no wait at all
        assert not isinstance(again, Exception) and again.served_from_memory
        assert took < 0.5, took

        err, took = _timed(lambda: pg_store.update_label_set(
            "rhythm", LabelSetDraft(name="rhythm", label_names=("sinus rhythm",)), actor="test"))
        assert isinstance(err, DatabaseUnavailable), err  # connect timeout or the guard's deadline
        assert err.retry_after_s == 7
        assert took < 4.0 + 1.5, took

        fresh_engine = db.make_engine(pg_store._engine.url.render_as_string(hide_password=False), OPTIONS)
        fresh, took = _timed(lambda: KnowledgeStore(fresh_engine).list_labels())  # no guard: connect_timeout
        fresh_engine.dispose()
        assert isinstance(fresh, DatabaseUnavailable), fresh
        assert took < 2 + 1.5, took
    finally:
        cluster.thaw()
    time.sleep(0.6)  # the stuck call on ``held`` finishes once the server runs again
    held.close()
    after = _wait_until_ok(lambda: reader.get("rhythm"))
    assert not after.served_from_memory
    updated = _wait_until_ok(lambda: pg_store.update_label_set(
        "rhythm", LabelSetDraft(name="rhythm", label_names=("sinus rhythm",)), actor="test"))
    assert updated.label_names == ("sinus rhythm",)
    assert reader.get("rhythm").version == updated.version


def test_connect_timeout_bounds_a_server_that_accepts_and_never_answers() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # the kernel completes the handshake; nothing ever answers
        port = listener.getsockname()[1]
        engine = db.make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/x",
                                db.DatabaseOptions(connect_timeout_s=2))
        try:
            got, took = _timed(lambda: KnowledgeStore(engine).list_label_sets())
        finally:
            engine.dispose()
    assert isinstance(got, DatabaseUnavailable), got
    assert took < 2 + 3.0, took


def test_sqlite_busy_timeout_gives_unavailable_not_a_hang(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    engine = db.make_engine(url, db.DatabaseOptions(sqlite_busy_timeout_s=0.3))
    db.create_schema(engine)
    holder = db.make_engine(url)
    try:
        with db.write_tx(holder):  # holds the write lock
            store = KnowledgeStore(engine)
            got, took = _timed(lambda: store.create_label(LabelDraft(name="x", description="y"), actor="test"))
        assert isinstance(got, DatabaseUnavailable), got
        assert took < HANG_BOUND_S
        assert "k.db" not in got.message and str(tmp_path) not in got.message
        assert store.create_label(LabelDraft(name="x", description="y"), actor="test").name == "x"  # lock gone: works
    finally:
        holder.dispose()
        engine.dispose()
