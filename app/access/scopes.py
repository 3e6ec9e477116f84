"""Scopes and actors.

Three scopes, each including the one before it: ``diagnose`` may score ECGs and read
(labels, label sets, the model, the formats); ``labels`` may also change labels and label sets;
``admin`` may also manage keys and read the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.knowledge.audit import SEEDING_ACTOR


class Scope(StrEnum):
    diagnose = "diagnose"
    labels = "labels"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Scope) -> bool:
        """Whether a key of this scope may do what ``needed`` guards."""
        return self.rank >= needed.rank


_RANK = {Scope.diagnose: 0, Scope.labels: 1, Scope.admin: 2}


@dataclass(frozen=True)
class Actor:
    """Who makes a call: a key's name and scope. ``name`` is what the audit trail records."""

    name: str
    scope: Scope
    authenticated: bool = True


# Every call while authentication is turned off (ECGFM_AUTH=disabled): recorded under this name.
ANONYMOUS = Actor(name="anonymous (auth disabled)", scope=Scope.admin, authenticated=False)
# Changes made from the command line on the database directly (``ecgfm-ked keys ...``).
COMMAND_LINE = Actor(name="command line", scope=Scope.admin)
# Built-in labels and sets seeded at start.
SEEDING = Actor(name=SEEDING_ACTOR, scope=Scope.admin)
