"""Labels and label sets in the database: create, read, update, delete, versions.

Consistency bound (several service processes on one PostgreSQL, or on one SQLite file):
nothing here is cached in the process. Every call opens its own transaction and reads the
database, so a change is visible to every other process as soon as the writing call
returns (its transaction has committed), and never before. Each write is one transaction:
it happens completely or not at all. Writes that change a set's content lock the set's row
(``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so concurrent
edits of one set, or of labels in it, apply one after the other and every version gets its
snapshot. Creating the same name from two processes at once: one wins, the other gets
``Conflict`` (the unique index decides).

A label set's ``version`` is the first 16 hex digits of the SHA-256 of the canonical JSON
of its ordered members (name, text for the encoder, description, codes, synonyms,
encode_text). It changes whenever a member is added, removed, reordered or edited, and
is the same for the same content on any machine. Every version a set takes is stored as a
snapshot (``get_label_set_version``), kept even after the set is deleted.

Lifecycle. Every label and set has a ``revision`` that grows with each change (for a set:
also when its content changes through a member); a change may name the revision it expects
(``expected_revision``, the API's ``If-Match``) and is refused with ``VersionConflict`` if the
row moved on, checked under the row's lock so two writers that read the same revision cannot
both win. Deleting a built-in label or set is a soft delete (``deleted_at``; a label also
remembers the sets and positions it was removed from) undone by ``restore_label`` /
``restore_label_set``; its name stays taken, and seeding never brings it back. Deleting a label
or set a user made removes it (its content stays in the audit record). Every change writes an
audit record (``app.knowledge.audit``) in its own transaction, under the ``actor`` and
``request_id`` the caller passes.

Every public call runs under the store's :class:`~app.knowledge.guard.DatabaseGuard`: on a
network database it is bounded by the guard's deadline, and a database that cannot be reached
surfaces as ``DatabaseUnavailable`` (503 with ``Retry-After``). :class:`LabelSetReader` keeps
serving the sets it has read while the database is down, marked ``served_from_memory``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import CursorResult, Engine, Row, Select, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from app.errors import Conflict, DatabaseUnavailable, NotFound, VersionConflict
from app.knowledge import audit, db
from app.knowledge.guard import DatabaseGuard
from app.knowledge.types import Label, LabelDraft, LabelSet, LabelSetDraft, name_key

VERSION_HEX_CHARS = 16

P = ParamSpec("P")
T = TypeVar("T")


def _guarded(method: Callable[Concatenate[KnowledgeStore, P], T]) -> Callable[Concatenate[KnowledgeStore, P], T]:
    """Run a public store call under the store's guard (bounded; health tracked)."""

    @functools.wraps(method)
    def call(self: KnowledgeStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.guard.call(lambda: method(self, *args, **kwargs))

    return call


def label_set_version(labels: Sequence[Label]) -> str:
    """Content hash of an ordered list of labels (see the module docstring)."""
    members = [
        {
            "name": label.name,
            "text_for_encoder": label.text_for_encoder,
            "description": label.description,
            "codes": label.codes,
            "synonyms": list(label.synonyms),
            "encode_text": label.encode_text,
        }
        for label in labels
    ]
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:VERSION_HEX_CHARS]


