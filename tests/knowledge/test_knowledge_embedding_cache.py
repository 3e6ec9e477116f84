"""The text-embedding cache: hits and misses, encoder identity, concurrency, set LRU."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from sqlalchemy import Engine, func, select

from app.knowledge import db
from app.knowledge.embedding_cache import EmbeddingCache, LabelSetVectors, text_sha256
from app.knowledge.store import KnowledgeStore
from app.knowledge.types import CacheStats, LabelSetDraft

from .helpers import HashEmbedder, draft


def _rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(db.text_embeddings)).scalar_one()


def test_misses_are_embedded_once_in_one_call_then_hit(
    engine: Engine, embedder: HashEmbedder
) -> None:
    cache = EmbeddingCache(engine)
    vectors, stats = cache.vectors_for(["b", "a", "b"], embedder)
    assert stats == CacheStats(hits=0, misses=3)
    assert embedder.calls == [["b", "a"]]
    assert vectors.dtype == np.float32 and vectors.shape == (3, 768)
    np.testing.assert_array_equal(vectors[0], embedder.vector("b"))
    np.testing.assert_array_equal(vectors[2], embedder.vector("b"))
    np.testing.assert_array_equal(vectors[1], embedder.vector("a"))

    again, stats = cache.vectors_for(["a", "c", "b"], embedder)
    assert stats == CacheStats(hits=2, misses=1)
    assert embedder.calls[1] == ["c"]
    np.testing.assert_array_equal(again, np.stack([embedder.vector(t) for t in "acb"]))
    assert _rows(engine) == 3


def test_vectors_are_bit_exact_after_restart(
    engine_factory: Callable[[], Engine], embedder: HashEmbedder
) -> None:
    texts = ["QRS duration >= 120 ms, rsR' in V1-V2", "ST élévation"]
    first, _ = EmbeddingCache(engine_factory()).vectors_for(texts, embedder)
    second, stats = EmbeddingCache(engine_factory()).vectors_for(texts, embedder)
    assert stats.hits == 2 and len(embedder.calls) == 1
    assert first.tobytes() == second.tobytes()


def test_stored_row_keeps_text_dim_and_key(engine: Engine, embedder: HashEmbedder) -> None:
    EmbeddingCache(engine).vectors_for(["sinus rhythm"], embedder)
    with engine.connect() as conn:
        row = conn.execute(select(db.text_embeddings)).one()
    assert (row.encoder_id, row.text, row.dim) == (embedder.identity, "sinus rhythm", 768)
    assert row.text_sha256 == text_sha256("sinus rhythm")
    assert len(row.vector) == 768 * 4


def test_a_new_encoder_identity_never_reuses_vectors(engine: Engine) -> None:
    cache = EmbeddingCache(engine)
    old, new = HashEmbedder("encoder-a"), HashEmbedder("encoder-b", dim=16)
    old_vectors, _ = cache.vectors_for(["sinus rhythm"], old)
    new_vectors, stats = cache.vectors_for(["sinus rhythm"], new)
    assert stats == CacheStats(hits=0, misses=1)
    assert new.calls == [["sinus rhythm"]]
    assert new_vectors.shape == (1, 16) and old_vectors.shape == (1, 768)
    np.testing.assert_array_equal(new_vectors[0], new.vector("sinus rhythm"))
    assert _rows(engine) == 2


def test_same_key_inserted_by_another_process_meanwhile(
    engine_factory: Callable[[], Engine],
) -> None:
    """Process one misses, process two stores the same key, then process one stores it too."""
    cache_one, cache_two = EmbeddingCache(engine_factory()), EmbeddingCache(engine_factory())
    plain = HashEmbedder("shared-encoder")

    class RacingEmbedder(HashEmbedder):
        def embed(self, texts: list[str]) -> np.ndarray:
            cache_two.vectors_for(texts, plain)  # the other process wins the race
            return super().embed(texts)

    racing = RacingEmbedder("shared-encoder")
    vectors, stats = cache_one.vectors_for(["atrial fibrillation", "new text"], racing)
    assert stats == CacheStats(hits=0, misses=2)
    assert plain.calls == [["atrial fibrillation", "new text"]]
    np.testing.assert_array_equal(vectors[0], plain.vector("atrial fibrillation"))
    again, stats = cache_one.vectors_for(["atrial fibrillation", "new text"], plain)
    assert stats == CacheStats(hits=2, misses=0)
    np.testing.assert_array_equal(again, vectors)


def test_empty_input(engine: Engine, embedder: HashEmbedder) -> None:
    vectors, stats = EmbeddingCache(engine).vectors_for([], embedder)
    assert vectors.shape == (0, 768) and stats == CacheStats(0, 0)
    assert embedder.calls == []


def test_embedder_returning_wrong_shape_is_reported(engine: Engine) -> None:
    class Broken(HashEmbedder):
        def embed(self, texts: list[str]) -> np.ndarray:
            return np.zeros((len(texts) + 1, 768), dtype=np.float32)

    with pytest.raises(ValueError, match=r"returned shape \(3, 768\) for 2 texts"):
        EmbeddingCache(engine).vectors_for(["a", "b"], Broken())
    assert _rows(engine) == 0


def test_label_set_vectors_use_text_for_encoder_and_lru(
    store: KnowledgeStore, engine: Engine, embedder: HashEmbedder
) -> None:
    store.create_label(draft("sinus rhythm", encode_text="name"), actor="test")
    store.create_label(draft("novel finding", "Description the encoder reads."), actor="test")
    store.create_label_set(LabelSetDraft("panel", "", ("novel finding", "sinus rhythm")), actor="test")
    sets = LabelSetVectors(EmbeddingCache(engine), max_entries=2)

    vectors, stats = sets.vectors_for_label_set(store.get_label_set("panel"), embedder)
    assert embedder.calls == [["Description the encoder reads.", "sinus rhythm"]]
    assert stats == CacheStats(hits=0, misses=2)
    assert not vectors.flags.writeable

    same, stats = sets.vectors_for_label_set(store.get_label_set("panel"), embedder)
    assert same is vectors and stats == CacheStats(hits=2, misses=0)
    assert len(embedder.calls) == 1

    novel = store.get_label_by_name("novel finding")
    store.update_label(novel.id, draft("novel finding", "Edited description."), actor="test")
    edited, stats = sets.vectors_for_label_set(store.get_label_set("panel"), embedder)
    assert embedder.calls[-1] == ["Edited description."]
    assert stats == CacheStats(hits=1, misses=1)
    np.testing.assert_array_equal(edited[0], embedder.vector("Edited description."))

    other, _ = sets.vectors_for_label_set(store.get_label_set("panel"), HashEmbedder("other"))
    assert not np.array_equal(other, edited)


def test_cached_answers_only_from_memory(store: KnowledgeStore, engine: Engine, embedder: HashEmbedder) -> None:
    store.create_label(draft("sinus rhythm", encode_text="name"), actor="test")
    store.create_label_set(LabelSetDraft("panel", "", ("sinus rhythm",)), actor="test")
    panel = store.get_label_set("panel")
    cache = EmbeddingCache(engine)
    cache.vectors_for(["sinus rhythm"], embedder)  # in the database, not yet in this LRU
    sets = LabelSetVectors(cache)
    assert sets.cached(panel, embedder.identity) is None
    vectors, _ = sets.vectors_for_label_set(panel, embedder)
    assert sets.cached(panel, embedder.identity) is vectors
    assert sets.cached(panel, "another-encoder") is None
    assert len(embedder.calls) == 1  # cached() never embeds
