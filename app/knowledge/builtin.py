"""Built-in label sets shipped with the service (``builtin/*.json``) and their seeding.

Each JSON file is one label set: ``{"name", "description", "source", "labels": [...]}``
where every label is ``{"name", "description", "synonyms", "codes", "encode_text"}``.
A label that belongs to several built-in sets appears in each file with identical content.

``seed_builtin(store)`` runs at every start. It offers each built-in label and set once:
what is missing and was never offered before is inserted; nothing existing is changed.
A user's edit of a built-in label is therefore kept, and so is a user's deletion (the
ledger ``builtin_seeds`` remembers what was offered). A label whose name a user already
took is left as the user made it. Several processes may seed at once: a name another
process inserted first is skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from app.errors import Conflict
from app.knowledge.audit import SEEDING_ACTOR
from app.knowledge.store import KnowledgeStore
from app.knowledge.types import LabelDraft, LabelSetDraft, name_key

_LABEL_KEYS = {"name", "description", "synonyms", "codes", "encode_text"}
_SET_KEYS = {"name", "description", "source", "labels"}


@dataclass(frozen=True)
class BuiltinSet:
    name: str
    description: str
    source: str
    labels: tuple[LabelDraft, ...]


@dataclass
class SeedReport:
    labels_added: list[str] = field(default_factory=list)
    label_sets_added: list[str] = field(default_factory=list)


def builtin_files() -> list[str]:
    folder = resources.files("app.knowledge") / "builtin"
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".json"))


def load_builtin_sets() -> list[BuiltinSet]:
    """Every built-in set, checked: required keys, unique names, shared labels identical."""
    folder = resources.files("app.knowledge") / "builtin"
    sets = [
        _parse_set(name, json.loads((folder / name).read_text("utf-8")))
        for name in builtin_files()
    ]
    _check_shared_labels(sets)
    return sets


def seed_builtin(store: KnowledgeStore) -> SeedReport:
    """Insert built-in labels and sets never offered before; change nothing that exists."""
    sets = load_builtin_sets()
    offered = store.seeded_builtins()
    return SeedReport(
        labels_added=_seed_labels(store, sets, offered),
        label_sets_added=_seed_sets(store, sets, offered),
    )


def _seed_labels(
    store: KnowledgeStore, sets: list[BuiltinSet], offered: set[tuple[str, str]]
) -> list[str]:
    existing = {name_key(label.name) for label in store.list_labels(include_deleted=True)}
    drafts = {name_key(d.name): d for s in sets for d in s.labels}
    added = [
        draft.name
        for key, draft in drafts.items()
        if ("label", key) not in offered
        and key not in existing
        and _try_create_label(store, draft)
    ]
    store.mark_seeded("label", [d.name for d in drafts.values()])
    return added


def _seed_sets(
    store: KnowledgeStore, sets: list[BuiltinSet], offered: set[tuple[str, str]]
) -> list[str]:
    """New built-in sets get the built-in labels that exist (a deleted one stays out)."""
    present = {name_key(label.name) for label in store.list_labels()}
    added: list[str] = []
    for builtin_set in sets:
        if ("label_set", name_key(builtin_set.name)) in offered:
            continue
        members = tuple(d.name for d in builtin_set.labels if name_key(d.name) in present)
        if members and _try_create_set(store, builtin_set, members):
            added.append(builtin_set.name)
        store.mark_seeded("label_set", [builtin_set.name])
    return added


def _try_create_label(store: KnowledgeStore, draft: LabelDraft) -> bool:
    try:
        store.create_label(draft, builtin=True, actor=SEEDING_ACTOR)
    except Conflict:
        return False  # another process (or the user) has it already
    return True


def _try_create_set(
    store: KnowledgeStore, builtin_set: BuiltinSet, members: tuple[str, ...]
) -> bool:
    draft = LabelSetDraft(builtin_set.name, builtin_set.description, members)
    try:
        store.create_label_set(draft, builtin=True, actor=SEEDING_ACTOR)
    except Conflict:
        return False
    return True


def _parse_set(file_name: str, raw: dict[str, Any]) -> BuiltinSet:
    if set(raw) != _SET_KEYS:
        raise ValueError(
            f"builtin/{file_name}: keys must be {sorted(_SET_KEYS)}, got {sorted(raw)}"
        )
    labels = tuple(_parse_label(file_name, item) for item in raw["labels"])
    keys = [name_key(d.name) for d in labels]
    if len(set(keys)) != len(keys):
        raise ValueError(f"builtin/{file_name}: a label name appears twice")
    return BuiltinSet(raw["name"], raw["description"], raw["source"], labels)


def _parse_label(file_name: str, item: dict[str, Any]) -> LabelDraft:
    if set(item) != _LABEL_KEYS:
        raise ValueError(
            f"builtin/{file_name}: label {item.get('name')!r} keys must be {sorted(_LABEL_KEYS)}"
        )
    draft = LabelDraft(
        name=item["name"],
        description=item["description"],
        synonyms=tuple(item["synonyms"]),
        codes=dict(item["codes"]),
        encode_text=item["encode_text"],
    )
    return draft.validated()


def _check_shared_labels(sets: list[BuiltinSet]) -> None:
    seen: dict[str, tuple[str, LabelDraft]] = {}
    for builtin_set in sets:
        for draft in builtin_set.labels:
            first = seen.setdefault(name_key(draft.name), (builtin_set.name, draft))
            if first[1] != draft:
                raise ValueError(
                    f"built-in label {draft.name!r} differs between sets {first[0]!r} "
                    f"and {builtin_set.name!r}; a shared label must be identical"
                )
