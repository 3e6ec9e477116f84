"""Restarts and several service processes on one database (each process = its own engine)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, insert

from app.errors import Conflict
from app.knowledge import db
from app.knowledge.store import KnowledgeStore
from app.knowledge.types import LabelSetDraft, name_key

from .helpers import draft

EngineFactory = Callable[[], Engine]


def test_sqlite_engine_creates_folder_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "k.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.create_schema(engine)
    db.create_schema(engine)  # idempotent
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()
    assert path.is_file()


def test_everything_survives_a_restart(engine_factory: EngineFactory) -> None:
    first = engine_factory()
    store = KnowledgeStore(first)
    store.create_label(draft("a"), actor="test")
    created = store.create_label_set(LabelSetDraft("panel", "d", ("a",)), actor="test")
    first.dispose()

    again = KnowledgeStore(engine_factory())
    assert again.get_label_set("panel") == created
    assert again.get_label_set_version("panel", created.version) == created


def test_two_processes_see_each_others_changes_at_commit(engine_factory: EngineFactory) -> None:
    one, two = KnowledgeStore(engine_factory()), KnowledgeStore(engine_factory())
    label = one.create_label(draft("a"), actor="test")
    assert two.get_label(label.id) == label
    two.create_label_set(LabelSetDraft("panel", "", ("a",)), actor="test")
    before = one.get_label_set("panel")

    two.update_label(label.id, draft("a", "edited in process two"), actor="test")
    after = one.get_label_set("panel")
    assert after.labels[0].description == "edited in process two"
    assert after.version != before.version
    assert one.get_label_set_version("panel", before.version) == before

    one.delete_label(label.id, force=True, actor="test")
    assert two.get_label_set("panel").labels == ()


def test_uncommitted_work_of_another_process_is_invisible(engine_factory: EngineFactory) -> None:
    writer, reader = engine_factory(), KnowledgeStore(engine_factory())
    with writer.connect() as conn:
        transaction = conn.begin()
        conn.execute(insert(db.labels).values(**_row("pending")))
        assert [label.name for label in reader.list_labels()] == []
        transaction.commit()
    assert [label.name for label in reader.list_labels()] == ["pending"]


def test_racing_creation_of_one_name_one_wins_other_conflicts(
    engine_factory: EngineFactory,
) -> None:
    """Process one has inserted the name but not committed when process two tries."""
    one, two = engine_factory(), KnowledgeStore(engine_factory())
    outcome: list[object] = []

    def create_in_process_two() -> None:
        try:
            outcome.append(two.create_label(draft("contested"), actor="test"))
        except Conflict as exc:
            outcome.append(exc)

    with db.write_tx(one) as conn:
        conn.execute(insert(db.labels).values(**_row("contested")))
        racer = threading.Thread(target=create_in_process_two)
        racer.start()
        time.sleep(0.4)  # process two is now waiting on the lock or the unique index
    racer.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], Conflict), outcome
    assert "contested" in outcome[0].message
    assert [label.name for label in two.list_labels()] == ["contested"]


def test_concurrent_set_edits_all_get_snapshots(engine_factory: EngineFactory) -> None:
    stores = [KnowledgeStore(engine_factory()) for _ in range(2)]
    for name in ("a", "b"):
        stores[0].create_label(draft(name), actor="test")
    stores[0].create_label_set(LabelSetDraft("panel", "", ("a", "b")), actor="test")
    errors: list[BaseException] = []

    def edit(store: KnowledgeStore, name: str) -> None:
        try:
            label = store.get_label_by_name(name)
            for i in range(4):
                store.update_label(label.id, draft(name, f"{name} revision {i}"), actor="test")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=edit, args=(s, n)) for s, n in zip(stores, "ab")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    final = stores[1].get_label_set("panel")
    assert [label.description for label in final.labels] == ["a revision 3", "b revision 3"]
    versions = [v for v, _ in stores[1].list_label_set_versions("panel")]
    assert final.version in versions
    for version in versions:
        assert stores[1].get_label_set_version("panel", version).version == version


def test_schema_creation_at_every_start_keeps_data(engine_factory: EngineFactory) -> None:
    one = engine_factory()
    KnowledgeStore(one).create_label(draft("a"), actor="test")
    db.create_schema(one)
    db.create_schema(engine_factory())
    assert [label.name for label in KnowledgeStore(engine_factory()).list_labels()] == ["a"]


def _row(name: str) -> dict[str, object]:
    stamp = db.now()
    return {
        "name": name,
        "name_key": name_key(name),
        "description": "inserted directly",
        "synonyms": [],
        "codes": {},
        "encode_text": "description",
        "builtin": False,
        "created_at": stamp,
        "updated_at": stamp,
    }
