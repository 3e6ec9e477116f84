"""Text-embedding cache: label texts are encoded once per text encoder, then read back.

Key: (embedder identity, SHA-256 of the exact text). A new encoder identity never sees
another's vectors. Rows are shared by every process on the same database; when two
processes miss the same text at once, both embed it and the second insert is ignored
(``ON CONFLICT DO NOTHING``), so neither fails. Its reads and writes run under the store's
``DatabaseGuard`` (bounded; the embedding itself is not).

``LabelSetVectors`` adds a small in-process LRU keyed by (identity, label-set version).
It can never serve stale vectors because a version is a hash of the set's content.
"""

from __future__ import annotations

import hashlib

import numpy as np
from sqlalchemy import Engine, select

from app.knowledge import db
from app.knowledge.guard import DatabaseGuard
from app.knowledge.types import CacheStats, LabelSet, TextEmbedder
from app.lru import LruCache

DEFAULT_DIM = 768


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Database-backed cache of text vectors (float32)."""

    def __init__(self, engine: Engine, *, guard: DatabaseGuard | None = None) -> None:
        self._engine = engine
        self._guard = guard or DatabaseGuard()

    def vectors_for(
        self, texts: list[str], embedder: TextEmbedder
    ) -> tuple[np.ndarray, CacheStats]:
        """Vectors for ``texts`` in input order; only the misses are embedded, in one call."""
        if not texts:
            return np.zeros((0, DEFAULT_DIM), dtype=np.float32), CacheStats(0, 0)
        keys = [text_sha256(t) for t in texts]
        found = self._guard.call(lambda: self._lookup(embedder.identity, set(keys)))
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            text_of = dict(zip(keys, texts, strict=True))
            fresh = _embed(embedder, [text_of[k] for k in missing])
            texts_missing = [text_of[k] for k in missing]
            self._guard.call(lambda: self._store(embedder.identity, missing, texts_missing, fresh))
            found.update(zip(missing, fresh, strict=True))
        vectors = np.stack([found[k] for k in keys]).astype(np.float32, copy=False)
        hits = sum(1 for k in keys if k not in missing)
        return vectors, CacheStats(hits=hits, misses=len(keys) - hits)

    def _lookup(self, identity: str, keys: set[str]) -> dict[str, np.ndarray]:
        table = db.text_embeddings
        with db.read_tx(self._engine) as conn:
            rows = conn.execute(
                select(table.c.text_sha256, table.c.dim, table.c.vector).where(
                    table.c.encoder_id == identity, table.c.text_sha256.in_(sorted(keys))
                )
            ).all()
        return {row.text_sha256: _decode(row.vector, row.dim) for row in rows}

    def _store(
        self, identity: str, keys: list[str], texts: list[str], vectors: np.ndarray
    ) -> None:
        stamp = db.now()
        rows = [
            {
                "encoder_id": identity,
                "text_sha256": key,
                "text": text,
                "dim": int(vector.shape[0]),
                "vector": vector.astype("<f4").tobytes(),
                "created_at": stamp,
            }
            for key, text, vector in zip(keys, texts, vectors, strict=True)
        ]
        with db.write_tx(self._engine) as conn:
            conn.execute(db.insert_ignore(conn, db.text_embeddings), rows)


class LabelSetVectors:
    """Label-set vectors with an in-process LRU on (embedder identity, set version)."""

    def __init__(self, cache: EmbeddingCache, *, max_entries: int = 32) -> None:
        self._cache = cache
        self._lru: LruCache[tuple[str, str], np.ndarray] = LruCache(max_entries)  # thread-safe

    def cached(self, label_set: LabelSet, identity: str) -> np.ndarray | None:
        """The set's vectors if this process holds them already (no database read), else None."""
        return self._lru.get((identity, label_set.version))

    def vectors_for_label_set(
        self, label_set: LabelSet, embedder: TextEmbedder
    ) -> tuple[np.ndarray, CacheStats]:
        """(C, D) read-only float32 vectors, one row per label in the set's order."""
        cached = self.cached(label_set, embedder.identity)
        if cached is not None:
            return cached, CacheStats(hits=cached.shape[0], misses=0)
        texts = [label.text_for_encoder for label in label_set.labels]
        vectors, stats = self._cache.vectors_for(texts, embedder)
        vectors.setflags(write=False)
        self._lru.put((embedder.identity, label_set.version), vectors)
        return vectors, stats


def _embed(embedder: TextEmbedder, texts: list[str]) -> np.ndarray:
    vectors = np.asarray(embedder.embed(texts))
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise ValueError(
            f"text embedder {embedder.identity!r} returned shape {vectors.shape} "
            f"for {len(texts)} texts; expected ({len(texts)}, D)"
        )
    if not np.all(np.isfinite(vectors)):
        raise ValueError(f"text embedder {embedder.identity!r} returned non-finite values")
    return vectors.astype(np.float32, copy=False)


def _decode(blob: bytes, dim: int) -> np.ndarray:
    vector = np.frombuffer(blob, dtype="<f4")
    if vector.shape != (dim,):
        raise ValueError(f"cached vector has {vector.shape[0]} values, its row says {dim}")
    return vector.astype(np.float32)
