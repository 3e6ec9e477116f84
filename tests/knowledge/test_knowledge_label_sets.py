"""Label sets: CRUD, content-hash versions, snapshots."""

from __future__ import annotations

import pytest

from app.errors import Conflict, InvalidInput, NotFound
from app.knowledge.store import KnowledgeStore, label_set_version
from app.knowledge.types import LabelSetDraft

from .helpers import draft


@pytest.fixture
def abc(store: KnowledgeStore) -> KnowledgeStore:
    for name in ("a", "b", "c"):
        store.create_label(draft(name), actor="test")
    return store


def test_create_and_read_keeps_order(abc: KnowledgeStore) -> None:
    created = abc.create_label_set(LabelSetDraft("Panel", "my panel", ("c", "A", "b")), actor="test")
    assert created.label_names == ("c", "a", "b")
    assert created.description == "my panel"
    assert len(created.version) == 16 and int(created.version, 16) >= 0
    assert created.version == label_set_version(created.labels)
    assert abc.get_label_set("panel") == created
    assert abc.list_label_sets() == [created]


def test_set_name_conflicts_ignoring_case(abc: KnowledgeStore) -> None:
    abc.create_label_set(LabelSetDraft("panel", "", ("a",)), actor="test")
    with pytest.raises(Conflict, match="'panel' already exists"):
        abc.create_label_set(LabelSetDraft("PANEL", "", ("b",)), actor="test")


def test_unknown_members_are_named(abc: KnowledgeStore) -> None:
    with pytest.raises(NotFound, match=r"\['x', 'y'\]") as info:
        abc.create_label_set(LabelSetDraft("panel", "", ("a", "x", "y")), actor="test")
    assert info.value.details["labels"] == ["x", "y"]
    with pytest.raises(NotFound):
        abc.get_label_set("panel")


def test_empty_or_duplicate_members_are_invalid(abc: KnowledgeStore) -> None:
    with pytest.raises(InvalidInput, match="at least one label"):
        abc.create_label_set(LabelSetDraft("panel", "", ()), actor="test")
    with pytest.raises(InvalidInput, match="more than once"):
        abc.create_label_set(LabelSetDraft("panel", "", ("a", "A")), actor="test")


def test_missing_sets_are_not_found(abc: KnowledgeStore) -> None:
    for call in (
        lambda: abc.get_label_set("ghost"),
        lambda: abc.update_label_set("ghost", LabelSetDraft("ghost", "", ("a",)), actor="test"),
        lambda: abc.delete_label_set("ghost", actor="test"),
        lambda: abc.get_label_set_version("ghost", "0" * 16),
        lambda: abc.list_label_set_versions("ghost"),
    ):
        with pytest.raises(NotFound, match="ghost"):
            call()


def test_version_stable_when_content_is_unchanged(abc: KnowledgeStore) -> None:
    v1 = abc.create_label_set(LabelSetDraft("panel", "one", ("a", "b")), actor="test").version
    assert abc.get_label_set("panel").version == v1
    assert abc.update_label_set("panel", LabelSetDraft("panel", "two", ("a", "b")), actor="test").version == v1
    label = abc.get_label_by_name("a")
    abc.update_label(label.id, draft("a", label.description), actor="test")
    assert abc.get_label_set("panel").version == v1
    assert [v for v, _ in abc.list_label_set_versions("panel")] == [v1]


def test_version_changes_with_members_and_order(abc: KnowledgeStore) -> None:
    v1 = abc.create_label_set(LabelSetDraft("panel", "", ("a", "b")), actor="test").version
    v2 = abc.update_label_set("panel", LabelSetDraft("panel", "", ("b", "a")), actor="test").version
    v3 = abc.update_label_set("panel", LabelSetDraft("panel", "", ("b", "a", "c")), actor="test").version
    assert len({v1, v2, v3}) == 3
    assert [v for v, _ in abc.list_label_set_versions("panel")] == [v1, v2, v3]


@pytest.mark.parametrize(
    "change",
    [
        {"description": "edited knowledge text"},
        {"synonyms": ("alias",)},
        {"codes": {"SNOMED CT": "164889003"}},
        {"encode_text": "name"},
        {"name": "a renamed"},
    ],
)
def test_editing_a_member_label_changes_the_version(abc: KnowledgeStore, change: dict) -> None:
    old = abc.create_label_set(LabelSetDraft("panel", "", ("a", "b")), actor="test")
    other = abc.create_label_set(LabelSetDraft("unrelated", "", ("c",)), actor="test")
    a = abc.get_label_by_name("a")
    fields = {"description": a.description} | change
    abc.update_label(a.id, draft(fields.pop("name", "a"), **fields), actor="test")
    new = abc.get_label_set("panel")
    assert new.version != old.version
    assert new.version == label_set_version(new.labels)
    assert abc.get_label_set("unrelated").version == other.version
    # the old content is still available, exactly
    assert abc.get_label_set_version("panel", old.version) == old
    assert abc.get_label_set_version("panel", new.version) == new


def test_same_content_gives_same_version_in_any_set(abc: KnowledgeStore) -> None:
    one = abc.create_label_set(LabelSetDraft("one", "x", ("a", "b")), actor="test")
    two = abc.create_label_set(LabelSetDraft("two", "y", ("a", "b")), actor="test")
    assert one.version == two.version


def test_rename_and_replace_members(abc: KnowledgeStore) -> None:
    abc.create_label_set(LabelSetDraft("panel", "", ("a",)), actor="test")
    renamed = abc.update_label_set("panel", LabelSetDraft("Panel 2", "new", ("b", "c")), actor="test")
    assert renamed.name == "Panel 2" and renamed.label_names == ("b", "c")
    with pytest.raises(NotFound):
        abc.get_label_set("panel")
    assert abc.get_label_set_version("panel 2", renamed.version) == renamed


def test_rename_onto_another_set_conflicts(abc: KnowledgeStore) -> None:
    abc.create_label_set(LabelSetDraft("one", "", ("a",)), actor="test")
    abc.create_label_set(LabelSetDraft("two", "", ("b",)), actor="test")
    with pytest.raises(Conflict, match="'two'"):
        abc.update_label_set("one", LabelSetDraft("TWO", "", ("a",)), actor="test")
    assert abc.get_label_set("one").label_names == ("a",)


def test_delete_set_keeps_labels_and_snapshots(abc: KnowledgeStore) -> None:
    old = abc.create_label_set(LabelSetDraft("panel", "", ("a", "b")), actor="test")
    abc.delete_label_set("panel", actor="test")
    with pytest.raises(NotFound):
        abc.get_label_set("panel")
    assert len(abc.list_labels()) == 3
    assert abc.get_label_set_version("panel", old.version) == old
    # a label no longer in any set can now be deleted without force
    assert abc.delete_label(abc.get_label_by_name("a").id, actor="test") == []


def test_unknown_version_is_not_found(abc: KnowledgeStore) -> None:
    abc.create_label_set(LabelSetDraft("panel", "", ("a",)), actor="test")
    with pytest.raises(NotFound, match="no version 'deadbeefdeadbeef'"):
        abc.get_label_set_version("panel", "deadbeefdeadbeef")
