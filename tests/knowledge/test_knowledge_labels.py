"""Labels: create, read, update, delete, conflicts, not-found, validation."""

from __future__ import annotations

import pytest

from app.errors import Conflict, InvalidInput, NotFound
from app.knowledge.store import KnowledgeStore
from app.knowledge.types import LabelDraft, LabelSetDraft

from .helpers import draft


def test_create_then_read_back_by_id_and_name(store: KnowledgeStore) -> None:
    created = store.create_label(
        draft(
            "Brugada pattern",
            "Coved ST elevation of 2 mm or more followed by a negative T wave in V1-V2.",
            synonyms=("Brugada type 1",),
            codes={"SNOMED CT": "418818005"},
        ), actor="test"
    )
    assert created.id > 0
    assert created.encode_text == "description"
    assert created.text_for_encoder == created.description
    assert created.builtin is False
    assert created.updated_at.tzinfo is not None
    assert store.get_label(created.id) == created
    assert store.get_label_by_name("  brugada   PATTERN ") == created
    assert store.list_labels() == [created]
    assert created.code_list("SNOMED CT") == ("418818005",)


def test_text_for_encoder_follows_encode_text(store: KnowledgeStore) -> None:
    by_name = store.create_label(draft("sinus rhythm", encode_text="name"), actor="test")
    by_text = store.create_label(draft("odd finding", "A finding the encoder never saw by name."), actor="test")
    assert by_name.text_for_encoder == "sinus rhythm"
    assert by_text.text_for_encoder == "A finding the encoder never saw by name."


def test_names_are_unique_ignoring_case_and_spacing(store: KnowledgeStore) -> None:
    first = store.create_label(draft("atrial fibrillation"), actor="test")
    with pytest.raises(Conflict, match="atrial fibrillation") as info:
        store.create_label(draft("Atrial  Fibrillation"), actor="test")
    assert info.value.details["label_id"] == first.id
    assert len(store.list_labels()) == 1


def test_update_replaces_content_and_keeps_id(store: KnowledgeStore) -> None:
    label = store.create_label(draft("lvh", "old text"), actor="test")
    updated = store.update_label(
        label.id, draft("LVH", "new text", synonyms=("left ventricular hypertrophy",)), actor="test"
    )
    assert updated.id == label.id
    assert (updated.name, updated.description) == ("LVH", "new text")
    assert updated.synonyms == ("left ventricular hypertrophy",)
    assert updated.updated_at >= label.updated_at
    assert store.get_label(label.id) == updated


def test_update_to_another_labels_name_conflicts(store: KnowledgeStore) -> None:
    store.create_label(draft("rbbb"), actor="test")
    other = store.create_label(draft("lbbb"), actor="test")
    with pytest.raises(Conflict, match="rbbb"):
        store.update_label(other.id, draft("RBBB"), actor="test")
    assert store.get_label(other.id).name == "lbbb"


def test_missing_labels_are_not_found(store: KnowledgeStore) -> None:
    with pytest.raises(NotFound, match="id 4242"):
        store.get_label(4242)
    with pytest.raises(NotFound, match="'no such label'"):
        store.get_label_by_name("no such label")
    with pytest.raises(NotFound, match="id 4242"):
        store.update_label(4242, draft("x"), actor="test")
    with pytest.raises(NotFound, match="id 4242"):
        store.delete_label(4242, actor="test")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (LabelDraft(name="   ", description="text"), "label name is empty"),
        (LabelDraft(name="x", description=" "), "description, which is empty"),
        (LabelDraft(name="x", description="t", encode_text="both"), "encode_text"),  # type: ignore
        (LabelDraft(name="x\x07y", description="t"), "control characters"),
        (LabelDraft(name="x" * 201, description="t"), "longer than 200"),
    ],
)
def test_invalid_drafts_are_refused(store: KnowledgeStore, bad: LabelDraft, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        store.create_label(bad, actor="test")
    assert store.list_labels() == []


def test_name_encoded_label_may_have_empty_description(store: KnowledgeStore) -> None:
    label = store.create_label(LabelDraft(name="sinus rhythm", description="", encode_text="name"), actor="test")
    assert label.text_for_encoder == "sinus rhythm"


def test_create_label_into_sets_appends_it(store: KnowledgeStore) -> None:
    store.create_label(draft("a"), actor="test")
    store.create_label_set(LabelSetDraft("panel", "", ("a",)), actor="test")
    before = store.get_label_set("panel").version
    store.create_label(draft("b", label_sets=("panel",)), actor="test")
    after = store.get_label_set("panel")
    assert after.label_names == ("a", "b")
    assert after.version != before


def test_create_label_into_missing_set_creates_nothing(store: KnowledgeStore) -> None:
    with pytest.raises(NotFound, match="no label set named 'ghost'"):
        store.create_label(draft("b", label_sets=("ghost",)), actor="test")
    with pytest.raises(NotFound):
        store.get_label_by_name("b")


def test_delete_unused_label(store: KnowledgeStore) -> None:
    label = store.create_label(draft("a"), actor="test")
    assert store.delete_label(label.id, actor="test") == []
    with pytest.raises(NotFound):
        store.get_label(label.id)


def test_delete_label_in_sets_is_refused_naming_the_sets(store: KnowledgeStore) -> None:
    a = store.create_label(draft("a"), actor="test")
    store.create_label(draft("b"), actor="test")
    store.create_label_set(LabelSetDraft("panel one", "", ("a", "b")), actor="test")
    store.create_label_set(LabelSetDraft("panel two", "", ("b", "a")), actor="test")
    with pytest.raises(Conflict, match="panel one.*panel two") as info:
        store.delete_label(a.id, actor="test")
    assert info.value.details["label_sets"] == ["panel one", "panel two"]
    assert store.get_label(a.id) == a
    assert store.label_sets_of(a.id) == ["panel one", "panel two"]


def test_forced_delete_removes_label_from_sets_and_bumps_versions(store: KnowledgeStore) -> None:
    a = store.create_label(draft("a"), actor="test")
    store.create_label(draft("b"), actor="test")
    store.create_label(draft("c"), actor="test")
    old = store.create_label_set(LabelSetDraft("panel", "kept", ("a", "b", "c")), actor="test")
    assert store.delete_label(a.id, force=True, actor="test") == ["panel"]
    now = store.get_label_set("panel")
    assert now.label_names == ("b", "c")
    assert now.description == "kept"
    assert now.version != old.version
    assert [label.name for label in store.list_labels()] == ["b", "c"]
    # the old version still reproduces, deleted label included
    assert store.get_label_set_version("panel", old.version) == old