class KnowledgeStore:
    """Labels and label sets over one SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine, *, guard: DatabaseGuard | None = None) -> None:
        """``guard``: bounds every call (default: unbounded, health still tracked)."""
        self._engine = engine
        self.guard = guard or DatabaseGuard()

    # --- labels ------------------------------------------------------------------------

    @_guarded
    def list_labels(self, *, include_deleted: bool = False) -> list[Label]:
        query = select(db.labels).order_by(db.labels.c.name_key)
        if not include_deleted:
            query = query.where(db.labels.c.deleted_at.is_(None))
        with db.read_tx(self._engine) as conn:
            rows = conn.execute(query).all()
        return [_to_label(row) for row in rows]

    @_guarded
    def get_label(self, label_id: int, *, include_deleted: bool = False) -> Label:
        with db.read_tx(self._engine) as conn:
            return _to_label(_label_row(conn, label_id, deleted_ok=include_deleted))

    @_guarded
    def get_label_by_name(self, name: str) -> Label:
        with db.read_tx(self._engine) as conn:
            row = _label_row_by_name(conn, name)
        if row is None:
            raise NotFound(f"no label named {name!r}", details={"label": name})
        if row.deleted_at is not None:
            raise _deleted_label(row)
        return _to_label(row)

    @_guarded
    def label_sets_of(self, label_id: int) -> list[str]:
        """Names of the (not deleted) sets that contain the label."""
        with db.read_tx(self._engine) as conn:
            _label_row(conn, label_id, deleted_ok=True)
            return [row.name for row in _set_rows_containing(conn, label_id) if row.deleted_at is None]

    @_guarded
    def create_label(self, draft: LabelDraft, *, actor: str, request_id: str | None = None,
                     builtin: bool = False) -> Label:
        draft = draft.validated()
        with self._writing(f"a label named {draft.name!r} already exists") as conn:
            existing = _label_row_by_name(conn, draft.name)
            if existing is not None:
                raise _label_exists(existing)
            stamp = db.now()
            values = _label_values(draft) | {"builtin": builtin, "created_at": stamp, "revision": 1}
            label_id = _inserted_id(conn.execute(insert(db.labels).values(**values)))
            _add_to_sets(conn, label_id, draft.label_sets)
            label = _to_label(_label_row(conn, label_id))
            audit.record(conn, actor=actor, action="label.create", target_kind="label", target=label_id,
                         before=None, after=_label_content(conn, label), request_id=request_id)
            return label

    @_guarded
    def update_label(self, label_id: int, draft: LabelDraft, *, actor: str, request_id: str | None = None,
                     expected_revision: int | None = None) -> Label:
        """Replace a label's content (every field: a full replace); every set containing it gets
        a new version. ``expected_revision``: refuse with VersionConflict unless it is current."""
        draft = draft.validated()
        with self._writing(f"a label named {draft.name!r} already exists") as conn:
            row = _label_row(conn, label_id, lock=True)
            _check_revision(row.revision, expected_revision, f"label {label_id}", {"label_id": label_id})
            before = _label_content(conn, _to_label(row))
            sets = _lock_sets(conn, [r.id for r in _set_rows_containing(conn, label_id)])
            clash = _label_row_by_name(conn, draft.name)
            if clash is not None and clash.id != label_id:
                raise _label_exists(clash)
            conn.execute(update(db.labels).where(db.labels.c.id == label_id)
                         .values(**_label_values(draft), revision=row.revision + 1))
            for set_id in sets:
                _refresh_set(conn, set_id)
            _add_to_sets(conn, label_id, draft.label_sets)
            label = _to_label(_label_row(conn, label_id))
            audit.record(conn, actor=actor, action="label.update", target_kind="label", target=label_id,
                         before=before, after=_label_content(conn, label), request_id=request_id)
            return label

    @_guarded
    def delete_label(self, label_id: int, *, actor: str, request_id: str | None = None, force: bool = False,
                     expected_revision: int | None = None) -> list[str]:
        """Delete a label; returns the names of the sets it was removed from.

        A label in any set is refused with ``Conflict`` naming the sets, unless ``force``,
        which removes it from them (each gets a new version) and deletes nothing else. A
        built-in label is soft-deleted (``restore_label`` undoes it, back into the same sets at
        the same places); a label a user made is removed.
        """
        retry = f"label {label_id} was added to a label set while being deleted; retry"
        with self._writing(retry) as conn:
            row = _label_row(conn, label_id, lock=True)
            _check_revision(row.revision, expected_revision, f"label {label_id}", {"label_id": label_id})
            label = _to_label(row)
            before = _label_content(conn, label)
            set_rows = _set_rows_containing(conn, label_id)
            names = [r.name for r in set_rows if r.deleted_at is None]
            if names and not force:
                raise Conflict(
                    f"label {label.name!r} belongs to label sets {names}; remove it from them "
                    "first or delete with force",
                    details={"label": label.name, "label_sets": names},
                )
            positions: dict[str, int] = {}
            for set_row in sorted(set_rows, key=lambda r: r.id):
                _lock_sets(conn, [set_row.id])
                members = _member_ids(conn, set_row.id)
                positions[str(set_row.id)] = members.index(label_id)
                _write_members(conn, set_row.id, [m for m in members if m != label_id])
            if label.builtin:
                conn.execute(update(db.labels).where(db.labels.c.id == label_id).values(
                    deleted_at=db.now(), deleted_from=positions, revision=row.revision + 1))
            else:
                conn.execute(delete(db.labels).where(db.labels.c.id == label_id))
            for set_row in set_rows:
                _refresh_set(conn, set_row.id)
            after = _label_content(conn, _to_label(_label_row(conn, label_id, deleted_ok=True))) if label.builtin \
                else None
            audit.record(conn, actor=actor, action="label.delete", target_kind="label", target=label_id,
                         before=before, after=after, request_id=request_id)
            return names

    @_guarded
    def restore_label(self, label_id: int, *, actor: str, request_id: str | None = None) -> Label:
        """Undo the soft delete of a built-in label: back into the sets it was removed from that
        still exist, at the place it had (or at the end, if the set has shrunk since). A label
        not deleted is returned as it is (nothing recorded)."""
        with db.write_tx(self._engine) as conn:
            row = _label_row(conn, label_id, lock=True, deleted_ok=True)
            if row.deleted_at is None:
                return _to_label(row)
            before = _label_content(conn, _to_label(row))
            conn.execute(update(db.labels).where(db.labels.c.id == label_id).values(
                deleted_at=None, deleted_from=None, revision=row.revision + 1, updated_at=db.now()))
            places = {int(set_id): int(position) for set_id, position in (row.deleted_from or {}).items()}
            for set_id in _lock_sets(conn, list(places)):  # the sets that still exist
                members = _member_ids(conn, set_id)
                if label_id not in members:
                    members.insert(min(places[set_id], len(members)), label_id)
                    _write_members(conn, set_id, members)
                    _refresh_set(conn, set_id)
            label = _to_label(_label_row(conn, label_id))
            audit.record(conn, actor=actor, action="label.restore", target_kind="label", target=label_id,
                         before=before, after=_label_content(conn, label), request_id=request_id)
            return label

    # --- label sets --------------------------------------------------------------------

    @_guarded
    def list_label_sets(self, *, include_deleted: bool = False) -> list[LabelSet]:
        query = select(db.label_sets).order_by(db.label_sets.c.name_key)
        if not include_deleted:
            query = query.where(db.label_sets.c.deleted_at.is_(None))
        with db.read_tx(self._engine) as conn:
            set_rows = conn.execute(query).all()
            members = _members_by_set(conn)
        return [_to_label_set(row, members.get(row.id, [])) for row in set_rows]

    @_guarded
    def get_label_set(self, name: str, *, include_deleted: bool = False) -> LabelSet:
        with db.read_tx(self._engine) as conn:
            row = _set_row(conn, name, deleted_ok=include_deleted)
            return _to_label_set(row, _members(conn, row.id))

    @_guarded
    def current_version(self, name: str) -> str:
        """The set's current version: one indexed row, for read-through caches keyed by it."""
        with db.read_tx(self._engine) as conn:
            return str(_set_row(conn, name).version)

    @_guarded
    def create_label_set(self, draft: LabelSetDraft, *, actor: str, request_id: str | None = None,
                         builtin: bool = False) -> LabelSet:
        draft = draft.validated()
        with self._writing(f"a label set named {draft.name!r} already exists") as conn:
            existing = _set_row_by_name(conn, draft.name)
            if existing is not None:
                raise _set_exists(existing)
            label_ids = _label_ids(conn, draft.label_names)
            stamp = db.now()
            set_id = _inserted_id(conn.execute(
                insert(db.label_sets).values(
                    name=draft.name,
                    name_key=name_key(draft.name),
                    description=draft.description,
                    version="",
                    builtin=builtin,
                    created_at=stamp,
                    updated_at=stamp,
                    revision=1,
                )
            ))
            _write_members(conn, set_id, label_ids)
            label_set = _refresh_set(conn, set_id, bump_revision=False)
            audit.record(conn, actor=actor, action="label_set.create", target_kind="label_set",
                         target=label_set.name, before=None, after=_set_content(label_set), request_id=request_id)
            return label_set

    @_guarded
    def update_label_set(self, name: str, draft: LabelSetDraft, *, actor: str, request_id: str | None = None,
                         expected_revision: int | None = None) -> LabelSet:
        """Replace a set's name, description and ordered members (a full replace).
        ``expected_revision``: refuse with VersionConflict unless it is current."""
        draft = draft.validated()
        with self._writing(f"a label set named {draft.name!r} already exists") as conn:
            row = _set_row(conn, name)
            _lock_sets(conn, [row.id])
            row = _set_row(conn, name)  # as it is now that it is locked
            _check_revision(row.revision, expected_revision, f"label set {row.name!r}", {"label_set": row.name})
            before = _set_content(_to_label_set(row, _members(conn, row.id)))
            clash = _set_row_by_name(conn, draft.name)
            if clash is not None and clash.id != row.id:
                raise _set_exists(clash)
            label_ids = _label_ids(conn, draft.label_names)
            conn.execute(
                update(db.label_sets)
                .where(db.label_sets.c.id == row.id)
                .values(
                    name=draft.name,
                    name_key=name_key(draft.name),
                    description=draft.description,
                    updated_at=db.now(),
                    revision=row.revision + 1,
                )
            )
            _write_members(conn, row.id, label_ids)
            label_set = _refresh_set(conn, row.id, bump_revision=False)
            audit.record(conn, actor=actor, action="label_set.update", target_kind="label_set",
                         target=label_set.name, before=before, after=_set_content(label_set), request_id=request_id)
            return label_set

    @_guarded
    def delete_label_set(self, name: str, *, actor: str, request_id: str | None = None,
                         expected_revision: int | None = None) -> None:
        """Delete a set (its labels stay; its version snapshots stay). A built-in set is
        soft-deleted, members kept (``restore_label_set`` undoes it); a set a user made is removed."""
        with db.write_tx(self._engine) as conn:
            row = _set_row(conn, name)
            _lock_sets(conn, [row.id])
            row = _set_row(conn, name)
            _check_revision(row.revision, expected_revision, f"label set {row.name!r}", {"label_set": row.name})
            label_set = _to_label_set(row, _members(conn, row.id))
            after: dict[str, Any] | None = None
            if row.builtin:
                conn.execute(update(db.label_sets).where(db.label_sets.c.id == row.id)
                             .values(deleted_at=db.now(), revision=row.revision + 1))
                deleted = _set_row(conn, name, deleted_ok=True)
                after = _set_content(_to_label_set(deleted, list(label_set.labels)))
            else:
                members = db.label_set_members
                conn.execute(delete(members).where(members.c.set_id == row.id))
                conn.execute(delete(db.label_sets).where(db.label_sets.c.id == row.id))
            audit.record(conn, actor=actor, action="label_set.delete", target_kind="label_set", target=row.name,
                         before=_set_content(label_set), after=after, request_id=request_id)

    @_guarded
    def restore_label_set(self, name: str, *, actor: str, request_id: str | None = None) -> LabelSet:
        """Undo the soft delete of a built-in set, with the members it has (labels deleted since
        left it then). A set not deleted is returned as it is (nothing recorded)."""
        with db.write_tx(self._engine) as conn:
            row = _set_row(conn, name, deleted_ok=True)
            _lock_sets(conn, [row.id])
            row = _set_row(conn, name, deleted_ok=True)
            if row.deleted_at is None:
                return _to_label_set(row, _members(conn, row.id))
            before = _set_content(_to_label_set(row, _members(conn, row.id)))
            conn.execute(update(db.label_sets).where(db.label_sets.c.id == row.id)
                         .values(deleted_at=None, revision=row.revision + 1, updated_at=db.now()))
            label_set = _refresh_set(conn, row.id, bump_revision=False)
            audit.record(conn, actor=actor, action="label_set.restore", target_kind="label_set",
                         target=label_set.name, before=before, after=_set_content(label_set), request_id=request_id)
            return label_set

    @_guarded
    def get_label_set_version(self, name: str, version: str) -> LabelSet:
        """The set exactly as it was at ``version`` (from its snapshot)."""
        with db.read_tx(self._engine) as conn:
            content = conn.execute(
                select(db.label_set_versions.c.content).where(
                    db.label_set_versions.c.set_name_key == name_key(name),
                    db.label_set_versions.c.version == version,
                )
            ).scalar_one_or_none()
        if content is None:
            raise NotFound(
                f"label set {name!r} has no version {version!r}",
                details={"label_set": name, "version": version},
            )
        return _from_snapshot(content)

    @_guarded
    def list_label_set_versions(self, name: str) -> list[tuple[str, datetime]]:
        """Every version the set (by this name) has had, oldest first."""
        table = db.label_set_versions
        with db.read_tx(self._engine) as conn:
            rows = conn.execute(
                select(table.c.version, table.c.created_at)
                .where(table.c.set_name_key == name_key(name))
                .order_by(table.c.id)
            ).all()
        if not rows:
            raise NotFound(f"no label set named {name!r}", details={"label_set": name})
        return [(row.version, db.as_utc(row.created_at)) for row in rows]

    # --- built-in ledger (used by app.knowledge.builtin) -------------------------------

    @_guarded
    def seeded_builtins(self) -> set[tuple[str, str]]:
        """(kind, name key) of every built-in label/set offered before."""
        with db.read_tx(self._engine) as conn:
            rows = conn.execute(select(db.builtin_seeds.c.kind, db.builtin_seeds.c.name_key)).all()
        return {(row.kind, row.name_key) for row in rows}

    @_guarded
    def mark_seeded(self, kind: str, names: Sequence[str]) -> None:
        if not names:
            return
        stamp = db.now()
        rows = [{"kind": kind, "name_key": name_key(n), "seeded_at": stamp} for n in names]
        with db.write_tx(self._engine) as conn:
            conn.execute(db.insert_ignore(conn, db.builtin_seeds), rows)

    # --- helpers -----------------------------------------------------------------------

    @contextmanager
    def _writing(self, conflict_message: str) -> Iterator[Connection]:
        """A write transaction whose unique-index violations surface as ``Conflict``."""
        try:
            with db.write_tx(self._engine) as conn:
                yield conn
        except IntegrityError as exc:
            raise Conflict(conflict_message) from exc


