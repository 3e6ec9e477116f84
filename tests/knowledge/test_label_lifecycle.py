"""Revisions, checked replaces, soft delete of built-ins, restore and the audit of every change,
on SQLite and PostgreSQL (tests/knowledge/conftest.py ``db_url``), plus the migration of a
database made before these columns existed."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import JSON, Boolean, Column, DateTime, Engine, Integer, MetaData, String, Table, Text, inspect, text

from app.errors import Conflict, NotFound, VersionConflict
from app.knowledge import audit
from app.knowledge.builtin import seed_builtin
from app.knowledge.db import create_schema, make_engine
from app.knowledge.store import KnowledgeStore
from app.knowledge.types import LabelSetDraft

from .helpers import draft


@pytest.fixture
def store(engine_factory: Callable[[], Engine]) -> KnowledgeStore:
    return KnowledgeStore(engine_factory())


def events(store: KnowledgeStore, **filters: str) -> list[audit.AuditEvent]:
    return audit.list_events(store._engine, **filters)  # noqa: SLF001 - the store's own engine


def test_revisions_grow_and_a_stale_one_changes_nothing(store: KnowledgeStore) -> None:
    label = store.create_label(draft("lbbb"), actor="ward-3")
    assert label.revision == 1
    edited = store.update_label(label.id, draft("lbbb", "Edited."), actor="ward-3", expected_revision=1)
    assert edited.revision == 2
    with pytest.raises(VersionConflict) as stale:
        store.update_label(label.id, draft("lbbb", "Lost edit."), actor="cardio", expected_revision=1)
    assert stale.value.details["current_revision"] == 2 and stale.value.details["etag"] == '"2"'
    assert store.get_label(label.id).description == "Edited."  # nothing lost, nothing half-written
    with pytest.raises(VersionConflict):
        store.delete_label(label.id, actor="cardio", expected_revision=1)
    assert store.update_label(label.id, draft("lbbb", "Any."), actor="x", expected_revision=None).revision == 3


def test_a_set_revision_follows_its_own_and_its_members_changes(store: KnowledgeStore) -> None:
    a = store.create_label(draft("a"), actor="t")
    store.create_label(draft("b"), actor="t")
    s = store.create_label_set(LabelSetDraft("panel", "", ("a", "b")), actor="t")
    assert s.revision == 1
    s = store.update_label_set("panel", LabelSetDraft("panel", "", ("b", "a")), actor="t", expected_revision=1)
    assert s.revision == 2
    store.update_label(a.id, draft("a", "New knowledge."), actor="t")  # a member changed: the set's content did
    assert store.get_label_set("panel").revision == 3
    with pytest.raises(VersionConflict):
        store.update_label_set("panel", LabelSetDraft("panel", "", ("a",)), actor="t", expected_revision=2)
    assert store.get_label_set("panel").label_names == ("b", "a")


def test_concurrent_replaces_of_one_revision_one_wins(store: KnowledgeStore,
                                                      engine_factory: Callable[[], Engine]) -> None:
    """Two writers (their own engines, as two processes) read revision 1 and both replace it:
    exactly one succeeds, the other gets VersionConflict (checked under the row lock)."""
    label = store.create_label(draft("race"), actor="t")
    stores = [KnowledgeStore(engine_factory()) for _ in range(2)]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def write(i: int) -> None:
        barrier.wait()
        try:
            stores[i].update_label(label.id, draft("race", f"writer {i}"), actor=f"w{i}", expected_revision=1)
            outcomes.append("ok")
        except VersionConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["conflict", "ok"]
    final = store.get_label(label.id)
    assert final.revision == 2 and final.description in {"writer 0", "writer 1"}


def test_a_built_in_label_is_soft_deleted_and_restored_into_its_places(store: KnowledgeStore) -> None:
    seed_builtin(store)
    default = store.get_label_set("default")
    victim = default.labels[3]
    assert victim.builtin
    holding = [s.name for s in store.list_label_sets() if victim.id in {m.id for m in s.labels}]
    removed = store.delete_label(victim.id, actor="ward-3", force=True, request_id="r-del")
    assert sorted(removed) == sorted(holding)
    assert victim.name not in store.get_label_set("default").label_names
    with pytest.raises(NotFound) as gone:
        store.get_label(victim.id)
    assert gone.value.details["deleted"] is True
    assert store.get_label(victim.id, include_deleted=True).deleted_at is not None
    assert victim.id in {label.id for label in store.list_labels(include_deleted=True)}
    assert victim.id not in {label.id for label in store.list_labels()}
    with pytest.raises(Conflict, match="restore it instead"):  # the name stays taken
        store.create_label(draft(victim.name), actor="ward-3")
    seed_builtin(store)  # a restart's seeding does not bring it back
    assert victim.name not in store.get_label_set("default").label_names

    restored = store.restore_label(victim.id, actor="ward-3", request_id="r-restore")
    assert restored.deleted_at is None and restored.revision == victim.revision + 2
    after = store.get_label_set("default")
    assert after.label_names == default.label_names and after.version == default.version  # same place, same content
    kinds = [(e.action, e.actor, e.request_id) for e in events(store, target_kind="label", target=str(victim.id))]
    assert kinds[:2] == [("label.restore", "ward-3", "r-restore"), ("label.delete", "ward-3", "r-del")]
    deletion = events(store, target=str(victim.id))[1]
    assert deletion.before is not None and deletion.before["deleted_at"] is None
    assert deletion.after is not None and deletion.after["deleted_at"] is not None


def test_a_label_a_user_made_is_removed_and_its_name_freed(store: KnowledgeStore) -> None:
    mine = store.create_label(draft("mine"), actor="ward-3")
    store.delete_label(mine.id, actor="ward-3")
    with pytest.raises(NotFound):
        store.get_label(mine.id, include_deleted=True)
    assert store.create_label(draft("mine"), actor="ward-3").id != mine.id
    deletion = [e for e in events(store, target_kind="label") if e.action == "label.delete"][0]
    assert deletion.before is not None and deletion.before["name"] == "mine" and deletion.after is None


def test_a_built_in_set_is_soft_deleted_and_restored(store: KnowledgeStore) -> None:
    seed_builtin(store)
    before = store.get_label_set("default")
    store.delete_label_set("default", actor="ward-3", expected_revision=before.revision)
    with pytest.raises(NotFound):
        store.get_label_set("default")
    assert "default" not in {s.name for s in store.list_label_sets()}
    assert "default" in {s.name for s in store.list_label_sets(include_deleted=True)}
    with pytest.raises(Conflict, match="restore it instead"):
        store.create_label_set(LabelSetDraft("default", "", before.label_names[:1]), actor="ward-3")
    seed_builtin(store)
    with pytest.raises(NotFound):
        store.get_label_set("default")
    restored = store.restore_label_set("default", actor="ward-3")
    assert restored.label_names == before.label_names and restored.version == before.version
    assert restored.revision == before.revision + 2
    assert store.restore_label_set("default", actor="ward-3").revision == restored.revision  # again: nothing
    actions = [e.action for e in events(store, target_kind="label_set", target="default")]
    assert actions[:2] == ["label_set.restore", "label_set.delete"]


def test_every_change_is_audited_in_its_transaction(store: KnowledgeStore) -> None:
    label = store.create_label(draft("audited"), actor="a1", request_id="q1")
    store.create_label_set(LabelSetDraft("audited-set", "", ("audited",)), actor="a2", request_id="q2")
    store.update_label(label.id, draft("audited", "v2"), actor="a3", request_id="q3")
    store.update_label_set("audited-set", LabelSetDraft("audited-set", "d", ("audited",)), actor="a4")
    store.delete_label_set("audited-set", actor="a5")
    with pytest.raises(Conflict):  # refused: no record of a change that did not happen
        store.create_label(draft("audited"), actor="a6")
    got = [(e.action, e.actor) for e in reversed(events(store))]
    assert got == [("label.create", "a1"), ("label_set.create", "a2"), ("label.update", "a3"),
                   ("label_set.update", "a4"), ("label_set.delete", "a5")]
    update = events(store, actor="a3")[0]
    assert update.before is not None and update.after is not None
    assert (update.before["description"], update.after["description"]) == (draft("audited").description, "v2")
    assert update.request_id == "q3"


OLD = MetaData()  # the two tables as the first release created them (no revision, no soft delete)
Table("labels", OLD, Column("id", Integer, primary_key=True, autoincrement=True),
      Column("name", String(200), nullable=False), Column("name_key", String(200), nullable=False, unique=True),
      Column("description", Text, nullable=False), Column("synonyms", JSON, nullable=False),
      Column("codes", JSON, nullable=False), Column("encode_text", String(16), nullable=False),
      Column("builtin", Boolean, nullable=False), Column("created_at", DateTime(timezone=True), nullable=False),
      Column("updated_at", DateTime(timezone=True), nullable=False))
Table("label_sets", OLD, Column("id", Integer, primary_key=True, autoincrement=True),
      Column("name", String(200), nullable=False), Column("name_key", String(200), nullable=False, unique=True),
      Column("description", Text, nullable=False), Column("version", String(32), nullable=False),
      Column("builtin", Boolean, nullable=False), Column("created_at", DateTime(timezone=True), nullable=False),
      Column("updated_at", DateTime(timezone=True), nullable=False))


def test_a_database_from_before_revisions_is_brought_along_with_its_data(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS label_set_members"))
            conn.execute(text("DROP TABLE IF EXISTS labels"))
            conn.execute(text("DROP TABLE IF EXISTS label_sets"))
            OLD.create_all(conn)
            conn.execute(text("INSERT INTO labels (name, name_key, description, synonyms, codes, encode_text, builtin, "
                              "created_at, updated_at) VALUES ('old', 'old', 'an old label', '[]', "
                              "'{\"SNOMED CT\": \"1\"}', 'description', false, '2025-01-01T00:00:00+00:00', "
                              "'2025-01-01T00:00:00+00:00')"))
        create_schema(engine)
        columns = {c["name"] for c in inspect(engine).get_columns("labels")}
        assert {"revision", "deleted_at", "deleted_from"} <= columns
        assert {"revision", "deleted_at"} <= {c["name"] for c in inspect(engine).get_columns("label_sets")}
        store = KnowledgeStore(engine)
        old = store.get_label_by_name("old")
        assert (old.revision, old.deleted_at, old.codes) == (1, None, {"SNOMED CT": "1"})
        assert store.update_label(old.id, draft("old", "now"), actor="t", expected_revision=1).revision == 2
        create_schema(engine)  # again: nothing more to add
    finally:
        engine.dispose()
