"""LabelSetReader: members are cached per (name, version), the version is read every time."""

from __future__ import annotations

from app.knowledge.store import KnowledgeStore, LabelSetReader
from app.knowledge.types import LabelSetDraft
from tests.knowledge.helpers import draft


def _setup(store: KnowledgeStore) -> None:
    for name in ("alpha", "beta", "gamma"):
        store.create_label(draft(name), actor="test")
    store.create_label_set(LabelSetDraft("panel", "", ("alpha", "beta")), actor="test")


def test_reader_sees_every_change_through_another_store(engine_factory) -> None:
    writer, reader_store = KnowledgeStore(engine_factory()), KnowledgeStore(engine_factory())
    _setup(writer)
    reader = LabelSetReader(reader_store)
    first = reader.get("panel")
    assert first.label_names == ("alpha", "beta")
    assert reader.get("panel") is first  # same version: served from the cache

    writer.update_label_set("panel", LabelSetDraft("panel", "", ("alpha", "beta", "gamma")), actor="test")
    second = reader.get("panel")
    assert second.label_names == ("alpha", "beta", "gamma") and second.version != first.version

    beta = writer.get_label_by_name("beta")
    writer.update_label(beta.id, draft("beta", "a new description"), actor="test")
    third = reader.get("panel")
    assert third.version != second.version
    assert [l.description for l in third.labels if l.name == "beta"] == ["a new description"]


def test_reader_names_are_case_insensitive_and_bounded(store: KnowledgeStore) -> None:
    _setup(store)
    reader = LabelSetReader(store, max_entries=1)
    assert reader.get("PANEL").label_names == reader.get("panel").label_names
    store.create_label_set(LabelSetDraft("other", "", ("gamma",)), actor="test")
    assert reader.get("other").label_names == ("gamma",)
    assert reader.get("panel").label_names == ("alpha", "beta")
