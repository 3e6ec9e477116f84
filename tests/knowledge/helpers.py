"""Test helpers for app/knowledge: a deterministic embedder and a draft builder."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from app.knowledge.types import LabelDraft


class HashEmbedder:
    """Deterministic test embedder: a text's vector is seeded by sha256(identity, text)."""

    def __init__(self, identity: str = "hash-encoder-v1", dim: int = 768) -> None:
        self.identity = identity
        self.dim = dim
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.stack([self.vector(t) for t in texts])

    def vector(self, text_: str) -> np.ndarray:
        seed = hashlib.sha256(f"{self.identity}\x00{text_}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(seed[:8], "little"))
        return rng.standard_normal(self.dim).astype(np.float32)

    @property
    def embedded_texts(self) -> list[str]:
        return [t for call in self.calls for t in call]


def draft(name: str, description: str | None = None, **kwargs: Any) -> LabelDraft:
    """A label draft with a plausible description."""
    text = description or f"Knowledge text about {name}."
    return LabelDraft(name=name, description=text, **kwargs)