# --- rows -> values ---------------------------------------------------------------------


def _to_label(row: Row[Any]) -> Label:
    return Label(
        id=row.id,
        name=row.name,
        description=row.description,
        synonyms=tuple(row.synonyms),
        codes=dict(row.codes),
        encode_text=row.encode_text,
        builtin=bool(row.builtin),
        updated_at=db.as_utc(row.updated_at),
        revision=int(row.revision),
        deleted_at=db.as_utc(row.deleted_at) if row.deleted_at is not None else None,
    )


def _to_label_set(row: Row[Any], members: list[Label]) -> LabelSet:
    return LabelSet(
        name=row.name,
        description=row.description,
        version=label_set_version(members),
        labels=tuple(members),
        builtin=bool(row.builtin),
        updated_at=db.as_utc(row.updated_at),
        revision=int(row.revision),
        deleted_at=db.as_utc(row.deleted_at) if row.deleted_at is not None else None,
    )


def _stamp(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _label_content(conn: Connection, label: Label) -> dict[str, Any]:
    """A label as the audit trail keeps it (everything, with the sets it is in)."""
    return {"id": label.id, "name": label.name, "description": label.description,
            "synonyms": list(label.synonyms), "codes": dict(label.codes), "encode_text": label.encode_text,
            "builtin": label.builtin, "revision": label.revision, "deleted_at": _stamp(label.deleted_at),
            "label_sets": [r.name for r in _set_rows_containing(conn, label.id) if r.deleted_at is None]}


def _set_content(label_set: LabelSet) -> dict[str, Any]:
    """A label set as the audit trail keeps it (its members by name, in order)."""
    return {"name": label_set.name, "description": label_set.description, "version": label_set.version,
            "revision": label_set.revision, "builtin": label_set.builtin,
            "deleted_at": _stamp(label_set.deleted_at), "labels": list(label_set.label_names)}


def etag(revision: int) -> str:
    """The (strong) entity tag of a revision: ``"3"``."""
    return f'"{revision}"'


def _check_revision(current: int, expected: int | None, what: str, details: dict[str, Any]) -> None:
    """VersionConflict unless ``expected`` (None: any) is the current revision."""
    if expected is not None and expected != current:
        raise VersionConflict(
            f"{what} is at revision {current}, not {expected}: it changed after it was read. Nothing was "
            f"changed; read it again, apply the change to what it is now and send If-Match: {etag(current)}",
            details={**details, "current_revision": current, "etag": etag(current), "expected_revision": expected},
        )


def _label_values(draft: LabelDraft) -> dict[str, Any]:
    return {
        "name": draft.name,
        "name_key": name_key(draft.name),
        "description": draft.description,
        "synonyms": list(draft.synonyms),
        "codes": dict(draft.codes),
        "encode_text": draft.encode_text,
        "updated_at": db.now(),
    }


def _snapshot(label_set: LabelSet) -> dict[str, Any]:
    return {
        "name": label_set.name,
        "description": label_set.description,
        "version": label_set.version,
        "builtin": label_set.builtin,
        "updated_at": label_set.updated_at.isoformat() if label_set.updated_at else None,
        "revision": label_set.revision,
        "labels": [
            {
                "id": label.id,
                "name": label.name,
                "description": label.description,
                "synonyms": list(label.synonyms),
                "codes": label.codes,
                "encode_text": label.encode_text,
                "builtin": label.builtin,
                "updated_at": label.updated_at.isoformat(),
                "revision": label.revision,
            }
            for label in label_set.labels
        ],
    }


def _from_snapshot(content: dict[str, Any]) -> LabelSet:
    labels = tuple(
        Label(
            id=item["id"],
            name=item["name"],
            description=item["description"],
            synonyms=tuple(item["synonyms"]),
            codes=dict(item["codes"]),
            encode_text=item["encode_text"],
            builtin=item["builtin"],
            updated_at=datetime.fromisoformat(item["updated_at"]),
            revision=int(item.get("revision", 1)),  # snapshots written before revisions: 1
        )
        for item in content["labels"]
    )
    stamp = content.get("updated_at")
    return LabelSet(
        name=content["name"],
        description=content["description"],
        version=content["version"],
        labels=labels,
        builtin=content["builtin"],
        updated_at=datetime.fromisoformat(stamp) if stamp else None,
        revision=int(content.get("revision", 1)),
    )


def _label_exists(row: Row[Any]) -> Conflict:
    if row.deleted_at is not None:
        return Conflict(
            f"a deleted built-in label named {row.name!r} (id {row.id}) keeps the name: restore it instead",
            details={"label": row.name, "label_id": row.id, "deleted": True},
        )
    return Conflict(
        f"a label named {row.name!r} already exists (names are case-insensitive)",
        details={"label": row.name, "label_id": row.id},
    )


def _set_exists(row: Row[Any]) -> Conflict:
    if row.deleted_at is not None:
        return Conflict(
            f"a deleted built-in label set named {row.name!r} keeps the name: restore it instead",
            details={"label_set": row.name, "deleted": True},
        )
    return Conflict(
        f"a label set named {row.name!r} already exists (names are case-insensitive)",
        details={"label_set": row.name},
    )


def _deleted_label(row: Row[Any]) -> NotFound:
    return NotFound(f"label {row.id} ({row.name!r}) is a deleted built-in label; it can be restored",
                    details={"label_id": row.id, "label": row.name, "deleted": True})


# --- queries inside a transaction -------------------------------------------------------


def _label_row(conn: Connection, label_id: int, *, lock: bool = False, deleted_ok: bool = False) -> Row[Any]:
    """The label's row (``lock``: row-locked until the transaction ends); NotFound if there is
    none, or if it is soft-deleted and ``deleted_ok`` is not given."""
    query = select(db.labels).where(db.labels.c.id == label_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise NotFound(f"no label with id {label_id}", details={"label_id": label_id})
    if row.deleted_at is not None and not deleted_ok:
        raise _deleted_label(row)
    return row


def _label_row_by_name(conn: Connection, name: str) -> Row[Any] | None:
    return conn.execute(select(db.labels).where(db.labels.c.name_key == name_key(name))).first()


def _label_ids(conn: Connection, names: Sequence[str]) -> list[int]:
    keys = [name_key(n) for n in names]
    rows = conn.execute(
        select(db.labels.c.id, db.labels.c.name_key, db.labels.c.deleted_at).where(db.labels.c.name_key.in_(keys))
    ).all()
    by_key = {row.name_key: row.id for row in rows if row.deleted_at is None}
    deleted = {row.name_key for row in rows if row.deleted_at is not None}
    missing = [n for n, k in zip(names, keys, strict=True) if k not in by_key]
    if missing:
        gone = [n for n in missing if name_key(n) in deleted]
        note = f" ({gone} deleted: restore them first)" if gone else ""
        raise NotFound(f"no labels named {missing}{note}", details={"labels": missing, "deleted": gone})
    return [by_key[k] for k in keys]


def _set_row_by_name(conn: Connection, name: str) -> Row[Any] | None:
    table = db.label_sets
    return conn.execute(select(table).where(table.c.name_key == name_key(name))).first()


def _set_row(conn: Connection, name: str, *, deleted_ok: bool = False) -> Row[Any]:
    row = _set_row_by_name(conn, name)
    if row is None:
        raise NotFound(f"no label set named {name!r}", details={"label_set": name})
    if row.deleted_at is not None and not deleted_ok:
        raise NotFound(f"label set {row.name!r} is a deleted built-in set; it can be restored",
                       details={"label_set": row.name, "deleted": True})
    return row


def _set_rows_containing(conn: Connection, label_id: int) -> list[Row[Any]]:
    members = db.label_set_members
    return list(
        conn.execute(
            select(db.label_sets)
            .join(members, members.c.set_id == db.label_sets.c.id)
            .where(members.c.label_id == label_id)
            .order_by(db.label_sets.c.name_key)
        ).all()
    )


def _lock_sets(conn: Connection, set_ids: Sequence[int]) -> list[int]:
    """Row-lock the sets (in id order, so two writers cannot deadlock); returns the ids."""
    ordered = sorted(set(set_ids))
    if ordered:
        conn.execute(
            select(db.label_sets.c.id)
            .where(db.label_sets.c.id.in_(ordered))
            .order_by(db.label_sets.c.id)
            .with_for_update()
        ).all()
    return ordered


def _member_ids(conn: Connection, set_id: int) -> list[int]:
    members = db.label_set_members
    return list(
        conn.execute(
            select(members.c.label_id)
            .where(members.c.set_id == set_id)
            .order_by(members.c.position)
        ).scalars()
    )


def _inserted_id(result: CursorResult[Any]) -> int:
    """The primary key of the row a single-row INSERT just wrote."""
    key = result.inserted_primary_key
    if key is None:  # SQLAlchemy gives None only for executemany or a statement that is no INSERT
        raise RuntimeError("the INSERT reported no primary key")
    return int(key[0])


def _members_query() -> Select[*tuple[Any, ...]]:
    members = db.label_set_members
    return (
        select(members.c.set_id, db.labels)
        .join(db.labels, db.labels.c.id == members.c.label_id)
        .order_by(members.c.set_id, members.c.position)
    )


def _members(conn: Connection, set_id: int) -> list[Label]:
    query = _members_query().where(db.label_set_members.c.set_id == set_id)
    return [_to_label(row) for row in conn.execute(query).all()]


def _members_by_set(conn: Connection) -> dict[int, list[Label]]:
    grouped: dict[int, list[Label]] = {}
    for row in conn.execute(_members_query()).all():
        grouped.setdefault(row.set_id, []).append(_to_label(row))
    return grouped


# --- writes inside a transaction --------------------------------------------------------


def _write_members(conn: Connection, set_id: int, label_ids: Sequence[int]) -> None:
    members = db.label_set_members
    conn.execute(delete(members).where(members.c.set_id == set_id))
    if label_ids:
        rows = [
            {"set_id": set_id, "position": i, "label_id": label_id}
            for i, label_id in enumerate(label_ids)
        ]
        conn.execute(insert(members), rows)


def _add_to_sets(conn: Connection, label_id: int, set_names: Sequence[str]) -> None:
    """Append the label to each named (not deleted) set it is not yet in."""
    rows = [_set_row(conn, name) for name in set_names]
    for set_id in _lock_sets(conn, [row.id for row in rows]):
        current = _member_ids(conn, set_id)
        if label_id not in current:
            _write_members(conn, set_id, [*current, label_id])
            _refresh_set(conn, set_id)


def _refresh_set(conn: Connection, set_id: int, *, bump_revision: bool = True) -> LabelSet:
    """Recompute the set's version from its members; store it and its snapshot. A new version
    is a new revision too, unless the caller counted this change already (``bump_revision``)."""
    table = db.label_sets
    members = _members(conn, set_id)
    version = label_set_version(members)
    changes: dict[str, Any] = {"version": version, "updated_at": db.now()}
    if bump_revision:
        changes["revision"] = table.c.revision + 1
    conn.execute(update(table).where(table.c.id == set_id, table.c.version != version).values(**changes))
    row = conn.execute(select(table).where(table.c.id == set_id)).one()
    label_set = _to_label_set(row, members)
    conn.execute(
        db.insert_ignore(conn, db.label_set_versions),
        {
            "set_name_key": row.name_key,
            "version": version,
            "content": _snapshot(label_set),
            "created_at": db.now(),
        },
    )
    return label_set


__all__ = ["KnowledgeStore", "etag", "label_set_version"]


class LabelSetReader:
    """Reads label sets through a small in-process cache keyed by (name, version).

    Every call still asks the database for the set's current version (one indexed row), so
    the visibility bound of :class:`KnowledgeStore` holds unchanged; only the members of a
    version already seen are not read again. Versions are content hashes: never stale.

    While the database is unreachable, a set this reader has served before is served again
    from memory (the last version it saw), marked ``served_from_memory``: the version check
    then waits at most ``fallback_deadline_s``, and not at all for ``probe_interval_s`` after
    the last failure (the guard's). A set never read answers ``DatabaseUnavailable``.
    """

    def __init__(self, store: KnowledgeStore, *, max_entries: int = 64, fallback_deadline_s: float = 1.0) -> None:
        self._store = store
        self._max_entries = max_entries
        self._fallback_deadline_s = fallback_deadline_s
        self._sets: dict[tuple[str, str], LabelSet] = {}
        self._latest: dict[str, LabelSet] = {}  # name key -> the version last served
        self._lock = threading.Lock()

    def get(self, name: str) -> LabelSet:
        key = name_key(name)
        with self._lock:
            remembered = self._latest.get(key)
        guard = self._store.guard
        if remembered is not None and guard.recently_down():
            return replace(remembered, served_from_memory=True)
        try:
            version = guard.call(lambda: self._store.current_version(name),
                                 deadline_s=self._fallback_deadline_s
                                 if remembered is not None and guard.deadline_s is not None else None)
        except DatabaseUnavailable:
            if remembered is None:
                raise
            return replace(remembered, served_from_memory=True)
        with self._lock:
            cached = self._sets.get((key, version))
        if cached is None:
            cached = self._store.get_label_set(name)
            with self._lock:
                if len(self._sets) >= self._max_entries:
                    self._sets.pop(next(iter(self._sets)))
                self._sets[(key, cached.version)] = cached
        with self._lock:
            self._latest[key] = cached
            if len(self._latest) > self._max_entries:
                self._latest.pop(next(iter(self._latest)))
        return cached
