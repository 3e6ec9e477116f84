"""app.knowledge: labels, versioned label sets, the text-embedding cache, storage.

Knows nothing of HTTP, ECG formats or ONNX; it receives a ``TextEmbedder``.

- ``types``           value objects (Label, LabelSet, drafts, TextEmbedder, CacheStats)
- ``db``              tables, ``make_engine(url)``, ``create_schema(engine)``
- ``store``           ``KnowledgeStore``: CRUD of labels and sets, versions and snapshots
- ``embedding_cache`` ``EmbeddingCache`` (database) and ``LabelSetVectors`` (in-process LRU)
- ``builtin``         built-in label sets (``builtin/*.json``) and ``seed_builtin(store)``
"""
