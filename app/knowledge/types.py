"""Value types of the knowledge layer: labels, label sets, drafts, the embedder contract.

Everything here is plain data: no database, no HTTP, no model. The store returns these
objects and accepts the drafts; the embedding cache accepts any ``TextEmbedder``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, get_args

import numpy as np

from app.errors import InvalidInput

EncodeText = Literal["name", "description"]
ENCODE_TEXT_CHOICES: tuple[str, ...] = get_args(EncodeText)

SNOMED_CT = "SNOMED CT"
SCP_ECG = "SCP-ECG"
# A code system may map to several codes (a merged class such as RBBB/CRBBB):
# they are stored in one string joined by this separator, e.g. "713427006|59118001".
CODE_SEPARATOR = "|"

MAX_NAME_CHARS = 200
MAX_DESCRIPTION_CHARS = 4000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Label:
    """One diagnosis as the service knows it.

    ``encode_text`` says which text the text encoder sees: ``"name"`` for diagnoses the
    model saw by name during pretraining, ``"description"`` for new ones, whose name alone
    means little to the encoder.
    """

    id: int
    name: str
    description: str
    synonyms: tuple[str, ...]
    codes: dict[str, str]
    encode_text: EncodeText
    builtin: bool
    updated_at: datetime
    # lifecycle: ``revision`` grows with every change (the label's ETag, for If-Match);
    # ``deleted_at`` is set on a soft-deleted built-in label (restorable)
    revision: int = 1
    deleted_at: datetime | None = None

    @property
    def text_for_encoder(self) -> str:
        return self.name if self.encode_text == "name" else self.description

    def code_list(self, system: str) -> tuple[str, ...]:
        """Every code of ``system`` (several for merged classes), in stored order."""
        raw = self.codes.get(system, "")
        return tuple(c.strip() for c in raw.split(CODE_SEPARATOR) if c.strip())


@dataclass(frozen=True)
class LabelSet:
    """An ordered panel of labels; ``version`` is a content hash of its members."""

    name: str
    description: str
    version: str
    labels: tuple[Label, ...]
    builtin: bool = False
    updated_at: datetime | None = None
    revision: int = 1  # grows with every change of the set or its content (its ETag)
    deleted_at: datetime | None = None  # a soft-deleted built-in set (restorable)
    # set by LabelSetReader when the database was unreachable and this copy came from memory
    served_from_memory: bool = field(default=False, compare=False)

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)


@dataclass(frozen=True)
class LabelDraft:
    """Input for creating or replacing a label.

    ``label_sets`` names existing sets the label is appended to (if not already a member).
    """

    name: str
    description: str
    synonyms: tuple[str, ...] = ()
    codes: dict[str, str] = field(default_factory=dict)
    encode_text: EncodeText = "description"
    label_sets: tuple[str, ...] = ()

    def validated(self) -> LabelDraft:
        """A cleaned copy (whitespace trimmed), or ``InvalidInput`` naming the problem."""
        name = clean_name(self.name, what="label name")
        description = self.description.strip()
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise InvalidInput(
                f"label description is {len(description)} characters; the limit is "
                f"{MAX_DESCRIPTION_CHARS}",
                details={"label": name},
            )
        if self.encode_text not in ENCODE_TEXT_CHOICES:
            raise InvalidInput(
                f"encode_text must be one of {list(ENCODE_TEXT_CHOICES)}, "
                f"not {self.encode_text!r}",
                details={"label": name},
            )
        if self.encode_text == "description" and not description:
            raise InvalidInput(
                f"label {name!r} is encoded by its description, which is empty",
                details={"label": name},
            )
        synonyms = tuple(s.strip() for s in self.synonyms if s.strip())
        codes = {clean_name(k, what="code system"): v.strip() for k, v in self.codes.items()}
        sets = tuple(clean_name(s, what="label set name") for s in self.label_sets)
        return LabelDraft(name, description, synonyms, codes, self.encode_text, sets)


@dataclass(frozen=True)
class LabelSetDraft:
    """Input for creating or replacing a label set; labels are referred to by name, in order."""

    name: str
    description: str = ""
    label_names: tuple[str, ...] = ()

    def validated(self) -> LabelSetDraft:
        name = clean_name(self.name, what="label set name")
        members = tuple(clean_name(n, what="label name") for n in self.label_names)
        if not members:
            raise InvalidInput(f"label set {name!r} needs at least one label")
        duplicates = _duplicates(members)
        if duplicates:
            raise InvalidInput(
                f"label set {name!r} lists these labels more than once: {duplicates}",
                details={"duplicates": duplicates},
            )
        return LabelSetDraft(name, self.description.strip(), members)


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int


class TextEmbedder(Protocol):
    """What the knowledge layer needs from a text encoder.

    ``identity`` must change whenever the vectors could change (weights, tokenizer,
    pooling); vectors cached under one identity are never used for another.
    """

    identity: str

    def embed(self, texts: list[str]) -> np.ndarray:  # (N, D) float32, D = 768 for ECGFM-KED
        ...


def _duplicates(names: tuple[str, ...]) -> list[str]:
    seen: set[str] = set()
    duplicates: list[str] = []
    for name in names:
        key = name_key(name)
        if key in seen:
            duplicates.append(name)
        seen.add(key)
    return duplicates


def name_key(name: str) -> str:
    """Case- and spacing-insensitive key that makes names unique."""
    return " ".join(name.split()).casefold()


def clean_name(value: str, *, what: str) -> str:
    cleaned = " ".join(str(value).split())
    if not cleaned:
        raise InvalidInput(f"{what} is empty")
    if len(cleaned) > MAX_NAME_CHARS:
        raise InvalidInput(f"{what} {cleaned[:40]!r}... is longer than {MAX_NAME_CHARS} characters")
    if _CONTROL.search(cleaned):
        raise InvalidInput(f"{what} {cleaned!r} contains control characters")
    return cleaned
