"""API keys (app/access/keys.py) on real SQLite and PostgreSQL databases, and a PostgreSQL
cluster of the test's own that is stopped while keys are verified."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, select

from app.access.keys import KEY_PREFIX, KeyStore, KeyVerifier, secret_hash
from app.access.scopes import COMMAND_LINE, Actor, Scope
from app.errors import Conflict, DatabaseUnavailable, InvalidInput, NotFound
from app.knowledge import audit, db
from app.knowledge.db import create_schema, make_engine
from app.knowledge.guard import DatabaseGuard
from tests.fixtures.pg_cluster import PgCluster

ADMIN = Actor(name="alice-admin", scope=Scope.admin)


def test_a_key_is_shown_once_and_stored_only_as_its_hash(engine_factory: Callable[[], Engine]) -> None:
    engine = engine_factory()
    store = KeyStore(engine)
    key, secret = store.create("ward-3", Scope.diagnose, actor=ADMIN, request_id="r1")
    assert secret.startswith(KEY_PREFIX) and len(secret) >= 40
    assert key.prefix == secret[: len(key.prefix)] and len(key.prefix) < len(secret) // 2
    with engine.connect() as conn:
        row = conn.execute(select(db.api_keys)).one()
    stored = " ".join(str(v) for v in row)
    assert secret not in stored and row.secret_sha256 == secret_hash(secret)
    assert store.find(secret) == key and store.find(secret + "x") is None and store.find("not-a-key") is None
    (event,) = audit.list_events(engine, target_kind="key")
    assert (event.actor, event.action, event.target, event.request_id) == ("alice-admin", "key.create", "ward-3", "r1")
    assert event.before is None and event.after is not None and event.after["scope"] == "diagnose"
    assert secret not in repr(event) and secret_hash(secret) not in repr(event)


def test_names_are_unique_case_insensitively_and_scopes_checked(engine_factory: Callable[[], Engine]) -> None:
    store = KeyStore(engine_factory())
    store.create("Ward 3", Scope.labels, actor=ADMIN)
    with pytest.raises(Conflict, match="already exists"):
        store.create("ward  3", Scope.admin, actor=ADMIN)
    with pytest.raises(InvalidInput):
        store.create("bad\x00name", Scope.admin, actor=ADMIN)
    assert [k.name for k in store.list()] == ["Ward 3"]


def test_revoking_is_recorded_and_applies(engine_factory: Callable[[], Engine]) -> None:
    engine = engine_factory()
    store = KeyStore(engine)
    _key, secret = store.create("cart-7", Scope.diagnose, actor=COMMAND_LINE)
    revoked = store.revoke("CART-7", actor=ADMIN)
    assert revoked.revoked_at is not None and not revoked.active
    assert store.find(secret) is None
    assert store.revoke("cart-7", actor=ADMIN).revoked_at == revoked.revoked_at  # again: nothing changes
    with pytest.raises(NotFound):
        store.revoke("nobody", actor=ADMIN)
    actions = [(e.action, e.actor) for e in audit.list_events(engine, target_kind="key", target="cart-7")]
    assert actions == [("key.revoke", "alice-admin"), ("key.create", "command line")]  # newest first
    assert not store.has_active_key()


def test_the_verifier_caches_and_revocation_through_it_is_immediate(engine_factory: Callable[[], Engine]) -> None:
    store = KeyStore(engine_factory())
    _key, secret = store.create("lab", Scope.labels, actor=ADMIN)
    here = KeyVerifier(store, cache_s=3600)
    elsewhere = KeyVerifier(KeyStore(engine_factory()), cache_s=3600)  # another process on the same database
    fresh = KeyVerifier(KeyStore(engine_factory()), cache_s=0)
    for verifier in (here, elsewhere, fresh):
        assert verifier.verify(secret) == Actor(name="lab", scope=Scope.labels)
    here.revoke("lab", actor=ADMIN)
    assert here.verify(secret) is None  # revoked through this process: at once
    assert fresh.verify(secret) is None  # no cache: at once
    # within its cache time another process still trusts it: the stated bound (ECGFM_KEY_CACHE_S)
    assert elsewhere.verify(secret) == Actor(name="lab", scope=Scope.labels)
    assert KeyVerifier(KeyStore(engine_factory()), cache_s=3600).verify(secret) is None


@pytest.mark.postgres
def test_known_keys_keep_working_while_the_database_is_down(cluster: PgCluster) -> None:
    engine = make_engine(cluster.url)
    create_schema(engine)
    try:
        store = KeyStore(engine, guard=DatabaseGuard(deadline_s=3.0))
        _key, known = store.create("known", Scope.diagnose, actor=ADMIN)
        _key, unseen = store.create("unseen", Scope.diagnose, actor=ADMIN)
        verifier = KeyVerifier(store, cache_s=0)  # every call asks the database while it answers
        assert verifier.verify(known) is not None
        cluster.stop()
        try:
            assert verifier.verify(known) == Actor(name="known", scope=Scope.diagnose)  # from memory
            with pytest.raises(DatabaseUnavailable):  # maybe valid: 503, not 401
                verifier.verify(unseen)
        finally:
            cluster.start()
        assert verifier.verify(unseen) is not None  # recovered without a restart
    finally:
        engine.dispose()
