"""The labels use-case: what the service knows about each diagnosis, and who changed it.

Labels and label sets are read and changed here for the API (and anything else that changes
knowledge on a caller's behalf): every change names its actor (a key's name, recorded in the
audit trail with the request id), may name the revision it replaces (``expected_revision``,
the API's ``If-Match``; stale -> ``VersionConflict``, nothing changed), and a label's text
vector is computed as soon as the label is written, so that ``/diagnose`` never waits for it.
The storage rules (versions, soft delete of built-ins, locks, audit in the same transaction)
are the store's (``app.knowledge.store``). No HTTP here.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.access.scopes import Actor
from app.knowledge.embedding_cache import EmbeddingCache
from app.knowledge.store import KnowledgeStore
from app.knowledge.types import Label, LabelDraft, LabelSet, LabelSetDraft, TextEmbedder
from app.ops import metrics


@dataclass(frozen=True)
class LabelView:
    """A label with the names of the (not deleted) sets it is in."""

    label: Label
    label_sets: tuple[str, ...]
    embedded: bool = False  # its text vector is in the cache for the served text encoder


@dataclass(frozen=True)
class Change:
    """Who makes a change, in which request."""

    actor: Actor
    request_id: str | None = None


class LabelsService:
    def __init__(self, store: KnowledgeStore, cache: EmbeddingCache, embedder: TextEmbedder) -> None:
        self.store = store
        self.cache = cache
        self.embedder = embedder

    # --- labels ------------------------------------------------------------------------

    def list_labels(self, *, include_deleted: bool = False) -> list[LabelView]:
        sets: dict[int, list[str]] = {}
        for label_set in self.store.list_label_sets():
            for label in label_set.labels:
                sets.setdefault(label.id, []).append(label_set.name)
        return [LabelView(label, tuple(sets.get(label.id, ())))
                for label in self.store.list_labels(include_deleted=include_deleted)]

    def get_label(self, label_id: int, *, include_deleted: bool = False) -> LabelView:
        return self._view(self.store.get_label(label_id, include_deleted=include_deleted))

    def create_label(self, draft: LabelDraft, change: Change) -> LabelView:
        label = self.store.create_label(draft, actor=change.actor.name, request_id=change.request_id)
        return self._view(label, embed=True)

    def replace_label(self, label_id: int, draft: LabelDraft, change: Change, *,
                      expected_revision: int | None) -> LabelView:
        label = self.store.update_label(label_id, draft, actor=change.actor.name, request_id=change.request_id,
                                        expected_revision=expected_revision)
        return self._view(label, embed=True)

    def delete_label(self, label_id: int, change: Change, *, force: bool,
                     expected_revision: int | None) -> list[str]:
        """The names of the sets it was removed from (``force``)."""
        return self.store.delete_label(label_id, actor=change.actor.name, request_id=change.request_id,
                                       force=force, expected_revision=expected_revision)

    def restore_label(self, label_id: int, change: Change) -> LabelView:
        label = self.store.restore_label(label_id, actor=change.actor.name, request_id=change.request_id)
        return self._view(label, embed=True)

    # --- label sets --------------------------------------------------------------------

    def list_label_sets(self, *, include_deleted: bool = False) -> list[LabelSet]:
        return self.store.list_label_sets(include_deleted=include_deleted)

    def get_label_set(self, name: str, *, version: str | None = None, include_deleted: bool = False) -> LabelSet:
        if version:
            return self.store.get_label_set_version(name, version)
        return self.store.get_label_set(name, include_deleted=include_deleted)

    def create_label_set(self, draft: LabelSetDraft, change: Change) -> LabelSet:
        return self.store.create_label_set(draft, actor=change.actor.name, request_id=change.request_id)

    def replace_label_set(self, name: str, draft: LabelSetDraft, change: Change, *,
                          expected_revision: int | None) -> LabelSet:
        return self.store.update_label_set(name, draft, actor=change.actor.name, request_id=change.request_id,
                                           expected_revision=expected_revision)

    def delete_label_set(self, name: str, change: Change, *, expected_revision: int | None) -> None:
        self.store.delete_label_set(name, actor=change.actor.name, request_id=change.request_id,
                                    expected_revision=expected_revision)

    def restore_label_set(self, name: str, change: Change) -> LabelSet:
        return self.store.restore_label_set(name, actor=change.actor.name, request_id=change.request_id)

    # --- helpers -----------------------------------------------------------------------

    def _view(self, label: Label, *, embed: bool = False) -> LabelView:
        if embed:  # now, so diagnose never waits for it (the cache keeps it)
            _vectors, stats = self.cache.vectors_for([label.text_for_encoder], self.embedder)
            metrics.record_embedding_cache(hits=stats.hits, misses=stats.misses)
        return LabelView(label, tuple(self.store.label_sets_of(label.id)), embedded=embed)
